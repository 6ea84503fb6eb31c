// The id range allocator on its own (no root, no daemon): subordinate ranges
// as /etc/subuid gives them, blocks that never overlap, and the table's
// rebuild from the containers' own records.
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_SUBID_RANGE, firstFree, IdAllocator, IDS_PER_CONTAINER, parseSubid } from '../drivers/lxc/idmap';

describe('id range allocator', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'osvirt-idmap-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("reads root's ranges from subuid-style lines, by name or uid, skipping others and junk", () => {
    const text = '# comment\nalice:100000:65536\nroot:2000000:131072\n0:5000000:65536\nroot:bad:1\n';
    assert.deepEqual(parseSubid(text, 'root', 0), [
      { start: 2000000, count: 131072 },
      { start: 5000000, count: 65536 },
    ]);
    assert.deepEqual(parseSubid('', 'root', 0), []);
  });

  it('hands out whole, non-overlapping blocks, lowest first, and says when none is left', async () => {
    const subuid = path.join(dir, 'subuid');
    writeFileSync(subuid, `root:3000000:${3 * IDS_PER_CONTAINER}\n`);
    const ids = new IdAllocator(path.join(dir, 'idmap.json'), subuid, subuid);
    const a = await ids.allocate('a');
    const b = await ids.allocate('b');
    assert.deepEqual(a, { uid: 3000000, gid: 3000000, size: IDS_PER_CONTAINER });
    assert.equal(b.uid, 3000000 + IDS_PER_CONTAINER);
    assert.deepEqual(await ids.allocate('a'), a, 'a container keeps its block');
    await ids.release('a');
    assert.equal((await ids.allocate('c')).uid, 3000000, 'a released block is reused');
    await ids.allocate('d');
    await assert.rejects(ids.allocate('e'), /no free block of 65536 uids/);
    assert.deepEqual(Object.keys(JSON.parse(readFileSync(path.join(dir, 'idmap.json'), 'utf8'))).sort(), ['b', 'c', 'd']);
  });

  it('never hands out a block that a recorded range overlaps, aligned or not', () => {
    const blocks = [0, 1, 2, 3].map((i) => 1000000 + i * IDS_PER_CONTAINER);
    assert.equal(firstFree(blocks, []), blocks[0]);
    // A spec's own map (lxc.uid_map) straddling the first two blocks.
    assert.equal(firstFree(blocks, [{ start: 1000000 + 100, end: 1000000 + IDS_PER_CONTAINER + 1 }]), blocks[2]);
    assert.equal(
      firstFree(blocks, [
        { start: blocks[1]!, end: blocks[1]! + IDS_PER_CONTAINER },
        { start: 0, end: 1000001 },
      ]),
      blocks[2],
    );
    assert.equal(
      firstFree(
        blocks,
        blocks.map((b) => ({ start: b, end: b + IDS_PER_CONTAINER })),
      ),
      undefined,
    );
  });

  it("uses Incus's default range when no subuid line names root, and restores lost records", async () => {
    const none = path.join(dir, 'missing');
    const ids = new IdAllocator(path.join(dir, 'idmap.json'), none, none);
    assert.equal((await ids.allocate('x')).uid, DEFAULT_SUBID_RANGE.start);
    assert.match(ids.source, /built-in default/);
    await ids.restore({
      y: { uid: DEFAULT_SUBID_RANGE.start + IDS_PER_CONTAINER, gid: DEFAULT_SUBID_RANGE.start + IDS_PER_CONTAINER, size: IDS_PER_CONTAINER },
    });
    assert.equal((await ids.allocate('z')).uid, DEFAULT_SUBID_RANGE.start + 2 * IDS_PER_CONTAINER, 'a restored record is not handed out again');
  });
});
