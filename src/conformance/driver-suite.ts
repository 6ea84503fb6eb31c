// The driver conformance suite (like csi-sanity): every case talks to a
// Driver, which is either a RemoteDriver on a plugin's DriverService
// endpoint or a built-in driver in process (behind the same capability gate
// the daemon applies), so both are held to the same contract: the one in
// proto/osvirt/driver/v1/driver.proto. Checks look from the outside where
// they can (the init pid in /proc).
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ContainerSpec } from '../gen/osvirt/v1/container';
import { RuntimeStatus, type Capability, type Driver, type DriverInfo, type RuntimeState } from '../core/driver';
import { DRIVER_PROTOCOL_VERSION } from '../core/driver';
import type { ErrorCode } from '../core/errors';
import { pidAlive } from '../host/processes';
import { holds } from '../testing/until';
import { check, CheckFailed, codeOf, describe, expectCode, expectStatus, ok, Skip, until, withTimeout } from './checks';
import type { CaseResult, Level, Report } from './report';
import { consoleShell, scripted, type SpecTemplate } from './spec-template';

const SIGKILL = 9;
const SIGTERM = 15;
export const CAPABILITIES: Capability[] = ['pause', 'exec', 'console', 'stats', 'checkpoint'];

export interface SuiteOptions {
  template: SpecTemplate;
  /** Only cases whose id matches. */
  only?: RegExp;
  /** Cases to report as skipped, with the reason (e.g. covered elsewhere, too slow here). */
  skip?: Record<string, string>;
  caseTimeoutMs?: number;
  /** Called as each case finishes (progress). */
  onResult?: (r: CaseResult) => void;
}

export interface Ctx {
  driver: Driver;
  info: DriverInfo;
  t: SpecTemplate;
  /** A fresh container id, deleted after the case. */
  id(tag: string): string;
  notes: string[];
  /** Create and start the template (or a script); returns the running state. */
  running(tag: string, spec?: ContainerSpec): Promise<{ id: string; spec: ContainerSpec; rs: RuntimeState }>;
  created(tag: string, spec?: ContainerSpec): Promise<{ id: string; spec: ContainerSpec }>;
}

interface Case {
  id: string;
  title: string;
  level: Level;
  needs?: Capability;
  timeoutMs?: number;
  run(c: Ctx): Promise<void>;
}

const has = (info: DriverInfo, cap: Capability) => info.capabilities.includes(cap);

/** The exec'd process's output and exit. */
async function execIn(d: Driver, id: string, args: string[], o: { stdin?: string; env?: string[]; cwd?: string; tty?: boolean } = {}) {
  const s = await d.exec!({ id, args, env: o.env ?? [], cwd: o.cwd ?? '/', tty: !!o.tty, rows: o.tty ? 24 : undefined, cols: o.tty ? 80 : undefined });
  let stdout = '';
  let stderr = '';
  s.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  s.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const ended = (r: import('node:stream').Readable) =>
    new Promise<void>((resolve) => (r.readableEnded ? resolve() : (r.once('end', resolve), r.once('error', () => resolve()), r.once('close', resolve))));
  if (o.stdin !== undefined) s.stdin.write(o.stdin);
  if (!o.tty) s.stdin.end();
  const exit = await s.exit;
  await Promise.race([Promise.all([ended(s.stdout), ended(s.stderr)]), new Promise((r) => setTimeout(r, 2000))]);
  return { stdout, stderr, exit };
}

const cases: Case[] = [
  {
    id: 'info.protocol',
    title: 'GetInfo names the driver, speaks protocol version 1 and declares only known capabilities',
    level: 'must',
    async run(c) {
      const i = await ok(c.driver.info(), 'GetInfo');
      check(i.name, 'GetInfo.name is empty');
      check(i.version, 'GetInfo.version is empty');
      check(
        i.protocolVersion === DRIVER_PROTOCOL_VERSION,
        `GetInfo.protocol_version is ${i.protocolVersion}; this suite checks protocol ${DRIVER_PROTOCOL_VERSION}`,
      );
      const unknown = i.capabilities.filter((x) => !(CAPABILITIES as string[]).includes(x));
      check(unknown.length === 0, `unknown capabilities declared: ${unknown.join(', ')} (known: ${CAPABILITIES.join(', ')})`);
      check(new Set(i.capabilities).size === i.capabilities.length, `capabilities listed twice: ${i.capabilities.join(', ')}`);
      c.notes.push(`capabilities: ${i.capabilities.join(', ') || 'none'}`);
    },
  },
  {
    id: 'validate.no-side-effects',
    title: 'Validate accepts the template spec and creates nothing',
    level: 'must',
    async run(c) {
      const id = c.id('val');
      await ok(c.driver.validate(id, c.t.spec), 'Validate(template)');
      await expectCode(c.driver.state(id), 'NOT_FOUND', 'State after Validate only');
    },
  },
  {
    id: 'dependencies.template',
    title: 'Dependencies of the template spec answers other container ids (none named twice, never itself) and creates nothing',
    level: 'should',
    async run(c) {
      if (!c.driver.dependencies) throw new Skip('the driver declares no Dependencies: it joins no other container through its own options');
      const id = c.id('deps');
      const deps = await ok(c.driver.dependencies(id, c.t.spec), 'Dependencies(template)');
      check(
        Array.isArray(deps) && deps.every((x) => typeof x === 'string' && x !== ''),
        `Dependencies answered ${JSON.stringify(deps)}, not a list of container ids`,
      );
      check(!deps.includes(id), 'Dependencies names the container itself: the daemon already locks it');
      check(new Set(deps).size === deps.length, `Dependencies names a container twice: ${deps.join(', ')}`);
      await expectCode(c.driver.state(id), 'NOT_FOUND', 'State after Dependencies only');
      c.notes.push(`dependencies of the template: ${deps.join(', ') || 'none'}`);
    },
  },
  {
    id: 'errors.not-found',
    title: 'State, Start, Stop and Wait of an unknown id answer NOT_FOUND',
    level: 'must',
    async run(c) {
      const id = c.id('nope');
      await expectCode(c.driver.state(id), 'NOT_FOUND', 'State(unknown)');
      await expectCode(c.driver.start(id, c.t.spec, {}), 'NOT_FOUND', 'Start(unknown)');
      await expectCode(c.driver.stop(id, SIGTERM, 1000), 'NOT_FOUND', 'Stop(unknown)');
      await expectCode(withTimeout(c.driver.wait(id), 5000, 'Wait(unknown)'), 'NOT_FOUND', 'Wait(unknown)');
    },
  },
  {
    id: 'errors.not-found-others',
    title: 'Kill and the declared optional methods answer NOT_FOUND for an unknown id',
    level: 'should',
    async run(c) {
      const id = c.id('nope');
      const problems: string[] = [];
      const probe = async (what: string, fn: () => Promise<unknown>) => {
        try {
          await expectCode(fn, 'NOT_FOUND', what);
        } catch (e) {
          problems.push(e instanceof Error ? e.message : String(e));
        }
      };
      await probe('Kill(unknown)', () => c.driver.kill(id, SIGKILL));
      if (has(c.info, 'pause')) await probe('Pause(unknown)', () => c.driver.pause!(id));
      if (has(c.info, 'exec')) await probe('Exec(unknown)', () => c.driver.exec!({ id, args: ['true'], env: [], cwd: '/', tty: false }));
      if (has(c.info, 'stats')) await probe('Stats(unknown)', () => c.driver.stats!(id));
      check(problems.length === 0, problems.join('\n'));
    },
  },
  {
    id: 'lifecycle.order',
    title: 'Create, Start, Stop and Delete move through STOPPED, RUNNING, STOPPED and gone; the init is a live process while RUNNING',
    level: 'must',
    async run(c) {
      const id = c.id('life');
      await ok(c.driver.create(id, c.t.spec), 'Create');
      expectStatus(await ok(c.driver.state(id), 'State after Create'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'State after Create');
      const rs = expectStatus(await ok(c.driver.start(id, c.t.spec, {}), 'Start'), RuntimeStatus.RUNTIME_STATUS_RUNNING, 'Start result');
      check(rs.initPid > 0, `Start returned init_pid ${rs.initPid}`);
      check(pidAlive(rs.initPid), `init pid ${rs.initPid} from Start is not a live process in /proc`);
      const st = expectStatus(await ok(c.driver.state(id), 'State while running'), RuntimeStatus.RUNTIME_STATUS_RUNNING, 'State while running');
      check(st.initPid === rs.initPid, `State reports init_pid ${st.initPid}, Start said ${rs.initPid}`);
      const stopped = expectStatus(await ok(c.driver.stop(id, SIGTERM, 10_000), 'Stop'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Stop result');
      check(!pidAlive(rs.initPid), `init pid ${rs.initPid} still lives after Stop returned`);
      check(
        stopped.exitCode === 0 && stopped.signal === 0,
        `the template's init should exit 0 on SIGTERM; Stop reported exit_code ${stopped.exitCode}, signal ${stopped.signal}`,
      );
      expectStatus(await ok(c.driver.state(id), 'State after Stop'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'State after Stop');
      await ok(c.driver.delete(id), 'Delete');
      await expectCode(c.driver.state(id), 'NOT_FOUND', 'State after Delete');
    },
  },
  {
    id: 'lifecycle.restart',
    title: 'A stopped container starts again with a new init',
    level: 'must',
    async run(c) {
      const { id, spec, rs } = await c.running('again');
      await ok(c.driver.stop(id, SIGTERM, 10_000), 'Stop');
      const rs2 = expectStatus(await ok(c.driver.start(id, spec, {}), 'second Start'), RuntimeStatus.RUNTIME_STATUS_RUNNING, 'second Start');
      check(
        rs2.initPid > 0 && rs2.initPid !== rs.initPid && pidAlive(rs2.initPid),
        `second Start: init_pid ${rs2.initPid} (first was ${rs.initPid}) is not a new live process`,
      );
      expectStatus(await ok(c.driver.stop(id, SIGTERM, 10_000), 'second Stop'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'second Stop');
    },
  },
  {
    id: 'idempotency.create',
    title: 'Create twice with the same id and spec succeeds',
    level: 'must',
    async run(c) {
      const id = c.id('twice');
      await ok(c.driver.create(id, c.t.spec), 'Create');
      await ok(c.driver.create(id, c.t.spec), 'second Create');
      expectStatus(await ok(c.driver.state(id), 'State'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'State');
    },
  },
  {
    id: 'idempotency.stop-stopped',
    title: 'Stop of a never-started and of a stopped container succeeds and reports STOPPED',
    level: 'must',
    async run(c) {
      const { id } = await c.created('never');
      expectStatus(await ok(c.driver.stop(id, SIGTERM, 1000), 'Stop(never started)'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Stop(never started)');
      const r = await c.running('stopped');
      await ok(c.driver.stop(r.id, SIGTERM, 10_000), 'Stop');
      expectStatus(await ok(c.driver.stop(r.id, SIGTERM, 1000), 'Stop again'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Stop again');
    },
  },
  {
    id: 'idempotency.delete',
    title: 'Delete twice, and Delete of an id never created, succeed',
    level: 'must',
    async run(c) {
      const { id } = await c.created('del');
      await ok(c.driver.delete(id), 'Delete');
      await ok(c.driver.delete(id), 'second Delete');
      await ok(c.driver.delete(c.id('never')), 'Delete(never created)');
    },
  },
  {
    id: 'errors.wrong-state',
    title: 'Start of a running container and Kill of a stopped one answer FAILED_PRECONDITION',
    level: 'must',
    async run(c) {
      const r = await c.running('busy');
      await expectCode(c.driver.start(r.id, r.spec, {}), 'FAILED_PRECONDITION', 'Start(running)');
      check(pidAlive(r.rs.initPid), 'the refused second Start disturbed the running init');
      const s = await c.created('idle');
      await expectCode(c.driver.kill(s.id, SIGKILL), 'FAILED_PRECONDITION', 'Kill(never started)');
    },
  },
  {
    id: 'stop.escalates',
    title: 'Stop escalates to SIGKILL after the timeout when the init ignores the stop signal',
    level: 'must',
    async run(c) {
      const r = await c.running('stubborn', scripted(c.t, "trap '' TERM; while :; do sleep 1; done"));
      const t0 = Date.now();
      const rs = expectStatus(await ok(c.driver.stop(r.id, SIGTERM, 500), 'Stop(SIGTERM, 500 ms)'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Stop result');
      const took = Date.now() - t0;
      check(took >= 400, `Stop returned after ${took} ms, before its 500 ms timeout ran out, although the init ignores SIGTERM`);
      check(took < 10_000, `Stop took ${took} ms for a 500 ms timeout`);
      check(rs.signal === SIGKILL, `expected the init to die of SIGKILL (signal 9), got exit_code ${rs.exitCode} signal ${rs.signal}`);
      check(!pidAlive(r.rs.initPid), 'the init still lives after Stop');
    },
  },
  {
    id: 'wait.not-running',
    title: 'Wait on a container that is not running returns at once with STOPPED',
    level: 'must',
    async run(c) {
      const { id } = await c.created('wnr');
      const t0 = Date.now();
      expectStatus(await withTimeout(ok(c.driver.wait(id), 'Wait'), 5000, 'Wait(never started)'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Wait(never started)');
      check(Date.now() - t0 < 3000, `Wait took ${Date.now() - t0} ms on a container that is not running`);
    },
  },
  {
    id: 'wait.exit-code',
    title: 'Wait blocks until the init exits by itself and reports its exit code',
    level: 'must',
    async run(c) {
      const r = await c.running('exit3', scripted(c.t, 'sleep 0.6; exit 3'));
      const t0 = Date.now();
      const rs = expectStatus(await withTimeout(ok(c.driver.wait(r.id), 'Wait'), 15_000, 'Wait'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Wait result');
      check(Date.now() - t0 >= 300, `Wait returned after ${Date.now() - t0} ms, before the init (sleep 0.6; exit 3) could have exited`);
      check(rs.exitCode === 3 && rs.signal === 0, `expected exit_code 3, signal 0; got exit_code ${rs.exitCode}, signal ${rs.signal}`);
      check(!pidAlive(r.rs.initPid), 'the init still lives after Wait returned');
      const again = expectStatus(
        await withTimeout(ok(c.driver.wait(r.id), 'second Wait'), 5000, 'second Wait'),
        RuntimeStatus.RUNTIME_STATUS_STOPPED,
        'second Wait',
      );
      c.notes.push(`second Wait: exit_code ${again.exitCode}`);
    },
  },
  {
    id: 'state.exit-code-kept',
    title: 'State and Wait after the init exited still report its exit code',
    level: 'should',
    async run(c) {
      const r = await c.running('keep', scripted(c.t, 'exit 5'));
      await withTimeout(ok(c.driver.wait(r.id), 'Wait'), 15_000, 'Wait');
      const st = expectStatus(await ok(c.driver.state(r.id), 'State'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'State after exit');
      check(st.exitCode === 5, `State after exit reports exit_code ${st.exitCode}, the init exited 5`);
      const w = await withTimeout(ok(c.driver.wait(r.id), 'second Wait'), 5000, 'second Wait');
      check(w.exitCode === 5, `a second Wait reports exit_code ${w.exitCode}, the init exited 5`);
    },
  },
  {
    id: 'wait.concurrent-kill',
    title: 'Concurrent Waits all return when Kill(SIGKILL) ends the init, reporting signal 9',
    level: 'must',
    async run(c) {
      const r = await c.running('killme');
      const waits = [c.driver.wait(r.id), c.driver.wait(r.id), c.driver.wait(r.id)];
      let early = false;
      void Promise.race(waits).then(
        () => (early = true),
        () => (early = true),
      );
      const stillWaiting = await holds(() => !early, 'every Wait pending while the init runs', 300).then(
        () => true,
        () => false,
      );
      check(stillWaiting, 'a Wait returned while the init was still running');
      await ok(c.driver.kill(r.id, SIGKILL), 'Kill(SIGKILL)');
      const all = await withTimeout(Promise.all(waits.map((w) => ok(w, 'Wait'))), 15_000, 'the Waits');
      for (const rs of all) {
        expectStatus(rs, RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Wait result');
        check(rs.signal === SIGKILL, `Wait reported exit_code ${rs.exitCode}, signal ${rs.signal}; the init was killed by SIGKILL`);
      }
      check(!pidAlive(r.rs.initPid), 'the init still lives after Kill');
    },
  },
  {
    id: 'concurrency.different-ids',
    title: 'Calls on different containers run concurrently and do not interfere',
    level: 'must',
    timeoutMs: 90_000,
    async run(c) {
      const ids = [0, 1, 2, 3].map((i) => c.id(`par${i}`));
      await ok(Promise.all(ids.map((id) => c.driver.create(id, c.t.spec))), 'parallel Create');
      const states = await ok(Promise.all(ids.map((id) => c.driver.start(id, c.t.spec, {}))), 'parallel Start');
      const pids = states.map((s) => s.initPid);
      check(
        new Set(pids).size === ids.length && pids.every((p) => p > 0 && pidAlive(p)),
        `parallel Start gave init pids ${pids.join(', ')}: not distinct live processes`,
      );
      const stops = await ok(Promise.all(ids.map((id) => c.driver.stop(id, SIGTERM, 10_000))), 'parallel Stop');
      check(
        stops.every((s) => s.status === RuntimeStatus.RUNTIME_STATUS_STOPPED),
        'a parallel Stop did not report STOPPED',
      );
      await ok(Promise.all(ids.map((id) => c.driver.delete(id))), 'parallel Delete');
      for (const id of ids) await expectCode(c.driver.state(id), 'NOT_FOUND', `State(${id}) after parallel Delete`);
    },
  },
  {
    id: 'recover.every-id',
    title: 'Recover reports a state for every requested id and keeps running containers running',
    level: 'must',
    async run(c) {
      const r = await c.running('rec-run');
      const s = await c.created('rec-stop');
      const gone = c.id('rec-gone');
      const states = await ok(
        c.driver.recover([
          { id: r.id, spec: r.spec },
          { id: s.id, spec: s.spec },
          { id: gone, spec: c.t.spec },
        ]),
        'Recover',
      );
      for (const id of [r.id, s.id, gone]) check(states[id], `Recover returned no state for "${id}"`);
      const rr = expectStatus(states[r.id], RuntimeStatus.RUNTIME_STATUS_RUNNING, 'Recover(running)');
      check(rr.initPid === r.rs.initPid, `Recover reports init_pid ${rr.initPid}, Start said ${r.rs.initPid}`);
      expectStatus(states[s.id], RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Recover(never started)');
      await ok(c.driver.recover([{ id: r.id, spec: r.spec }]), 'Recover again');
      expectStatus(await ok(c.driver.stop(r.id, SIGTERM, 10_000), 'Stop after Recover'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Stop after Recover');
    },
  },
  {
    id: 'capabilities.undeclared',
    title: 'Each optional method whose capability is not declared answers UNIMPLEMENTED (FAILED_PRECONDITION when GetInfo explains it)',
    level: 'must',
    async run(c) {
      const missing = CAPABILITIES.filter((x) => !has(c.info, x));
      if (missing.length === 0) throw new Skip('every optional capability is declared');
      const { id, spec } = await c.created('caps');
      const dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-conf-'));
      try {
        const probes: Record<Capability, [string, () => Promise<unknown>][]> = {
          pause: [
            ['Pause', () => c.driver.pause!(id)],
            ['Resume', () => c.driver.resume!(id)],
          ],
          exec: [['Exec', () => c.driver.exec!({ id, args: ['true'], env: [], cwd: '/', tty: false })]],
          console: [['Console', () => c.driver.console!(id)]],
          stats: [['Stats', () => c.driver.stats!(id)]],
          checkpoint: [
            [
              'Checkpoint',
              () =>
                c.driver.checkpoint!(
                  id,
                  dir,
                  {
                    leaveRunning: false,
                    tcpEstablished: false,
                    extUnixSk: false,
                    fileLocks: false,
                    shellJob: false,
                    manageCgroupsMode: 0,
                    parentCheckpoint: '',
                    lazyPages: false,
                  },
                  '',
                ),
            ],
            ['Restore', () => c.driver.restore!(id, spec, dir, false, 0)],
          ],
        };
        for (const cap of missing) {
          const explained = c.info.messages.some((m) => m.startsWith(`${cap}:`));
          const allowed: ErrorCode[] = explained ? ['UNIMPLEMENTED', 'FAILED_PRECONDITION'] : ['UNIMPLEMENTED'];
          for (const [name, fn] of probes[cap]) {
            if (typeof (c.driver as unknown as Record<string, unknown>)[name.toLowerCase()] !== 'function') continue; // in process: no method at all is UNIMPLEMENTED
            await expectCode(fn, allowed, `${name} (capability "${cap}" not declared${explained ? ', explained in GetInfo.messages' : ''})`);
          }
          c.notes.push(`${cap}: refused as expected`);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  },
  {
    id: 'pause.freeze-thaw',
    title: 'Pause and Resume move a running container to PAUSED and back; Stop works on a paused container',
    level: 'must',
    needs: 'pause',
    async run(c) {
      const r = await c.running('pause');
      await ok(c.driver.pause!(r.id), 'Pause');
      expectStatus(await ok(c.driver.state(r.id), 'State after Pause'), RuntimeStatus.RUNTIME_STATUS_PAUSED, 'State after Pause');
      check(pidAlive(r.rs.initPid), 'the init died when paused');
      await ok(c.driver.resume!(r.id), 'Resume');
      expectStatus(await ok(c.driver.state(r.id), 'State after Resume'), RuntimeStatus.RUNTIME_STATUS_RUNNING, 'State after Resume');
      await ok(c.driver.pause!(r.id), 'Pause again');
      expectStatus(await ok(c.driver.stop(r.id, SIGTERM, 5000), 'Stop(paused)'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Stop(paused)');
      check(!pidAlive(r.rs.initPid), 'the init still lives after stopping the paused container');
    },
  },
  {
    id: 'exec.output-and-exit',
    title: 'Exec streams stdout and stderr apart and reports the exit code',
    level: 'must',
    needs: 'exec',
    async run(c) {
      const r = await c.running('exec');
      const x = await withTimeout(execIn(c.driver, r.id, [c.t.shell, '-c', 'echo out; echo err >&2; exit 7']), 20_000, 'Exec');
      check(x.stdout === 'out\n', `stdout was ${JSON.stringify(x.stdout)}, expected "out\\n"`);
      check(x.stderr === 'err\n', `stderr was ${JSON.stringify(x.stderr)}, expected "err\\n"`);
      check(x.exit.exitCode === 7, `exit code ${x.exit.exitCode}, expected 7`);
    },
  },
  {
    id: 'exec.stdin-env-cwd',
    title: 'Exec passes stdin (with EOF), the environment and the working directory',
    level: 'must',
    needs: 'exec',
    async run(c) {
      const r = await c.running('execio');
      const cat = await withTimeout(execIn(c.driver, r.id, ['cat'], { stdin: 'ping\n' }), 20_000, 'Exec(cat)');
      check(cat.stdout === 'ping\n' && cat.exit.exitCode === 0, `cat echoed ${JSON.stringify(cat.stdout)} and exited ${cat.exit.exitCode}`);
      const env = await withTimeout(
        execIn(c.driver, r.id, [c.t.shell, '-c', 'echo "$CONFORMANCE"; pwd'], { env: ['CONFORMANCE=yes'], cwd: '/proc' }),
        20_000,
        'Exec(env, cwd)',
      );
      check(env.stdout === 'yes\n/proc\n', `env/cwd: got ${JSON.stringify(env.stdout)}, expected "yes\\n/proc\\n"`);
    },
  },
  {
    id: 'exec.not-running',
    title: 'Exec in a container that is not running answers FAILED_PRECONDITION',
    level: 'must',
    needs: 'exec',
    async run(c) {
      const { id } = await c.created('execstop');
      await expectCode(c.driver.exec!({ id, args: ['true'], env: [], cwd: '/', tty: false }), 'FAILED_PRECONDITION', 'Exec(not running)');
    },
  },
  {
    id: 'exec.tty',
    title: 'Exec with a tty runs the process on a terminal',
    level: 'should',
    needs: 'exec',
    async run(c) {
      const r = await c.running('exectty');
      const x = await withTimeout(execIn(c.driver, r.id, [c.t.shell, '-c', 'test -t 0 && test -t 1 && echo on-a-tty'], { tty: true }), 20_000, 'Exec(tty)');
      check(
        x.stdout.includes('on-a-tty') && x.exit.exitCode === 0,
        `expected a terminal on stdin and stdout; output ${JSON.stringify(x.stdout)}, exit ${x.exit.exitCode}`,
      );
    },
  },
  {
    id: 'console.io',
    title: 'Console relays input to and output from an init running on a terminal',
    level: 'must',
    needs: 'console',
    async run(c) {
      const r = await c.running('console', consoleShell(c.t));
      const s = await ok(c.driver.console!(r.id), 'Console');
      let out = '';
      s.output.on('data', (b: Buffer) => (out += b.toString()));
      try {
        s.resize(30, 100);
        s.input.write('echo cons-$((6*7))\n');
        const seen = await until(() => out.includes('cons-42'), 10_000);
        check(seen, `the console did not echo the command's output; got ${JSON.stringify(out.slice(-200))}`);
      } finally {
        s.close();
      }
    },
  },
  {
    id: 'stats.running',
    title: 'Stats answers for a running container',
    level: 'must',
    needs: 'stats',
    async run(c) {
      const r = await c.running('stats');
      const s = await ok(c.driver.stats!(r.id), 'Stats');
      c.notes.push(`pids_current ${s.pidsCurrent}, memory ${s.memoryUsageBytes} bytes, cpu ${s.cpuUsageNs} ns`);
      check(s.pidsCurrent >= 1, `Stats.pids_current is ${s.pidsCurrent} for a running container`);
    },
  },
  {
    id: 'checkpoint.restore',
    title: 'Checkpoint stops the container into an image directory; Restore brings it back running',
    level: 'must',
    needs: 'checkpoint',
    timeoutMs: 120_000,
    async run(c) {
      const r = await c.running('cr');
      const dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-conf-cr-'));
      try {
        const opts = {
          leaveRunning: false,
          tcpEstablished: false,
          extUnixSk: false,
          fileLocks: false,
          shellJob: false,
          manageCgroupsMode: 0,
          parentCheckpoint: '',
          lazyPages: false,
        };
        const res = await ok(c.driver.checkpoint!(r.id, dir, opts, ''), 'Checkpoint');
        check(readdirSync(dir).length > 0, `Checkpoint wrote nothing into ${dir}`);
        check(await until(() => !pidAlive(r.rs.initPid), 5000), 'the init still lives after a Checkpoint without leave_running');
        expectStatus(await ok(c.driver.state(r.id), 'State after Checkpoint'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'State after Checkpoint');
        c.notes.push(`criu ${res.criuVersion}`);
        const rs = expectStatus(
          await ok(c.driver.restore!(r.id, r.spec, dir, false, 60_000), 'Restore'),
          RuntimeStatus.RUNTIME_STATUS_RUNNING,
          'Restore result',
        );
        check(rs.initPid > 0 && pidAlive(rs.initPid), `Restore returned init_pid ${rs.initPid}, not a live process`);
        expectStatus(await ok(c.driver.stop(r.id, SIGTERM, 10_000), 'Stop after Restore'), RuntimeStatus.RUNTIME_STATUS_STOPPED, 'Stop after Restore');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  },
];

export function caseIds(): string[] {
  return cases.map((c) => c.id);
}

async function cleanup(d: Driver, ids: string[]): Promise<string[]> {
  const problems: string[] = [];
  await Promise.all(
    ids.map(async (id) => {
      try {
        await withTimeout(
          (async () => {
            try {
              await d.stop(id, SIGKILL, 0);
            } catch (e) {
              if (codeOf(e) !== 'NOT_FOUND') throw e;
            }
            await d.delete(id);
          })(),
          30_000,
          `cleanup of ${id}`,
        );
      } catch (e) {
        problems.push(`cleanup of "${id}" failed: ${describe(e)}`);
      }
    }),
  );
  return problems;
}

/** Run every case against a driver (initialised, or a RemoteDriver) and report. */
export async function runDriverSuite(driver: Driver, target: string, o: SuiteOptions): Promise<Report> {
  const report: Report = { target, driver: driver.name, results: [] };
  let info: DriverInfo;
  try {
    info = await withTimeout(driver.info(), 15_000, 'GetInfo');
  } catch (e) {
    report.error = `cannot reach the driver: ${describe(e)}`;
    return report;
  }
  report.driver = info.name;
  const run = `c${randomBytes(3).toString('hex')}`;
  let n = 0;
  for (const k of cases) {
    if (o.only && !o.only.test(k.id)) continue;
    const t0 = Date.now();
    const ids: string[] = [];
    const notes: string[] = [];
    const result = (outcome: CaseResult['outcome'], detail: string): CaseResult => ({
      id: k.id,
      title: k.title,
      level: k.level,
      outcome,
      ms: Date.now() - t0,
      detail,
    });
    let res: CaseResult;
    const skipWhy = o.skip?.[k.id];
    if (skipWhy) {
      res = result('skip', skipWhy);
    } else if (k.needs && !has(info, k.needs)) {
      const why = info.messages.find((m) => m.startsWith(`${k.needs}:`));
      res = result('skip', `capability "${k.needs}" is not declared${why ? ` (${why})` : ''}`);
    } else {
      const ctx: Ctx = {
        driver,
        info,
        t: o.template,
        notes,
        id: (tag) => {
          const id = `${run}-${++n}-${tag}`.slice(0, 63);
          ids.push(id);
          return id;
        },
        created: async (tag, spec = o.template.spec) => {
          const id = ctx.id(tag);
          await ok(driver.create(id, spec), `Create(${id})`);
          return { id, spec };
        },
        running: async (tag, spec = o.template.spec) => {
          const { id } = await ctx.created(tag, spec);
          const rs = expectStatus(await ok(driver.start(id, spec, {}), `Start(${id})`), RuntimeStatus.RUNTIME_STATUS_RUNNING, `Start(${id})`);
          return { id, spec, rs };
        },
      };
      try {
        await withTimeout(k.run(ctx), k.timeoutMs ?? o.caseTimeoutMs ?? 60_000, 'the case');
        res = result('pass', notes.join('; '));
      } catch (e) {
        if (e instanceof Skip) res = result('skip', e.message);
        else {
          const msg = e instanceof CheckFailed ? e.message : `unexpected error: ${describe(e)}`;
          res = result(k.level === 'must' ? 'fail' : 'warn', [msg, ...notes].join('\n'));
        }
      }
      const left = await cleanup(driver, ids);
      if (left.length && res.outcome !== 'fail')
        res = { ...res, outcome: k.level === 'must' ? 'fail' : 'warn', detail: [res.detail, ...left].filter(Boolean).join('\n') };
      res.ms = Date.now() - t0;
    }
    report.results.push(res);
    o.onResult?.(res);
  }
  return report;
}
