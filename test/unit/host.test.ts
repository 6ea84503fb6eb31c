// The host helpers every part of osvirt shares (src/host/processes.ts,
// src/host/mounts.ts) and the poll loop (src/testing/until.ts). No root.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as readline from 'node:readline';
import { isMountpoint, mountsUnder } from '../../src/host/mounts';
import { parentPid, pidAlive, pidStartTime, pidState, signalDisposition } from '../../src/host/processes';
import { until } from '../../src/testing/until';

const MOUNTINFO = [
  '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
  '90 22 0:50 / /tmp/run rw shared:40 - tmpfs tmpfs rw',
  '91 90 0:51 / /tmp/run/a rw shared:41 - overlay overlay rw',
  '92 91 0:52 / /tmp/run/a/proc rw - proc proc rw',
  '93 22 0:53 / /tmp/run-other rw - tmpfs tmpfs rw',
  '94 90 0:54 / /tmp/run/with\\040space rw - tmpfs tmpfs rw',
].join('\n');

describe('host helpers (no root)', () => {
  it('lists the mounts at and below a directory, deepest first, not its namesakes', () => {
    assert.deepEqual(mountsUnder('/tmp/run', MOUNTINFO), ['/tmp/run/with space', '/tmp/run/a/proc', '/tmp/run/a', '/tmp/run']);
    assert.deepEqual(mountsUnder('/tmp/run/a/', MOUNTINFO), ['/tmp/run/a/proc', '/tmp/run/a']);
    assert.deepEqual(mountsUnder('/nowhere', MOUNTINFO), []);
    assert.equal(isMountpoint('/tmp/run/with space', MOUNTINFO), true);
    assert.equal(isMountpoint('/tmp/run/b', MOUNTINFO), false);
  });

  it('a zombie is not alive; a running process is, with its parent and start time', async () => {
    // sleep 0 exits at once, and its parent (exec'd into a sleep that never waits) leaves it a zombie.
    const sh = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const exited = new Promise((r) => sh.once('exit', r));
    try {
      const rl = readline.createInterface({ input: sh.stdout! });
      const [line] = (await once(rl, 'line')) as [string];
      rl.close();
      const zombie = Number(line);
      assert.ok(zombie > 0);
      await until(() => pidState(zombie) === 'Z', `pid ${zombie} to be a zombie`, 5000);
      assert.equal(pidAlive(zombie), false);
      assert.equal(parentPid(zombie), sh.pid);
      assert.equal(pidAlive(sh.pid!), true);
      assert.equal(parentPid(sh.pid!), process.pid);
      assert.match(pidStartTime(sh.pid!) ?? '', /^\d+$/);
    } finally {
      sh.kill('SIGKILL');
      await exited;
    }
    assert.equal(pidAlive(sh.pid!), false, 'reaped: gone from /proc');
    assert.equal(pidAlive(0), false);
    assert.equal(pidAlive(-1), false);
    assert.equal(pidStartTime(0), undefined);
  });

  it("reads a process's signal dispositions: caught, ignored, default", async () => {
    const sh = spawn('/bin/sh', ['-c', "trap 'exit 0' TERM; trap '' HUP; echo ready; while :; do sleep 1; done"], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise((resolve) => sh.stdout!.once('data', resolve));
      assert.equal(signalDisposition(sh.pid!, 15), 'caught');
      assert.equal(signalDisposition(sh.pid!, 1), 'ignored');
      assert.equal(signalDisposition(sh.pid!, 10), 'default');
    } finally {
      sh.kill('SIGKILL');
      await new Promise((resolve) => sh.once('exit', resolve));
    }
    assert.equal(signalDisposition(sh.pid!, 15), undefined, 'gone');
  });

  it('until retries while the probe throws or is falsy, returns its value, and reports the last error at the deadline', async () => {
    let calls = 0;
    const v = await until(
      () => {
        calls++;
        if (calls < 3) throw new Error('not yet');
        return calls === 3 ? 0 : 'done';
      },
      'the probe',
      5000,
      1,
    );
    assert.equal(v, 'done');
    assert.equal(calls, 4);
    await assert.rejects(
      until(
        () => {
          throw new Error('still failing');
        },
        'a probe that never works',
        50,
        5,
      ),
      { message: 'timed out after 50 ms waiting for a probe that never works (last probe: still failing)' },
    );
  });
});
