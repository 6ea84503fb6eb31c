// Smoke test of the benchmark suite: `--quick` runs end to end against the
// real daemon and the anchors, writes a JSON with every section and a
// Markdown report, and leaves nothing behind. No timing assertions: the
// figures depend on the machine.
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { repoPath } from '../src/paths';
import { isRoot } from './support/daemon';

const SECTIONS = ['lifecycle', 'checkpoint', 'control-plane', 'scale', 'network', 'context-switch', 'boot', 'images'];

describe('bench --quick (smoke)', function () {
  this.timeout(240_000);
  let out: string;

  before(function () {
    if (!isRoot()) return this.skip();
    out = mkdtempSync(path.join(os.tmpdir(), 'osvirt-bench-test-'));
  });
  after(() => {
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it('runs every section and writes the JSON, the report and the plots', async () => {
    const child = spawn(process.execPath, [repoPath('dist', 'bench', 'main.js'), '--quick', '--out', out, '--name', 'smoke'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
    assert.equal(code, 0, `bench exited ${code}:\n${stderr.slice(-4000)}`);

    const json = path.join(out, 'smoke.json');
    assert.ok(existsSync(json), `no ${json}; stdout: ${stdout}`);
    const res = JSON.parse(readFileSync(json, 'utf8')) as {
      schema: number;
      mode: string;
      workDir: string;
      host: { kernel: string; cpus: number };
      config: { quick: boolean };
      sections: Record<string, { status: string; reason?: string; data?: Record<string, unknown> }>;
    };
    assert.equal(res.schema, 1);
    assert.equal(res.mode, 'quick');
    assert.equal(res.config.quick, true);
    assert.ok(res.host.kernel && res.host.cpus > 0);
    assert.deepEqual(Object.keys(res.sections).sort(), [...SECTIONS].sort());
    for (const id of SECTIONS) {
      const s = res.sections[id]!;
      assert.ok(['ok', 'partial', 'skipped'].includes(s.status), `${id}: ${s.status} ${s.reason ?? ''}`);
    }
    const lc = res.sections['lifecycle']!.data as {
      variants: { id: string; startMs: number[]; stopMs: number[] }[];
      summary: Record<string, { start: { p50: number; p95: number } }>;
    };
    const ov = lc.variants.find((v) => v.id === 'osvirt-none');
    assert.ok(ov && ov.startMs.length > 0 && ov.stopMs.length === ov.startMs.length, 'osvirt start/stop samples recorded');
    assert.ok(lc.summary['osvirt-none']?.start.p50 !== undefined && lc.summary['osvirt-veth'] !== undefined);
    for (const id of ['control-plane', 'scale', 'images']) assert.ok(res.sections[id]!.data, `${id} has data`);
    // The image section's registry CA went with it: /etc/containers/certs.d holds nothing of the run.
    const certs = '/etc/containers/certs.d';
    assert.deepEqual(existsSync(certs) ? readdirSync(certs).filter((d) => d.startsWith('127.0.0.1:')) : [], [], "the bench registry's CA left behind");

    const md = readFileSync(path.join(out, 'smoke.md'), 'utf8');
    for (const h of [
      '## Summary',
      '## 1. Start latency',
      '## 3. Checkpoint',
      '## 4. Control plane',
      '## 5. Scale',
      '## 6. Network',
      '## 7. CPU overhead',
      '## 8. Booting a distribution',
      '## 9. OCI images',
    ])
      assert.ok(md.includes(h), `report lacks "${h}"`);
    const svgs = readdirSync(out).filter((f) => f.endsWith('.svg'));
    assert.ok(svgs.includes('smoke-start.svg') && svgs.includes('smoke-stop.svg'), `plots: ${svgs.join(', ')}`);
    for (const f of svgs) assert.match(readFileSync(path.join(out, f), 'utf8'), /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);

    // Everything it made is gone: its work dir, its bridge, any process of its run.
    assert.ok(res.workDir && !existsSync(res.workDir), `work dir ${res.workDir} left behind`);
    assert.ok(!existsSync(`/sys/class/net/obn${(child.pid ?? 0) % 100000}`), 'bench bridge left behind');
    const nft = ['/usr/sbin/nft', '/sbin/nft'].find((p) => existsSync(p));
    if (nft)
      assert.doesNotMatch(
        execFileSync(nft, ['list', 'tables'], { encoding: 'utf8' }),
        new RegExp(`osvirt-obn${(child.pid ?? 0) % 100000}\\b`),
        "the bench bridge's NAT table left behind",
      );
    const leftovers = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(res.workDir);
        } catch {
          return false;
        }
      });
    assert.deepEqual(leftovers, [], 'processes of the bench run are still alive');
  });
});
