// The daemon-level part of the conformance suite: properties that only
// exist once a driver is registered with osvirtd (events and their order,
// exit codes recorded from Wait, the API's answer for undeclared
// capabilities). Runs against a daemon through the public osvirt.v1 API.
import { randomBytes } from 'node:crypto';
import { status as Code, type ServiceError } from '@grpc/grpc-js';
import type { OsvirtClient } from '../client';
import { promisify } from '../client';
import { ContainerState, StateReason } from '../gen/osvirt/v1/container';
import type { ExecContainerResponse } from '../gen/osvirt/v1/container_service';
import { EventType, type Event, type WatchEventsResponse } from '../gen/osvirt/v1/event_service';
import { DriverHealth, type DriverInfo } from '../gen/osvirt/v1/system_service';
import { check, CheckFailed, Skip, until, withTimeout } from './checks';
import { CAPABILITIES } from './driver-suite';
import type { CaseResult, Level, Report } from './report';
import { forDriver, scripted, type SpecTemplate } from './spec-template';

interface DCtx {
  c: OsvirtClient;
  api: { containers: ReturnType<typeof promisify<OsvirtClient['containers']>>; system: ReturnType<typeof promisify<OsvirtClient['system']>> };
  driver: DriverInfo;
  t: SpecTemplate;
  name(tag: string): string;
  notes: string[];
}

interface DCase {
  id: string;
  title: string;
  level: Level;
  run(x: DCtx): Promise<void>;
}

const typeName = (t: EventType) => EventType[t].replace('EVENT_TYPE_', '').toLowerCase();

function grpcFail(what: string, e: unknown): CheckFailed {
  const se = e as Partial<ServiceError>;
  return new CheckFailed(`${what} failed: ${typeof se.code === 'number' ? `${Code[se.code]}: ${se.details}` : String(e)}`);
}

async function call<T>(p: Promise<T>, what: string): Promise<T> {
  try {
    return await p;
  } catch (e) {
    throw grpcFail(what, e);
  }
}

/** Subscribe to a container's events; resolves once the subscription is live. */
function watch(c: OsvirtClient, name: string): Promise<{ events: Event[]; stop(): void }> {
  return new Promise((resolve, reject) => {
    const events: Event[] = [];
    const s = c.events.watchEvents({ containers: [name], types: [] });
    s.on('data', (m: WatchEventsResponse) => m.event && events.push(m.event));
    s.on('error', (e: ServiceError) => {
      if (e.code !== Code.CANCELLED) reject(grpcFail('WatchEvents', e));
    });
    s.once('metadata', () => resolve({ events, stop: () => s.cancel() }));
  });
}

function exec(c: OsvirtClient, name: string, args: string[]): Promise<{ stdout: string; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const s = c.containers.execContainer();
    let stdout = '';
    let exitCode = -1;
    s.on('data', (m: ExecContainerResponse) => {
      if (m.message?.$case === 'stdout') stdout += m.message.value.toString();
      if (m.message?.$case === 'exit') exitCode = m.message.value.exitCode;
    });
    s.on('error', reject);
    s.on('end', () => resolve({ stdout, exitCode }));
    s.write({ message: { $case: 'start', value: { name, args, env: [], cwd: '', user: undefined, tty: false, terminalSize: undefined } } });
    s.write({ message: { $case: 'closeStdin', value: true } });
    s.end();
  });
}

const cases: DCase[] = [
  {
    id: 'daemon.driver-ready',
    title: 'ListDrivers shows the driver READY with its capabilities',
    level: 'must',
    async run(x) {
      check(
        x.driver.health === DriverHealth.DRIVER_HEALTH_READY,
        `driver "${x.driver.name}" is ${DriverHealth[x.driver.health]}: ${x.driver.messages.join('; ')}`,
      );
      x.notes.push(`${x.driver.external ? 'external' : 'built in'}; capabilities: ${x.driver.capabilities.join(', ') || 'none'}`);
    },
  },
  {
    id: 'daemon.event-order',
    title: 'Events arrive in order: created, started, (paused, resumed,) stopped, deleted',
    level: 'must',
    async run(x) {
      const name = x.name('events');
      const w = await watch(x.c, name);
      try {
        await call(x.api.containers.createContainer({ name, spec: x.t.spec }), 'CreateContainer');
        await call(x.api.containers.startContainer({ name }), 'StartContainer');
        const want = [EventType.EVENT_TYPE_CREATED, EventType.EVENT_TYPE_STARTED];
        if (x.driver.capabilities.includes('pause')) {
          await call(x.api.containers.pauseContainer({ name }), 'PauseContainer');
          await call(x.api.containers.resumeContainer({ name }), 'ResumeContainer');
          want.push(EventType.EVENT_TYPE_PAUSED, EventType.EVENT_TYPE_RESUMED);
        }
        await call(x.api.containers.stopContainer({ name, signal: 0, timeout: { seconds: 10n, nanos: 0 } }), 'StopContainer');
        await call(x.api.containers.deleteContainer({ name, force: false, allowMissing: false }), 'DeleteContainer');
        want.push(EventType.EVENT_TYPE_STOPPED, EventType.EVENT_TYPE_DELETED);
        await until(() => w.events.length >= want.length, 5000);
        const got = w.events.map((e) => e.type);
        check(got.join() === want.join(), `events ${got.map(typeName).join(', ')}; expected ${want.map(typeName).join(', ')}`);
        const seqs = w.events.map((e) => e.sequence);
        check(
          seqs.every((s, i) => i === 0 || s > seqs[i - 1]!),
          `event sequence numbers are not increasing: ${seqs.join(', ')}`,
        );
      } finally {
        w.stop();
      }
    },
  },
  {
    id: 'daemon.exit-recorded',
    title: "An init that exits by itself is recorded STOPPED with its exit code (the driver's Wait reaches the daemon)",
    level: 'must',
    async run(x) {
      const name = x.name('exits');
      const w = await watch(x.c, name);
      try {
        await call(x.api.containers.createContainer({ name, spec: scripted(x.t, 'sleep 0.3; exit 3') }), 'CreateContainer');
        await call(x.api.containers.startContainer({ name }), 'StartContainer');
        const seen = await until(() => w.events.some((e) => e.type === EventType.EVENT_TYPE_STOPPED), 15_000);
        check(seen, `no stopped event within 15 s; events: ${w.events.map((e) => typeName(e.type)).join(', ')}`);
        const ct = (await call(x.api.containers.getContainer({ name }), 'GetContainer')).container;
        check(ct?.status?.state === ContainerState.CONTAINER_STATE_STOPPED, `state ${ContainerState[ct?.status?.state ?? 0]}, expected STOPPED`);
        check(
          ct.status.exitCode === 3 && ct.status.reason === StateReason.STATE_REASON_EXITED,
          `exit code ${ct.status.exitCode}, reason ${StateReason[ct.status.reason]}; expected 3, EXITED`,
        );
      } finally {
        w.stop();
      }
    },
  },
  {
    id: 'daemon.exec',
    title: 'ExecContainer reaches the driver and returns output and exit code',
    level: 'must',
    async run(x) {
      if (!x.driver.capabilities.includes('exec')) throw new Skip('capability "exec" is not declared');
      const name = x.name('exec');
      await call(x.api.containers.createContainer({ name, spec: x.t.spec }), 'CreateContainer');
      await call(x.api.containers.startContainer({ name }), 'StartContainer');
      const r = await withTimeout(call(exec(x.c, name, [x.t.shell, '-c', 'echo through-the-daemon; exit 4']), 'ExecContainer'), 20_000, 'ExecContainer');
      check(r.stdout === 'through-the-daemon\n' && r.exitCode === 4, `got ${JSON.stringify(r.stdout)} exit ${r.exitCode}`);
    },
  },
  {
    id: 'daemon.undeclared-capabilities',
    title: 'The API answers UNIMPLEMENTED (or FAILED_PRECONDITION with a reason) for capabilities the driver lacks',
    level: 'must',
    async run(x) {
      const missing = CAPABILITIES.filter((k) => !x.driver.capabilities.includes(k) && k !== 'console');
      if (missing.length === 0) throw new Skip('every optional capability is declared');
      const name = x.name('caps');
      await call(x.api.containers.createContainer({ name, spec: x.t.spec }), 'CreateContainer');
      await call(x.api.containers.startContainer({ name }), 'StartContainer');
      const probes: Record<string, () => Promise<unknown>> = {
        pause: () => x.api.containers.pauseContainer({ name }),
        exec: () => exec(x.c, name, ['true']),
        stats: () => x.api.containers.getContainerStats({ name }),
        checkpoint: () => x.api.containers.checkpointContainer({ name, checkpoint: '', options: undefined }),
      };
      for (const k of missing) {
        const explained = x.driver.messages.some((m) => m.startsWith(`${k}:`));
        let err: unknown;
        try {
          await probes[k]!();
        } catch (e) {
          err = e;
        }
        check(err, `${k}: the call succeeded although the capability is not declared`);
        const code = (err as Partial<ServiceError>).code;
        const okCode = code === Code.UNIMPLEMENTED || (explained && code === Code.FAILED_PRECONDITION);
        check(
          okCode,
          `${k}: expected UNIMPLEMENTED${explained ? ' or FAILED_PRECONDITION' : ''}, got ${typeof code === 'number' ? `${Code[code]}: ${(err as ServiceError).details}` : String(err)}`,
        );
        x.notes.push(`${k}: ${Code[code!]}`);
      }
    },
  },
];

async function cleanup(x: DCtx, names: string[]): Promise<void> {
  for (const name of names) {
    await x.api.containers.deleteContainer({ name, force: true, allowMissing: true }).catch(() => undefined);
  }
}

/** Run the daemon-level cases for a registered driver. */
export async function runDaemonSuite(
  c: OsvirtClient,
  driverName: string,
  template: SpecTemplate,
  o: { only?: RegExp; onResult?: (r: CaseResult) => void } = {},
): Promise<Report> {
  const report: Report = { target: `daemon ${c.target}`, driver: driverName, results: [] };
  const api = { containers: promisify(c.containers), system: promisify(c.system) };
  let driver: DriverInfo | undefined;
  try {
    driver = (await withTimeout(api.system.listDrivers({}), 15_000, 'ListDrivers')).drivers.find((d) => d.name === driverName);
  } catch (e) {
    report.error = `cannot reach the daemon: ${e instanceof Error ? e.message : String(e)}`;
    return report;
  }
  if (!driver) {
    report.error = `the daemon has no driver named "${driverName}"`;
    return report;
  }
  const run = `d${randomBytes(3).toString('hex')}`;
  let n = 0;
  for (const k of cases) {
    if (o.only && !o.only.test(k.id)) continue;
    const t0 = Date.now();
    const names: string[] = [];
    const x: DCtx = {
      c,
      api,
      driver,
      t: forDriver(template, driverName),
      notes: [],
      name: (tag) => {
        const nm = `${run}-${++n}-${tag}`.slice(0, 63);
        names.push(nm);
        return nm;
      },
    };
    let res: CaseResult;
    try {
      await withTimeout(k.run(x), 60_000, 'the case');
      res = { id: k.id, title: k.title, level: k.level, outcome: 'pass', ms: 0, detail: x.notes.join('; ') };
    } catch (e) {
      if (e instanceof Skip) res = { id: k.id, title: k.title, level: k.level, outcome: 'skip', ms: 0, detail: e.message };
      else
        res = {
          id: k.id,
          title: k.title,
          level: k.level,
          outcome: k.level === 'must' ? 'fail' : 'warn',
          ms: 0,
          detail: e instanceof Error ? e.message : String(e),
        };
    }
    await cleanup(x, names);
    res.ms = Date.now() - t0;
    report.results.push(res);
    o.onResult?.(res);
  }
  return report;
}
