import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decode, encode, ProtocolError } from './codec.ts';
import { MAX_RAFT_ENTRIES_PER_MESSAGE, MAX_RAFT_NODE_ID_LENGTH, RaftMessageSchema } from './raft.ts';

const entry = (i: number) => ({
  term: 2,
  index: i,
  type: 'normal' as const,
  data: new Uint8Array([i & 255, 1, 2]),
});

describe('RaftMessageSchema', () => {
  it('round-trips every message type through CBOR, keeping bytes as Uint8Array', () => {
    const b = { from: '12D3KooWA', to: '12D3KooWB', term: 7 };
    const msgs = [
      { type: 'app', ...b, index: 3, logTerm: 2, entries: [entry(4), entry(5)], commit: 3 },
      { type: 'appResp', ...b, index: 5, reject: false, rejectHint: 0, logTerm: 0 },
      { type: 'vote', ...b, index: 9, logTerm: 6, transfer: false },
      { type: 'preVote', ...b, index: 9, logTerm: 6, transfer: true },
      { type: 'voteResp', ...b, reject: true },
      { type: 'preVoteResp', ...b, reject: false },
      { type: 'heartbeat', ...b, commit: 4, ctx: new Uint8Array([1]) },
      { type: 'heartbeatResp', ...b, ctx: new Uint8Array(0) },
      {
        type: 'snapshot',
        ...b,
        snapshot: {
          index: 10,
          term: 3,
          conf: { voters: ['a', 'b'], learners: [] },
          data: new Uint8Array([9, 9]),
        },
      },
      { type: 'timeoutNow', ...b },
      { type: 'transferLeader', ...b, term: 0, transferee: 'c' },
      { type: 'readIndex', ...b, term: 0, ctx: new Uint8Array([5]) },
      { type: 'readIndexResp', ...b, ctx: new Uint8Array([5]), index: 10 },
      {
        type: 'prop',
        ...b,
        term: 0,
        entries: [{ term: 0, index: 0, type: 'conf' as const, data: new Uint8Array([1]) }],
      },
    ];
    for (const m of msgs) {
      const back = decode(RaftMessageSchema, encode(m));
      assert.deepEqual(back, m, m.type);
    }
  });

  it('rejects unknown types, bad numbers, oversized ids and too many entries', () => {
    const b = { from: 'a', to: 'b', term: 1 };
    const bad = [
      { type: 'bogus', ...b },
      { type: 'timeoutNow', ...b, term: -1 },
      { type: 'timeoutNow', ...b, term: 1.5 },
      { type: 'timeoutNow', ...b, from: 'x'.repeat(MAX_RAFT_NODE_ID_LENGTH + 1) },
      { type: 'heartbeat', ...b, commit: 1, ctx: new Uint8Array(1000) },
      { type: 'heartbeat', ...b, commit: 1, ctx: 'not bytes' },
      {
        type: 'prop',
        ...b,
        entries: Array.from({ length: MAX_RAFT_ENTRIES_PER_MESSAGE + 1 }, (_, i) => entry(i)),
      },
    ];
    for (const m of bad) {
      assert.throws(
        () => decode(RaftMessageSchema, encode(m)),
        (e: unknown) => e instanceof ProtocolError && e.code === 'INVALID',
      );
    }
  });
});
