// The documentation's links: scripts/check-docs.mjs on the repository's own
// README.md and docs/, and on a small tree with each kind of breakage it must
// find. Needs no root and no daemon.
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { repoPath } from '../src/paths';

const execFileP = promisify(execFile);

async function checkDocs(dir?: string): Promise<{ code: number; stdout: string }> {
  try {
    const r = await execFileP(process.execPath, [repoPath('scripts', 'check-docs.mjs'), ...(dir ? [dir] : [])]);
    return { code: 0, stdout: r.stdout };
  } catch (e) {
    const err = e as { code: number; stdout: string };
    return { code: err.code, stdout: err.stdout };
  }
}

describe('documentation links', function () {
  this.timeout(30000);

  it('every relative link and #anchor in README.md and docs/ resolves', async () => {
    const r = await checkDocs();
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /check-docs: \d+ relative links in \d+ pages resolve/);
  });

  it('finds a missing file, a missing anchor and a duplicate heading, and ignores code', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'osvirt-docs-'));
    try {
      mkdirSync(path.join(dir, 'docs', 'drivers'), { recursive: true });
      writeFileSync(
        path.join(dir, 'README.md'),
        [
          '# Title',
          '## The daemon: `osvirtd`',
          'See [cli](docs/cli.md#the-client-osvirt), [up](#the-daemon-osvirtd), [gone](docs/gone.md),',
          '[bad anchor](docs/cli.md#nowhere) and [web](https://example.org/x.md).',
          '```',
          '[in a fence](docs/also-gone.md)',
          '```',
          'And `[in code](docs/code-gone.md)`.',
        ].join('\n'),
      );
      writeFileSync(
        path.join(dir, 'docs', 'cli.md'),
        [
          '# CLI',
          '## The client: `osvirt`',
          '## Checkpoints',
          'Back to [the readme](../README.md#title) and [lxc](drivers/lxc.md#jailconf-import).',
          '## Checkpoints',
        ].join('\n'),
      );
      writeFileSync(path.join(dir, 'docs', 'drivers', 'lxc.md'), '# LXC\n\n## jail.conf import\n');
      const r = await checkDocs(dir);
      assert.equal(r.code, 1, r.stdout);
      const problems = r.stdout
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('check-docs:'));
      assert.equal(problems.length, 3, r.stdout);
      assert.match(r.stdout, /README\.md:3: docs\/gone\.md: docs\/gone\.md does not exist/);
      assert.match(r.stdout, /README\.md:4: docs\/cli\.md#nowhere: no heading with anchor #nowhere/);
      assert.match(r.stdout, /docs\/cli\.md:5: duplicate heading "Checkpoints"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
