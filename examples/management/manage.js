// Runs INSIDE the management container: manages its workers through the
// endpoint osvirt put at /run/osvirt/osvirt.sock, and shows what it may not do.
// Prints one JSON line per step.
const path = require('node:path');
const { connectAsync } = require(path.join(__dirname, '..', '..', 'dist', 'src', 'client.js'));

const c = connectAsync({ address: 'unix:///run/osvirt/osvirt.sock' });
const api = c.api.containers;
const say = (step, result) => console.log(JSON.stringify({ step, ...result }));
const attempt = async (step, fn) => {
  try {
    say(step, { ok: true, value: await fn() });
  } catch (e) {
    say(step, { ok: false, code: e.code, error: e.details });
  }
};

(async () => {
  await attempt('list', async () => (await api.listContainers({ pageSize: 0, pageToken: '', driver: '', states: [] })).containers.map((x) => x.name).sort());
  for (const name of ['worker-1', 'worker-2']) await attempt(`start ${name}`, async () => (await api.startContainer({ name })).container.status.initPid > 0);
  await attempt('stop worker-1', async () =>
    (await api.stopContainer({ name: 'worker-1', signal: 0, timeout: { seconds: 5n, nanos: 0 } })).container.status.state === 4 ? 'stopped' : 'not stopped',
  );
  const drivers = (await c.api.system.listDrivers({})).drivers;
  const lxc = drivers.find((d) => d.name === 'lxc');
  if (lxc && lxc.capabilities.includes('checkpoint')) {
    await attempt(
      'checkpoint worker-2',
      async () =>
        (
          await api.checkpointContainer({
            name: 'worker-2',
            checkpoint: 'from-manager',
            options: {
              leaveRunning: true,
              tcpEstablished: false,
              extUnixSk: false,
              fileLocks: false,
              shellJob: false,
              manageCgroupsMode: 0,
              parentCheckpoint: '',
              lazyPages: false,
            },
          })
        ).checkpoint.name,
    );
  } else {
    say('checkpoint worker-2', { ok: false, skipped: `the lxc driver cannot checkpoint here: ${lxc ? lxc.messages.join('; ') : 'no lxc driver'}` });
  }
  await attempt('start outsider', async () => (await api.startContainer({ name: 'outsider' })).container.name);
  await attempt('get outsider', async () => (await api.getContainer({ name: 'outsider' })).container.name);
  await attempt(
    'create',
    async () =>
      (
        await api.createContainer({
          name: 'sneaky',
          spec: { driver: 'lxc', mounts: [], devices: [], labels: {}, autostart: false, hostname: '', domainname: '', stopSignal: 0, ports: [] },
        })
      ).container.name,
  );
  await attempt('delete worker-2', async () => api.deleteContainer({ name: 'worker-2', force: true, allowMissing: false }));
  c.close();
})();
