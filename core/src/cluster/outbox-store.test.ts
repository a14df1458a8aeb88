// LevelOutboxStore on a real level database in a temp dir: what survives a reopen, writes applied in call
// order, and stored records that do not parse are dropped rather than trusted.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { encode } from '@meshrun/protocol';
import { Level } from 'level';
import { LevelOutboxStore } from './outbox-store.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function openDb(dir?: string): Promise<{ db: Level<string, Uint8Array>; dir: string }> {
  const where = dir ?? (await mkdtemp(join(tmpdir(), 'meshrun-outbox-')));
  if (!dir) dirs.push(where);
  return {
    db: new Level<string, Uint8Array>(where, { keyEncoding: 'utf8', valueEncoding: 'view' }),
    dir: where,
  };
}

const finished = (taskId: string, attempt = 1) => ({
  type: 'taskFinished' as const,
  taskId,
  attempt,
  outcome: 'succeeded' as const,
  exitCode: 0,
  stdoutTail: 'done\n',
  at: 1_700_000_000_000,
});

describe('LevelOutboxStore', () => {
  it('keeps reports across a reopen, and forgets deleted ones', async () => {
    const { db, dir } = await openDb();
    const store = new LevelOutboxStore(db);
    await store.put(finished('job1/0'));
    await store.put({
      type: 'requeue',
      taskId: 'job1/1',
      attempt: 2,
      reason: 'node stopping',
      neverStarted: true,
      at: 1,
    });
    await store.put(finished('job1/2'));
    await store.delete('job1/2');
    await db.close();

    const again = await openDb(dir);
    const { reports, discarded } = await new LevelOutboxStore(again.db).load();
    assert.equal(discarded, 0);
    assert.deepEqual(reports.map((r) => [r.type, r.taskId, r.attempt]).sort(), [
      ['requeue', 'job1/1', 2],
      ['taskFinished', 'job1/0', 1],
    ]);
    const result = reports.find((r) => r.type === 'taskFinished');
    assert.equal(result?.type === 'taskFinished' && result.stdoutTail, 'done\n');
    await again.db.close();
  });

  it('applies writes in the order they were asked for (a put then its delete never swap)', async () => {
    const { db } = await openDb();
    const store = new LevelOutboxStore(db);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      writes.push(store.put(finished(`job2/${i}`)));
      if (i % 2 === 0) writes.push(store.delete(`job2/${i}`));
    }
    await Promise.all(writes);
    const { reports } = await store.load();
    assert.equal(reports.length, 100);
    assert.ok(reports.every((r) => Number(r.taskId.split('/')[1]) % 2 === 1));
    await db.close();
  });

  it('drops stored records that are not valid reports, or sit under another task id', async () => {
    const { db } = await openDb();
    const store = new LevelOutboxStore(db);
    await store.put(finished('job3/0'));
    await db.put('jobs/outbox/job3/1', new Uint8Array([0xff, 0x00, 0x13]));
    await db.put('jobs/outbox/job3/2', encode({ type: 'taskFinished', taskId: 'job3/2', attempt: -4 }));
    await db.put('jobs/outbox/job3/3', encode(finished('job3/9')));
    const { reports, discarded } = await store.load();
    assert.deepEqual(
      reports.map((r) => r.taskId),
      ['job3/0'],
    );
    assert.equal(discarded, 3);
    assert.equal((await store.load()).discarded, 0, 'the bad records were deleted');
    await db.close();
  });
});
