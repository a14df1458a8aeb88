import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Level } from 'level';
import { TaskLogStore } from './log-store.ts';

const text = (d: Uint8Array) => Buffer.from(d).toString('utf8');

describe('TaskLogStore (level on disk)', () => {
  let dir: string;
  let db: Level<string, string>;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshrun-logstore-'));
    db = new Level<string, string>(dir);
    await db.open();
  });
  after(async () => {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('stores output in order per task and reads it back after the task ended', async () => {
    const store = new TaskLogStore(db);
    await Promise.all([
      store.append('t-a', 'stdout', Buffer.from('one\n')),
      store.append('t-a', 'stderr', Buffer.from('two\n')),
      store.append('t-b', 'stdout', Buffer.from('other task\n')),
      store.append('t-a', 'stdout', Buffer.from('three\n')),
    ]);
    await store.end('t-a');
    const page = await store.read('t-a');
    assert.deepEqual(
      page.entries.map((e) => [e.seq, e.stream, text(e.data)]),
      [
        [0, 'stdout', 'one\n'],
        [1, 'stderr', 'two\n'],
        [2, 'stdout', 'three\n'],
      ],
    );
    assert.equal(page.ended, true);
    assert.equal(page.droppedBytes, 0);
    const from = await store.read('t-a', { fromSeq: 2 });
    assert.deepEqual(
      from.entries.map((e) => text(e.data)),
      ['three\n'],
    );
    assert.equal((await store.read('t-b')).entries.length, 1);
    await assert.rejects(store.append('t-a', 'stdout', Buffer.from('late')), /ended/);
  });

  it('keeps the tail under the per-task cap and counts the dropped bytes', async () => {
    const store = new TaskLogStore(db, { maxBytesPerTask: 10 });
    for (let i = 0; i < 6; i++) await store.append('t-cap', 'stdout', Buffer.from(`ab${i}`)); // 3 bytes each
    const page = await store.read('t-cap');
    assert.deepEqual(
      page.entries.map((e) => text(e.data)),
      ['ab3', 'ab4', 'ab5'],
    );
    assert.equal(page.droppedBytes, 9);
    assert.equal(page.firstSeq, 3);
    // One chunk larger than the cap: only its tail survives.
    await store.append('t-cap', 'stderr', Buffer.from('0123456789ABCDEF'));
    const after = await store.read('t-cap');
    assert.deepEqual(
      after.entries.map((e) => text(e.data)),
      ['6789ABCDEF'],
    );
    assert.equal(after.droppedBytes, 9 + 9 + 6);
    const meta = await store.meta('t-cap');
    assert.equal(meta?.bytes, 10);
  });

  it('survives reopening the database', async () => {
    const store = new TaskLogStore(db);
    await store.append('t-persist', 'stdout', Buffer.from('kept'));
    await store.end('t-persist');
    await db.close();
    await db.open();
    const page = await new TaskLogStore(db).read('t-persist');
    assert.equal(text(page.entries[0].data), 'kept');
    assert.equal(page.ended, true);
  });

  it('follow() yields live entries and ends when the task ends', async () => {
    const store = new TaskLogStore(db);
    const seen: string[] = [];
    const following = (async () => {
      for await (const e of store.follow('t-live')) seen.push(text(e.data));
    })();
    await store.append('t-live', 'stdout', Buffer.from('a'));
    await new Promise((r) => setTimeout(r, 20));
    await store.append('t-live', 'stdout', Buffer.from('b'));
    await store.append('t-live', 'stderr', Buffer.from('c'));
    await store.end('t-live');
    await following;
    assert.deepEqual(seen, ['a', 'b', 'c']);
  });

  it('ends that arrive together share database writes, and each task still reads back ended', async () => {
    const store = new TaskLogStore(db);
    const writes: number[] = [];
    const onWrite = (ops: unknown[]) => writes.push(ops.length);
    db.on('write', onWrite);
    const ids = Array.from({ length: 200 }, (_, i) => `t-end-${i}`);
    try {
      for (const id of ids) store.markFresh(id);
      await Promise.all(ids.map((id) => store.end(id)));
    } finally {
      db.off('write', onWrite);
    }
    for (const id of ids) assert.equal((await store.read(id)).ended, true, `${id} reads back ended`);
    assert.equal(
      writes.reduce((a, b) => a + b, 0),
      ids.length,
      'one meta record per task',
    );
    assert.ok(
      writes.length <= 3,
      `200 ends took ${writes.length} writes (the first alone, the rest grouped)`,
    );
    // A follower of one of them ends at once.
    for await (const _ of store.follow(ids[7]!)) assert.fail('no entries expected');
  });

  it('follow() stops on abort, and delete() removes a task', async () => {
    const store = new TaskLogStore(db);
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 50);
    for await (const _ of store.follow('t-never', { signal: ac.signal })) assert.fail('no entries expected');
    assert.ok(Date.now() - started < 900, 'abort ended the wait promptly');
    await store.append('t-del', 'stdout', Buffer.from('x'));
    await store.delete('t-del');
    assert.equal(await store.meta('t-del'), null);
    assert.equal((await store.read('t-del')).entries.length, 0);
  });
});

describe('TaskLogStore meta kept in memory while a task writes', () => {
  it('a fresh task stores output and its end without reading back, and readers see the same as before', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'logstore-fresh-'));
    const db = new Level<string, string>(dir);
    await db.open();
    const store = new TaskLogStore(db);
    store.markFresh('t1');
    await store.append('t1', 'stdout', new TextEncoder().encode('a'));
    await store.append('t1', 'stderr', new TextEncoder().encode('b'));
    await store.end('t1');
    const ended = (chunks: number) => ({
      firstSeq: 0,
      nextSeq: chunks,
      bytes: chunks,
      droppedBytes: 0,
      ended: true,
    });
    assert.deepEqual(await store.meta('t1'), ended(2));
    // No output at all: still an ended log.
    store.markFresh('t2');
    await store.end('t2');
    assert.equal((await store.meta('t2'))?.ended, true);
    // A later attempt replaces the log; its meta starts over.
    await store.delete('t1');
    await store.append('t1', 'stdout', new TextEncoder().encode('c'));
    await store.end('t1');
    assert.deepEqual(await store.meta('t1'), ended(1));
    const read = await store.read('t1', { fromSeq: 0 });
    assert.deepEqual(
      read.entries.map((e) => new TextDecoder().decode(e.data)),
      ['c'],
    );
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });
});
