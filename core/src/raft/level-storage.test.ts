import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { Level } from 'level';
import { entryKey, LevelRaftStorage, RaftStorageCorruptError } from './level-storage.ts';
import { MemoryStorage } from './storage.ts';
import type { Entry } from './types.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function freshDb(): Promise<{ dir: string; db: Level<string, Uint8Array> }> {
  const dir = await mkdtemp(join(tmpdir(), 'raft-level-'));
  dirs.push(dir);
  return { dir, db: new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' }) };
}

function ents(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++)
    out.push({
      index: i,
      term,
      type: i % 5 === 0 ? 'conf' : 'normal',
      data: new TextEncoder().encode(`d${i}`),
    });
  return out;
}

describe('LevelRaftStorage', () => {
  it('keeps hard state, entries and snapshot across a restart', async () => {
    const { dir, db } = await freshDb();
    const s = await LevelRaftStorage.open(db);
    assert.equal(s.lastIndex(), 0);
    await s.save({ term: 2, vote: 'n1', commit: 3 }, ents(1, 10, 2));
    await s.save({ term: 3, vote: null, commit: 8 }, ents(9, 12, 3)); // truncates 9..10 of term 2
    await s.createSnapshot(6, { voters: ['n1', 'n2'], learners: ['n3'] }, new Uint8Array([7, 7]));
    await s.compact(4);
    await db.close();

    const db2 = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    const s2 = await LevelRaftStorage.open(db2);
    assert.deepEqual(s2.initialState(), {
      hardState: { term: 3, vote: null, commit: 8 },
      confState: { voters: ['n1', 'n2'], learners: ['n3'] },
    });
    assert.equal(s2.firstIndex(), 5);
    assert.equal(s2.lastIndex(), 12);
    assert.equal(s2.term(8), 2);
    assert.equal(s2.term(9), 3);
    const got = s2.entries(5, 13, Number.MAX_SAFE_INTEGER);
    assert.deepEqual(
      got.map((e) => [e.index, e.term, e.type, new TextDecoder().decode(e.data)]),
      [...ents(5, 8, 2), ...ents(9, 12, 3)].map((e) => [
        e.index,
        e.term,
        e.type,
        new TextDecoder().decode(e.data),
      ]),
    );
    assert.deepEqual([...s2.snapshot().data], [7, 7]);
    assert.equal(s2.snapshot().index, 6);
    await db2.close();
  });

  it('installing a snapshot from the leader replaces the log', async () => {
    const { dir, db } = await freshDb();
    const s = await LevelRaftStorage.open(db);
    await s.save({ term: 1, vote: null, commit: 2 }, ents(1, 5, 1));
    const snap = { index: 20, term: 4, conf: { voters: ['a'], learners: [] }, data: new Uint8Array([1]) };
    await s.save({ term: 4, vote: null, commit: 20 }, ents(21, 22, 4), snap);
    await db.close();
    const db2 = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    const s2 = await LevelRaftStorage.open(db2);
    assert.equal(s2.firstIndex(), 21);
    assert.equal(s2.lastIndex(), 22);
    assert.equal(s2.term(20), 4);
    let n = 0;
    for await (const _ of db2.keys({ gte: 'e', lt: 'e~' })) n++;
    assert.equal(n, 2, 'old entries were deleted');
    await db2.close();
  });

  it('detects a flipped byte in an entry', async () => {
    const { dir, db } = await freshDb();
    const s = await LevelRaftStorage.open(db);
    await s.save({ term: 1, vote: null, commit: 0 }, ents(1, 5, 1));
    const rec = (await db.get(entryKey(3))) as Uint8Array;
    const bad = new Uint8Array(rec);
    bad[bad.length - 1] ^= 0x01;
    await db.put(entryKey(3), bad);
    await db.close();
    const db2 = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    await assert.rejects(
      LevelRaftStorage.open(db2),
      (e: unknown) =>
        e instanceof RaftStorageCorruptError && /checksum/.test(e.message) && e.key === entryKey(3),
    );
    await db2.close();
  });

  it('detects a flipped byte in the hard state', async () => {
    const { dir, db } = await freshDb();
    const s = await LevelRaftStorage.open(db);
    await s.save({ term: 9, vote: 'x', commit: 0 }, ents(1, 2, 1));
    const rec = new Uint8Array((await db.get('hs')) as Uint8Array);
    rec[6] ^= 0x40;
    await db.put('hs', rec);
    await db.close();
    const db2 = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    await assert.rejects(LevelRaftStorage.open(db2), RaftStorageCorruptError);
    await db2.close();
  });

  it('detects a missing entry in the middle and at the end, and a truncated record', async () => {
    for (const [what, mutate] of [
      ['middle', async (db: Level<string, Uint8Array>) => db.del(entryKey(3))],
      ['end', async (db: Level<string, Uint8Array>) => db.del(entryKey(5))],
      ['truncated', async (db: Level<string, Uint8Array>) => db.put(entryKey(2), new Uint8Array([1, 2]))],
    ] as const) {
      const { dir, db } = await freshDb();
      const s = await LevelRaftStorage.open(db);
      await s.save({ term: 1, vote: null, commit: 1 }, ents(1, 5, 1));
      await mutate(db);
      await db.close();
      const db2 = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
      await assert.rejects(LevelRaftStorage.open(db2), RaftStorageCorruptError, what);
      await db2.close();
    }
  });

  it('works inside a sublevel of a database opened with other encodings', async () => {
    const { db } = await freshDb();
    const jsonDb = new Level<string, unknown>(`${db.location}-json`, { valueEncoding: 'json' });
    dirs.push(`${db.location}-json`);
    const sub = jsonDb.sublevel('raft');
    const s = await LevelRaftStorage.open(sub);
    await s.save({ term: 1, vote: null, commit: 1 }, ents(1, 3, 1));
    const s2 = await LevelRaftStorage.open(sub);
    assert.equal(s2.lastIndex(), 3);
    await jsonDb.close();
    await db.close();
  });

  it('behaves like MemoryStorage over random save/snapshot/compact sequences, also after reopening (property)', async () => {
    type Op =
      | { kind: 'append'; back: number; count: number; termBump: boolean }
      | { kind: 'snapshot'; back: number }
      | { kind: 'compact'; back: number }
      | { kind: 'install'; ahead: number }
      | { kind: 'reopen' };
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      fc.record({
        kind: fc.constant('append' as const),
        back: fc.nat(3),
        count: fc.integer({ min: 1, max: 4 }),
        termBump: fc.boolean(),
      }),
      fc.record({ kind: fc.constant('snapshot' as const), back: fc.nat(3) }),
      fc.record({ kind: fc.constant('compact' as const), back: fc.nat(3) }),
      fc.record({ kind: fc.constant('install' as const), ahead: fc.integer({ min: 1, max: 5 }) }),
      fc.constant({ kind: 'reopen' as const }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
        const { dir, db: db0 } = await freshDb();
        let db = db0;
        let s = await LevelRaftStorage.open(db);
        const model = new MemoryStorage();
        let term = 1;
        const conf = { voters: ['a'], learners: [] as string[] };
        try {
          for (const op of ops) {
            if (op.kind === 'append') {
              if (op.termBump) term++;
              const start = Math.max(model.firstIndex(), model.lastIndex() + 1 - op.back);
              const es = ents(start, start + op.count - 1, term);
              await s.save({ term, vote: null, commit: 0 }, es);
              model.append(es);
            } else if (op.kind === 'snapshot') {
              const idx = model.lastIndex() - op.back;
              if (idx <= model.snapshot().index || idx < model.firstIndex()) continue;
              await s.createSnapshot(idx, conf, new Uint8Array([idx & 255]));
              model.createSnapshot(idx, conf, new Uint8Array([idx & 255]));
            } else if (op.kind === 'compact') {
              const idx = model.snapshot().index - op.back;
              if (idx < model.firstIndex()) continue;
              await s.compact(idx);
              model.compact(idx);
            } else if (op.kind === 'install') {
              term++;
              const snap = { index: model.lastIndex() + op.ahead, term, conf, data: new Uint8Array([9]) };
              await s.save({ term, vote: null, commit: snap.index }, [], snap);
              model.applySnapshot(snap);
              model.setHardState({ term, vote: null, commit: snap.index });
            } else {
              await db.close();
              db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
              s = await LevelRaftStorage.open(db);
            }
            assert.equal(s.firstIndex(), model.firstIndex());
            assert.equal(s.lastIndex(), model.lastIndex());
            assert.equal(s.snapshot().index, model.snapshot().index);
            for (let i = model.firstIndex() - 1; i <= model.lastIndex(); i++)
              assert.equal(s.term(i), model.term(i), `term(${i})`);
          }
          await db.close();
          db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
          const re = await LevelRaftStorage.open(db);
          assert.equal(re.firstIndex(), model.firstIndex());
          assert.equal(re.lastIndex(), model.lastIndex());
          if (model.lastIndex() >= model.firstIndex()) {
            const a = re.entries(model.firstIndex(), model.lastIndex() + 1, Number.MAX_SAFE_INTEGER);
            const b = model.entries(model.firstIndex(), model.lastIndex() + 1, Number.MAX_SAFE_INTEGER);
            assert.deepEqual(
              a.map((x) => [x.index, x.term, x.type, [...x.data]]),
              b.map((x) => [x.index, x.term, x.type, [...x.data]]),
            );
          }
        } finally {
          await db.close();
        }
      }),
      { numRuns: 40, seed: 20260101 },
    );
  });
});
