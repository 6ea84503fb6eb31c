// The container spec a conformance run uses. A driver needs a spec it can
// run; the suite takes one as a template and only changes the init's
// command (to a POSIX shell script) for the cases that need a particular
// behaviour (exit with a code, ignore SIGTERM, a shell on a console).
//
// A template's own init must keep running until SIGTERM and then exit 0
// (the lxc busybox template's default init does). File format: YAML or
// JSON, a ContainerSpec in the proto's JSON mapping, optionally wrapped as
// {spec: ...} like a container definition; `shell` (default /bin/sh) names
// the shell inside the container.
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { ContainerSpec } from '../gen/osvirt/v1/container';

export interface SpecTemplate {
  spec: ContainerSpec;
  shell: string;
  /** Where it came from, for the report. */
  source: string;
}

/** Built-in templates by driver name; any other driver gets {driver: name}. */
export function defaultTemplate(driver: string): SpecTemplate {
  if (driver === 'lxc') {
    return {
      spec: ContainerSpec.fromPartial({ driver, rootfs: { source: { $case: 'template', value: 'busybox' } }, network: { mode: { $case: 'none', value: {} } } }),
      shell: '/bin/sh',
      source: 'built-in lxc template (busybox, network none)',
    };
  }
  return { spec: ContainerSpec.fromPartial({ driver }), shell: '/bin/sh', source: `built-in minimal template ({driver: ${driver}})` };
}

export function parseTemplate(text: string, file: string): SpecTemplate {
  let doc: unknown;
  try {
    doc = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new Error(`${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${file}: expected a mapping (a ContainerSpec)`);
  const d = doc as Record<string, unknown>;
  const shell = typeof d['shell'] === 'string' ? d['shell'] : '/bin/sh';
  const raw = (d['spec'] && typeof d['spec'] === 'object' ? d['spec'] : Object.fromEntries(Object.entries(d).filter(([k]) => k !== 'shell'))) as Record<
    string,
    unknown
  >;
  const spec = ContainerSpec.fromJSON(raw);
  if (!spec.driver) throw new Error(`${file}: the spec template needs "driver"`);
  return { spec, shell, source: file };
}

export function loadTemplate(file: string): SpecTemplate {
  return parseTemplate(readFileSync(file, 'utf8'), file);
}

/** The template with its driver name replaced (a plugin registered under another name). */
export function forDriver(t: SpecTemplate, driver: string): SpecTemplate {
  return { ...t, spec: { ...t.spec, driver } };
}

/** The template running `script` in its shell instead of its own init. */
export function scripted(t: SpecTemplate, script: string, extra: { tty?: boolean } = {}): ContainerSpec {
  const base = t.spec.process ?? { args: [], env: [], cwd: '', user: undefined, tty: false, rlimits: [], noNewPrivileges: false };
  return { ...t.spec, process: { ...base, args: [t.shell, '-c', script], tty: extra.tty ?? false } };
}

/** The template with an interactive shell on a console (process.tty). */
export function consoleShell(t: SpecTemplate): ContainerSpec {
  const base = t.spec.process ?? { args: [], env: [], cwd: '', user: undefined, tty: false, rlimits: [], noNewPrivileges: false };
  return { ...t.spec, process: { ...base, args: [t.shell], tty: true } };
}
