// The helper protocol's TypeScript side without a helper: the framing
// (src/host/helper-wire.ts) and the daemon's fallback to the text control
// protocol of monitors started by an older build (drivers/lxc/monitor.ts).
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { monitorProtocol, monitorResize, waitExit } from '../../drivers/lxc/monitor';
import { ControlEvent, ControlRequest, StartEvent } from '../../src/gen/osvirt/helper/v1/helper';
import { until } from '../../src/testing/until';
import { encodeFrame, frame, FrameError, FrameSplitter, MAX_FRAME, MessageReader } from '../../src/host/helper-wire';

describe('helper protocol: framing', function () {
  it('frames with a 4-byte little-endian length and splits a stream at any chunking', function () {
    const a = encodeFrame(StartEvent, { event: { $case: 'created', value: { initPid: 4242, monitorPid: 4241 } } });
    assert.equal(a.readUInt32LE(0), a.length - 4);
    const b = frame(Buffer.alloc(0));
    const bytes = Buffer.concat([a, b, a]);
    const split = new FrameSplitter();
    const got: Buffer[] = [];
    for (let i = 0; i < bytes.length; i++) got.push(...split.push(bytes.subarray(i, i + 1)));
    split.end();
    assert.deepEqual(
      got.map((p) => p.length),
      [a.length - 4, 0, a.length - 4],
    );
    assert.deepEqual(StartEvent.decode(got[0]!), { event: { $case: 'created', value: { initPid: 4242, monitorPid: 4241 } } });
  });

  it('rejects oversized and truncated frames', async function () {
    const big = Buffer.alloc(4);
    big.writeUInt32LE(MAX_FRAME + 1);
    assert.throws(() => new FrameSplitter().push(big), /frame of 1048577 bytes exceeds the limit of 1048576/);
    assert.throws(() => frame(Buffer.alloc(MAX_FRAME + 1)), FrameError);
    const split = new FrameSplitter();
    split.push(frame(Buffer.from('hello')).subarray(0, 6));
    assert.throws(() => split.end(), /truncated frame: the stream ended after 6 of 9 bytes/);

    const s = new PassThrough();
    const r = new MessageReader(s, StartEvent, 'StartEvent');
    s.end(frame(Buffer.from('hel')).subarray(0, 5));
    await assert.rejects(r.next(), /truncated frame/);
    const s2 = new PassThrough();
    const r2 = new MessageReader(s2, ControlEvent, 'ControlEvent');
    s2.end(frame(Buffer.from([0xff, 0xff])));
    await assert.rejects(r2.next(), /a frame of 2 bytes is not a ControlEvent/);
  });

  it('reads messages in order and ends cleanly between frames', async function () {
    const s = new PassThrough();
    const r = new MessageReader(s, ControlEvent, 'ControlEvent');
    s.write(encodeFrame(ControlEvent, { event: { $case: 'resized', value: {} } }));
    s.end(encodeFrame(ControlEvent, { event: { $case: 'exited', value: { exitCode: 137, signal: 9 } } }));
    assert.deepEqual(await r.next(), { event: { $case: 'resized', value: {} } });
    assert.deepEqual(await r.next(), { event: { $case: 'exited', value: { exitCode: 137, signal: 9 } } });
    assert.equal(await r.next(), undefined);
  });
});

describe('helper protocol: monitors of either build', function () {
  let dir = '';
  let server: net.Server | undefined;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'osvirt-wire-'));
  });
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A stand-in monitor on dir/monitor.sock: on connect, handle(sock) speaks for it. */
  async function serve(handle: (c: net.Socket) => void): Promise<void> {
    server = net.createServer(handle);
    await new Promise<void>((r) => server!.listen(path.join(dir, 'monitor.sock'), r));
  }

  it('speaks the old text protocol to a monitor without a protocol file', async function () {
    assert.equal(monitorProtocol(dir), 'text');
    const heard: string[] = [];
    let exitLine = false;
    await serve((c) => {
      c.setEncoding('utf8');
      c.on('data', (d: string) => heard.push(d));
      c.on('error', () => undefined);
      if (exitLine) setTimeout(() => c.end('{"state":"running","initPid":1}\n{"event":"exited","signal":9,"exitCode":137}\n'), 20);
    });
    await monitorResize(dir, 33, 77);
    await until(() => heard.length > 0, 'the resize line');
    assert.deepEqual(heard, ['resize 33 77\n']);
    exitLine = true;
    const exit = await waitExit(dir, process.pid);
    assert.equal(exit?.exitCode, 137);
    assert.equal(exit?.signal, 9);
  });

  it('speaks helper.proto frames to a monitor that names osvirt.helper.v1', async function () {
    fs.writeFileSync(path.join(dir, 'protocol'), 'osvirt.helper.v1\n');
    assert.equal(monitorProtocol(dir), 'v1');
    const asked: ControlRequest[] = [];
    await serve((c) => {
      const split = new FrameSplitter();
      c.on('data', (d: Buffer) => {
        for (const p of split.push(d)) {
          asked.push(ControlRequest.decode(p));
          c.write(encodeFrame(ControlEvent, { event: { $case: 'error', value: { message: 'no tty' } } }));
        }
      });
      c.on('error', () => undefined);
    });
    assert.equal(await monitorResize(dir, 33, 77), 'no tty');
    assert.deepEqual(asked, [{ request: { $case: 'resize', value: { rows: 33, cols: 77 } } }]);
    server!.removeAllListeners('connection');
    server!.on('connection', (c: net.Socket) => c.end(encodeFrame(ControlEvent, { event: { $case: 'exited', value: { exitCode: 3, signal: 0 } } })));
    const exit = await waitExit(dir, process.pid);
    assert.equal(exit?.exitCode, 3);
  });
});
