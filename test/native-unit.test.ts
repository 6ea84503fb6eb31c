// The native helper's C unit tests (native/tests: the parsers, and the seccomp
// filter checked against the hand-written BPF it replaced and against the
// kernel in forked children), run through `make -C native check` so that
// `npm test` fails when they do. They need no daemon and no containers.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { repoPath } from '../src/paths';

describe('native helper C unit tests (make -C native check)', function () {
  this.timeout(120000);

  it('builds and passes every test in native/tests', function () {
    const r = spawnSync('make', ['-s', '-C', repoPath('native'), 'check'], { encoding: 'utf8' });
    assert.equal(r.error, undefined, `cannot run make: ${r.error?.message ?? ''}`);
    assert.equal(r.status, 0, `make -C native check failed (exit ${r.status}):\n${r.stdout}${r.stderr}`);
    // The harness prints its summary; a run that tested nothing is no pass.
    const m = /(\d+) tests, 0 failed checks/.exec(r.stdout);
    assert.ok(m && Number(m[1]) > 0, `no test summary in the output:\n${r.stdout}${r.stderr}`);
  });
});
