#!/usr/bin/env node
// Checks the documentation's links: every relative link in README.md and
// docs/**/*.md must name a file or directory that exists, and every #anchor
// must name a heading of the page it points into (GitHub's slugs). Also
// refuses two headings with the same text in one page, whose anchors would
// be told apart only by a -1 suffix.
//
//   node scripts/check-docs.mjs [REPO_DIR]
//
// Prints one line per problem and exits 1 if there is any, else prints a
// summary and exits 0.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));

function markdownFiles() {
  const out = [path.join(root, 'README.md')];
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.md')) out.push(p);
    }
  };
  if (existsSync(path.join(root, 'docs'))) walk(path.join(root, 'docs'));
  return out;
}

/** The lines of a page outside fenced code blocks, with their numbers. */
function proseLines(text) {
  const lines = [];
  let fence = null;
  text.split('\n').forEach((line, i) => {
    const m = /^\s{0,3}(`{3,}|~{3,})/.exec(line);
    if (m) {
      if (fence === null) fence = m[1][0].repeat(m[1].length);
      else if (m[1].startsWith(fence)) fence = null;
      return;
    }
    if (fence === null) lines.push({ n: i + 1, line });
  });
  return lines;
}

/** Heading text as GitHub renders it: inline markup reduced to its text. */
function headingText(raw) {
  return raw
    .replace(/\s+#+\s*$/, '')
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/`([^`]*)`/g, '$1')
    .replace(/(\*\*|__)(.*?)\1/g, '$2')
    .replace(/<[^>]+>/g, '')
    .trim();
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(text) {
  return text
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '')
    .replace(/ /g, '-');
}

function headings(file) {
  const anchors = new Set();
  const seen = new Map();
  const duplicates = [];
  for (const { n, line } of proseLines(readFileSync(file, 'utf8'))) {
    // Explicit anchors (<a id="x"></a>) count too.
    for (const a of line.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) anchors.add(a[1]);
    const m = /^#{1,6}\s+(.*)$/.exec(line);
    if (!m) continue;
    const text = headingText(m[1]);
    const base = slug(text);
    const count = seen.get(base) ?? 0;
    if (count > 0) duplicates.push({ n, text });
    seen.set(base, count + 1);
    anchors.add(count ? `${base}-${count}` : base);
  }
  return { anchors, duplicates };
}

/** Link targets outside code: inline [text](target) and reference definitions [x]: target. */
function links(file) {
  const out = [];
  for (const { n, line } of proseLines(readFileSync(file, 'utf8'))) {
    const prose = line.replace(/`[^`]*`/g, '');
    for (const m of prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ n, target: m[1] });
    const def = /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(\s+.*)?$/.exec(prose);
    if (def) out.push({ n, target: def[1] });
  }
  return out;
}

const problems = [];
const cache = new Map();
const anchorsOf = (file) => {
  if (!cache.has(file)) cache.set(file, headings(file));
  return cache.get(file);
};
const files = markdownFiles();
let checked = 0;
for (const file of files) {
  const rel = path.relative(root, file);
  for (const d of anchorsOf(file).duplicates) problems.push(`${rel}:${d.n}: duplicate heading "${d.text}"`);
  for (const { n, target } of links(file)) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, ...
    checked++;
    const hash = target.indexOf('#');
    const filePart = decodeURIComponent(hash >= 0 ? target.slice(0, hash) : target);
    const anchor = hash >= 0 ? decodeURIComponent(target.slice(hash + 1)) : '';
    const dest = filePart === '' ? file : path.resolve(path.dirname(file), filePart);
    if (filePart.startsWith('/')) {
      problems.push(`${rel}:${n}: absolute link ${target}: use a path relative to the page`);
      continue;
    }
    if (!existsSync(dest)) {
      problems.push(`${rel}:${n}: ${target}: ${path.relative(root, dest)} does not exist`);
      continue;
    }
    if (!anchor) continue;
    if (!dest.endsWith('.md') || statSync(dest).isDirectory()) {
      problems.push(`${rel}:${n}: ${target}: an anchor into a file that is not markdown`);
      continue;
    }
    if (!anchorsOf(dest).anchors.has(anchor)) {
      problems.push(`${rel}:${n}: ${target}: no heading with anchor #${anchor} in ${path.relative(root, dest)}`);
    }
  }
}

if (problems.length) {
  for (const p of problems) console.log(p);
  console.log(`check-docs: ${problems.length} problem(s) in ${files.length} pages`);
  process.exit(1);
}
console.log(`check-docs: ${checked} relative links in ${files.length} pages resolve`);
