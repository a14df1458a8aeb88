/** Unit tests of the small pure modules: quorum, progress/inflights, log, memory storage. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RaftLog } from './log.ts';
import { Inflights, Progress } from './progress.ts';
import { committedIndex, quorumSize, voteResult } from './quorum.ts';
import { CompactedError, MemoryStorage, UnavailableError } from './storage.ts';
import type { Entry } from './types.ts';

const e = (index: number, term: number): Entry => ({ index, term, type: 'normal', data: new Uint8Array(4) });

describe('quorum', () => {
  it('quorum size is a strict majority', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(quorumSize), [1, 2, 2, 3, 3, 4, 4]);
  });

  it('committed index is the highest index a majority has (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(100), { minLength: 1, maxLength: 9 }), (matches) => {
        const ids = matches.map((_, i) => `n${i}`);
        const ci = committedIndex(ids, (id) => matches[Number(id.slice(1))]);
        const atLeast = (x: number) => matches.filter((m) => m >= x).length;
        assert.ok(atLeast(ci) >= quorumSize(ids.length));
        assert.ok(atLeast(ci + 1) < quorumSize(ids.length));
      }),
    );
  });

  it('vote result: won, lost, pending', () => {
    const v = ['a', 'b', 'c'];
    assert.equal(voteResult(v, new Map([['a', true]])), 'pending');
    assert.equal(
      voteResult(
        v,
        new Map([
          ['a', true],
          ['b', true],
        ]),
      ),
      'won',
    );
    assert.equal(
      voteResult(
        v,
        new Map([
          ['a', true],
          ['b', false],
          ['c', false],
        ]),
      ),
      'lost',
    );
    assert.equal(
      voteResult(
        v,
        new Map([
          ['x', true],
          ['y', true],
        ]),
      ),
      'pending',
      'non-voters do not count',
    );
  });
});

describe('progress', () => {
  it('inflights are bounded by count and bytes and freed in order', () => {
    const inf = new Inflights(3, 100);
    inf.add(1, 10);
    inf.add(2, 10);
    assert.equal(inf.full(), false);
    inf.add(3, 10);
    assert.equal(inf.full(), true);
    inf.freeLE(2);
    assert.equal(inf.count(), 1);
    inf.add(4, 95);
    assert.equal(inf.full(), true, 'byte bound');
    inf.freeFirstOne();
    assert.equal(inf.count(), 1);
  });

  it('probe sends one append at a time; replicate pipelines until the window is full', () => {
    const pr = new Progress(5, false, 2, 0);
    assert.equal(pr.isPaused(), false);
    pr.sentEntries(1, 5, 10);
    assert.equal(pr.isPaused(), true, 'probe waits for the answer');
    assert.equal(pr.maybeUpdate(5), true);
    pr.becomeReplicate();
    assert.equal(pr.next, 6);
    pr.sentEntries(2, 7, 20);
    pr.sentEntries(1, 8, 10);
    assert.equal(pr.next, 9);
    assert.equal(pr.isPaused(), true, 'window of 2 is full');
    pr.inflights.freeLE(7);
    assert.equal(pr.isPaused(), false);
  });

  it('rejections: stale ones are ignored, fresh ones move next back (not below match+1)', () => {
    const pr = new Progress(10, false, 4, 0);
    pr.match = 3;
    assert.equal(pr.maybeDecrTo(5, 2), false, 'rejects an append we did not send (next-1 = 9)');
    assert.equal(pr.maybeDecrTo(9, 2), true);
    assert.equal(pr.next, 4, 'never below match + 1');
    pr.becomeReplicate();
    assert.equal(pr.maybeDecrTo(2, 0), false, 'stale in replicate (<= match)');
  });

  it('leaving snapshot state resumes after the snapshot', () => {
    const pr = new Progress(3, false, 4, 0);
    pr.becomeSnapshot(50);
    assert.equal(pr.isPaused(), true);
    pr.becomeProbe();
    assert.equal(pr.next, 51);
  });
});

describe('log', () => {
  it('spans stable and unstable entries; conflicts truncate the unstable tail', () => {
    const st = new MemoryStorage();
    st.append([e(1, 1), e(2, 1), e(3, 2)]);
    const log = new RaftLog(st, 1 << 20);
    assert.equal(log.lastIndex(), 3);
    log.append([e(4, 2), e(5, 2)]);
    assert.equal(log.lastIndex(), 5);
    assert.deepEqual(
      log.slice(2, 6, 1 << 20).map((x) => [x.index, x.term]),
      [
        [2, 1],
        [3, 2],
        [4, 2],
        [5, 2],
      ],
    );
    assert.equal(log.maybeAppend(3, 2, 3, [e(4, 3)]), 4);
    assert.equal(log.lastIndex(), 4);
    assert.equal(log.term(4), 3);
    assert.equal(log.committed, 3);
    assert.equal(log.maybeAppend(4, 2, 4, [e(5, 3)]), undefined, 'mismatching prev term');
  });

  it('refuses to overwrite committed entries', () => {
    const st = new MemoryStorage();
    st.append([e(1, 1), e(2, 1)]);
    const log = new RaftLog(st, 1 << 20);
    log.commitTo(2);
    assert.throws(() => log.maybeAppend(1, 1, 2, [e(2, 5)]), /conflicts with committed/);
  });

  it('only commits entries of the current term by counting (§5.4.2)', () => {
    const st = new MemoryStorage();
    st.append([e(1, 1), e(2, 2)]);
    const log = new RaftLog(st, 1 << 20);
    assert.equal(log.maybeCommit(2, 3), false);
    assert.equal(log.maybeCommit(2, 2), true);
  });

  it('findConflictByTerm jumps back over a whole term', () => {
    const st = new MemoryStorage();
    st.append([e(1, 1), e(2, 1), e(3, 3), e(4, 3), e(5, 3)]);
    const log = new RaftLog(st, 1 << 20);
    assert.deepEqual(log.findConflictByTerm(5, 2), [2, 1]);
    assert.deepEqual(log.findConflictByTerm(5, 3), [5, 3]);
  });
});

describe('MemoryStorage', () => {
  it('compaction, snapshot and size-limited reads', () => {
    const st = new MemoryStorage();
    st.append([e(1, 1), e(2, 1), e(3, 2), e(4, 2)]);
    st.createSnapshot(3, { voters: ['a'], learners: [] }, new Uint8Array([1]));
    st.compact(2);
    assert.equal(st.firstIndex(), 3);
    assert.equal(st.term(2), 1);
    assert.throws(() => st.term(1), CompactedError);
    assert.throws(() => st.entries(2, 4, 100), CompactedError);
    assert.throws(() => st.entries(3, 6, 100), UnavailableError);
    assert.equal(st.entries(3, 5, 1).length, 1, 'at least one entry even when over the limit');
    assert.equal(st.entries(3, 5, 1000).length, 2);
    assert.deepEqual(st.initialState().confState, { voters: ['a'], learners: [] });
  });
});

describe('message checks', () => {
  it('rejects structurally inconsistent appends and snapshots', async () => {
    const { checkMessage } = await import('./rawnode.ts');
    const base = { type: 'app' as const, from: 'a', to: 'b', term: 3, index: 5, logTerm: 2, commit: 0 };
    assert.equal(checkMessage({ ...base, entries: [e(6, 2), e(7, 3)] }), null);
    assert.match(checkMessage({ ...base, entries: [e(7, 2)] }) ?? '', /contiguous/);
    assert.match(checkMessage({ ...base, entries: [e(6, 3), e(7, 2)] }) ?? '', /terms/);
    assert.match(checkMessage({ ...base, entries: [e(6, 4)] }) ?? '', /terms/);
    const snap = { index: 0, term: 1, conf: { voters: ['a'], learners: [] }, data: new Uint8Array(0) };
    assert.notEqual(checkMessage({ type: 'snapshot', from: 'a', to: 'b', term: 3, snapshot: snap }), null);
  });
});
