// The daemon never crashes on input: random bytes sent as the request of
// every unary method, and random frames on the streams, get an error status
// (or a harmless answer) and the daemon keeps serving, with nothing created.
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { credentials, makeGenericClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { ContainerServiceService } from '../src/gen/osvirt/v1/container_service';
import { TestDaemon, useDaemon, type Client } from './support/daemon';

describe('garbage input', function () {
  this.timeout(120000);
  let d: TestDaemon;
  let c: Client;
  useDaemon((daemon, client) => {
    d = daemon;
    c = client;
  });

  it('answers random request bytes on every method with a status and stays up', async () => {
    // The same methods with raw bytes in and out, so nothing is validated client-side.
    const raw: Record<string, object> = {};
    for (const [key, def] of Object.entries(ContainerServiceService)) {
      raw[key] = { ...def, requestSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b };
    }
    const Raw = makeGenericClientConstructor(raw as unknown as ServiceDefinition, 'Raw');
    const client = new Raw(`unix://${d.socket}`, credentials.createInsecure()) as unknown as Record<string, (...a: unknown[]) => unknown>;
    let answered = 0;
    for (const [key, def] of Object.entries(ContainerServiceService)) {
      for (let i = 0; i < 25; i++) {
        const bytes = randomBytes(Math.floor(Math.random() * 200));
        await new Promise<void>((resolve) => {
          if (!def.requestStream && !def.responseStream) {
            client[key]!(bytes, (_e: unknown) => {
              answered++;
              resolve();
            });
          } else {
            // A stream the daemon keeps open (a well-formed request by chance) is cancelled after 2 s.
            let t: NodeJS.Timeout | undefined;
            const done = () => {
              clearTimeout(t);
              resolve();
            };
            const s = (def.requestStream ? (def.responseStream ? client[key]!() : client[key]!(done)) : client[key]!(bytes)) as NodeJS.EventEmitter & {
              write(b: Buffer): void;
              end(): void;
              cancel(): void;
            };
            s.on('error', done);
            s.on('end', done);
            s.on('data', () => undefined);
            if (def.requestStream) {
              s.write(bytes);
              s.write(randomBytes(50));
              s.end();
            }
            t = setTimeout(() => {
              s.cancel();
              done();
            }, 2000);
            answered++;
          }
        });
      }
    }
    (client as unknown as { close(): void }).close();
    assert.ok(answered > 0);
    assert.ok(d.proc && d.proc.exitCode === null, `the daemon died: ${d.stderr.slice(-2000)}`);
    assert.ok((await c.api.system.getVersion({})).version);
    const list = await c.api.containers.listContainers({ pageSize: 0, pageToken: '', driver: '', states: [] });
    assert.deepEqual(
      list.containers.map((x) => x.name),
      [],
      'garbage created a container',
    );
    assert.doesNotMatch(d.stderr, /uncaught exception/i);
  });
});
