// Reads a container definition file (YAML or JSON, in the proto's JSON
// mapping of CreateContainerRequest: {name, spec}) and rejects unknown
// fields by path, so a typo never silently does less than asked. 64-bit
// integers are kept exact: YAML integers are read as bigint and handed on as
// decimal strings (the proto JSON form of int64); a JSON number past 2^53
// has already lost digits, so it is refused with a request to quote it.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as protobuf from 'protobufjs';
import YAML from 'yaml';
import { CreateContainerRequest } from '../gen/osvirt/v1/container_service';
import { repoPath } from '../paths';

let root: protobuf.Root | undefined;

function loadRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  const protoDir = repoPath('proto');
  r.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : path.join(protoDir, target));
  r.loadSync('osvirt/v1/container_service.proto', { keepCase: true });
  return (root = r);
}

const WELL_KNOWN = new Set(['google.protobuf.Duration', 'google.protobuf.Timestamp']);
const INT64 = new Set(['int64', 'uint64', 'sint64', 'fixed64', 'sfixed64']);

/** One scalar as fromJSON wants it: 64-bit integers as exact decimal strings, other numbers as numbers. */
function scalar(f: protobuf.Field, v: unknown, at: string): unknown {
  if (INT64.has(f.type)) {
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'number') {
      if (!Number.isInteger(v)) throw new Error(`${at}: ${v} is not a whole number`);
      if (!Number.isSafeInteger(v))
        throw new Error(`${at}: ${v} is past 2^53, where a JSON number has lost digits: write it as a string, e.g. "18446744073709551615"`);
      return v;
    }
    if (typeof v === 'string' && !/^-?\d+$/.test(v)) throw new Error(`${at}: "${v}" is not a whole number`);
    return v;
  }
  return typeof v === 'bigint' ? Number(v) : v;
}

function check(type: protobuf.Type, value: unknown, at: string): void {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${at || 'document'}: expected an object`);
  const byJson = new Map<string, protobuf.Field>();
  for (const f of type.fieldsArray) {
    byJson.set(f.name, f);
    byJson.set(protobuf.util.camelCase(f.name), f);
  }
  const obj = value as Record<string, unknown>;
  for (const [k, v] of Object.entries(obj)) {
    const f = byJson.get(k);
    const here = at ? `${at}.${k}` : k;
    if (!f) throw new Error(`${here}: unknown field (known: ${type.fieldsArray.map((x) => x.name).join(', ')})`);
    f.resolve();
    if (f.map) {
      if (v === null || typeof v !== 'object') throw new Error(`${here}: expected a map`);
      for (const [mk, mv] of Object.entries(v as Record<string, unknown>)) (v as Record<string, unknown>)[mk] = typeof mv === 'bigint' ? mv.toString() : mv;
      continue;
    }
    const rt = f.resolvedType;
    if (rt instanceof protobuf.Type && WELL_KNOWN.has(rt.fullName.slice(1))) {
      if (v !== null && typeof v === 'object')
        for (const [wk, wv] of Object.entries(v as Record<string, unknown>))
          (v as Record<string, unknown>)[wk] = typeof wv === 'bigint' ? (wk === 'seconds' ? wv.toString() : Number(wv)) : wv;
    } else if (rt instanceof protobuf.Type) {
      if (f.repeated) {
        if (!Array.isArray(v)) throw new Error(`${here}: expected a list`);
        v.forEach((item, i) => check(rt, item, `${here}[${i}]`));
      } else {
        check(rt, v, here);
      }
    } else if (rt instanceof protobuf.Enum) {
      const values = f.repeated ? (Array.isArray(v) ? v : [v]) : [v];
      for (const e of values) {
        if (typeof e === 'string' && !(e in rt.values)) throw new Error(`${here}: unknown value "${e}" (one of ${Object.keys(rt.values).join(', ')})`);
      }
      obj[k] = Array.isArray(v) ? v.map((e) => (typeof e === 'bigint' ? Number(e) : e)) : typeof v === 'bigint' ? Number(v) : v;
    } else {
      obj[k] = Array.isArray(v) ? v.map((e, i) => scalar(f, e, `${here}[${i}]`)) : scalar(f, v, here);
    }
  }
}

export function parseDefinition(text: string, file: string): CreateContainerRequest {
  let doc: unknown;
  try {
    doc = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text, { intAsBigInt: true });
  } catch (e) {
    throw new Error(`${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const type = loadRoot().lookupType('osvirt.v1.CreateContainerRequest');
  try {
    check(type, doc, '');
  } catch (e) {
    throw new Error(`${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return CreateContainerRequest.fromJSON(doc);
}

export function readDefinition(file: string): CreateContainerRequest {
  return parseDefinition(readFileSync(file, 'utf8'), file);
}
