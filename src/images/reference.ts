// Image references: "HOST[:PORT]/REPO[:TAG]" and "HOST[:PORT]/REPO@sha256:HEX",
// after the grammar of the OCI distribution spec (repository names are
// lower-case path components; tags are at most 128 word characters, dots
// and dashes). osvirt has no default registry: the host is always written.

export interface Reference {
  /** "registry.example:5000" */
  host: string;
  /** "library/busybox" */
  repository: string;
  /** A tag, or undefined when the reference is by digest. */
  tag?: string;
  /** "sha256:..." when the reference is by digest. */
  digest?: string;
}

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
export const HOST_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$/;

/** Parses a reference; throws an Error whose message says what is wrong. */
export function parseReference(text: string): Reference {
  if (!text) throw new Error('is empty');
  if (text.length > 4096) throw new Error('is longer than 4096 characters');
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new Error(`"${digest}" is not a sha256 digest (sha256: and 64 lower-case hex digits)`);
  }
  const slash = rest.indexOf('/');
  const first = slash < 0 ? rest : rest.slice(0, slash);
  // Like docker: the first component is a host when it has a dot or a port, or is localhost.
  if (slash < 0 || !(first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    throw new Error(`"${text}" names no registry host: write it out, e.g. "registry.example.org/${rest}" (osvirt has no default registry)`);
  }
  if (!HOST_RE.test(first)) throw new Error(`"${first}" is not a registry host[:port]`);
  let repo = rest.slice(slash + 1);
  let tag: string | undefined;
  const colon = repo.lastIndexOf(':');
  if (colon >= 0) {
    tag = repo.slice(colon + 1);
    repo = repo.slice(0, colon);
    if (!TAG.test(tag)) throw new Error(`"${tag}" is not a valid tag (word characters, "." and "-", at most 128)`);
  }
  if (!repo) throw new Error(`"${text}" names no repository`);
  for (const c of repo.split('/')) {
    if (!COMPONENT.test(c))
      throw new Error(`repository "${repo}": "${c}" is not a valid path component (lower-case letters, digits, separated by ".", "_", "__" or "-")`);
  }
  if (!digest && !tag) tag = 'latest';
  return { host: first, repository: repo, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

/** The canonical text: host/repo:tag, host/repo@digest, or host/repo:tag@digest. */
export function formatReference(r: Reference): string {
  return `${r.host}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** The name an image is listed under: host/repo:tag (or host/repo@digest when pulled by digest). */
export function nameOf(r: Reference): string {
  return r.tag ? `${r.host}/${r.repository}:${r.tag}` : `${r.host}/${r.repository}@${r.digest}`;
}
