// TaskHistory on a real level database in a temp dir: what is kept, what survives a reopen, and that a save
// writes what was added rather than the whole history.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Level } from 'level';
import { type HistoryRecord, LEGACY_HISTORY_KEY, TaskHistory } from './task-history.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function openDb(): Promise<{ db: Level<string, Uint8Array>; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'meshrun-history-'));
  dirs.push(dir);
  return { db: new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' }), dir };
}

function rec(i: number): HistoryRecord {
  return {
    taskId: `j1/${i}`,
    jobId: 'j1',
    name: 'noop',
    submitter: 'alice',
    image: 'wasm',
    state: 'succeeded',
    exitCode: 0,
    startedAt: 1000 + i,
    finishedAt: 2000 + i,
    cpuMs: i,
  };
}

async function storedKeys(db: Level<string, Uint8Array>): Promise<string[]> {
  const keys: string[] = [];
  for await (const k of db.keys({ gte: 'dashboard/history/', lt: 'dashboard/history/~' })) keys.push(k);
  return keys;
}

describe('TaskHistory', () => {
  it('keeps the newest max records, survives a reopen, and deletes what falls out', async () => {
    const { db, dir } = await openDb();
    const h = await TaskHistory.open(db, 50, 10_000);
    for (let i = 0; i < 130; i++) h.add(rec(i));
    assert.deepEqual(
      h.recent(3).map((r) => r.taskId),
      ['j1/129', 'j1/128', 'j1/127'],
    );
    assert.equal(h.all().length, 50);
    assert.equal(h.all()[0]!.taskId, 'j1/80');
    assert.equal(h.recent(1000).length, 50);
    await h.flush();
    assert.equal((await storedKeys(db)).length, 50, 'the database holds no more than max records');
    await db.close();

    const again = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    const h2 = await TaskHistory.open(again, 50, 10_000);
    assert.deepEqual(
      h2.all().map((r) => r.taskId),
      Array.from({ length: 50 }, (_, k) => `j1/${80 + k}`),
    );
    h2.add(rec(130));
    await h2.flush();
    const keys = await storedKeys(again);
    assert.equal(keys.length, 50);
    assert.ok(keys.at(-1)! > keys[0]!, 'keys sort in the order records came');
    await again.close();
  });

  it('a save writes only the records added since the last one', async () => {
    const { db } = await openDb();
    const h = await TaskHistory.open(db, 10_000, 10_000);
    for (let i = 0; i < 1000; i++) h.add(rec(i));
    await h.flush();
    let written = 0;
    const batch = db.batch.bind(db) as (ops: unknown[]) => Promise<void>;
    (db as unknown as { batch: (ops: unknown[]) => Promise<void> }).batch = (ops) => {
      written += ops.length;
      return batch(ops);
    };
    h.add(rec(1000));
    h.add(rec(1001));
    await h.flush();
    assert.equal(written, 2);
    assert.equal((await storedKeys(db)).length, 1002);
    await db.close();
  });

  it('takes over a history stored the old way, as one JSON value', async () => {
    const { db, dir } = await openDb();
    const old = Array.from({ length: 5 }, (_, i) => rec(i));
    await db.put(LEGACY_HISTORY_KEY, Buffer.from(JSON.stringify(old)));
    const h = await TaskHistory.open(db, 100, 10_000);
    assert.deepEqual(
      h.all().map((r) => r.taskId),
      ['j1/0', 'j1/1', 'j1/2', 'j1/3', 'j1/4'],
    );
    assert.equal(await db.get(LEGACY_HISTORY_KEY), undefined, 'the old value is gone');
    await db.close();
    const again = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    const h2 = await TaskHistory.open(again, 100, 10_000);
    assert.equal(h2.all().length, 5);
    await again.close();
  });
});
