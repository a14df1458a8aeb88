/**
 * The core's Message type and the wire schema in protocol/src/raft.ts describe the same thing: checked at
 * compile time both ways, and at run time by driving a cluster whose every message goes through
 * CBOR encode -> schema-validated decode.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { decode, encode } from '@meshrun/protocol';
import type { RaftWireMessage } from '../../../protocol/src/raft.ts';
import { RaftMessageSchema } from '../../../protocol/src/raft.ts';
import { RawNode } from './rawnode.ts';
import { Prng } from './sim/prng.ts';
import { MemoryStorage } from './storage.ts';
import type { Message } from './types.ts';
import { decodeConfChange } from './types.ts';

// Compile-time: each type is assignable to the other.
const toWire = (m: Message): RaftWireMessage => m;
const fromWire = (m: RaftWireMessage): Message => m;

it('every message a cluster sends survives encode/decode with RaftMessageSchema', () => {
  const ids = ['a', 'b', 'c'];
  const rng = new Prng(1);
  const nodes = new Map(
    ids.map((id) => {
      const disk = new MemoryStorage();
      const raw = new RawNode({
        id,
        storage: disk,
        electionTick: 10,
        heartbeatTick: 1,
        rand: () => rng.next(),
      });
      raw.bootstrap({ voters: ids, learners: [] });
      return [id, { raw, disk }] as const;
    }),
  );
  const seen = new Set<string>();
  let applied = 0;
  for (let step = 0; step < 300; step++) {
    for (const { raw } of nodes.values()) raw.tick();
    if (step % 20 === 19) {
      const leader = [...nodes.values()].find((n) => n.raw.status().state === 'leader');
      leader?.raw.propose(new Uint8Array([step & 255]));
      const c = nodes.get('c')!.raw;
      if (c.status().lead !== null) c.readIndex(new Uint8Array([1, step & 255]));
    }
    if (step === 150) nodes.get('a')!.raw.transferLeadership('b');
    for (let round = 0; round < 10; round++) {
      const out: Message[] = [];
      for (const { raw, disk } of nodes.values()) {
        while (raw.hasReady()) {
          const rd = raw.ready();
          disk.append(rd.entries);
          if (rd.hardState) disk.setHardState(rd.hardState);
          out.push(...rd.messages);
          for (const e of rd.committedEntries) {
            if (e.type === 'conf') raw.applyConfChange(decodeConfChange(e.data));
            else if (e.data.byteLength > 0) applied++;
          }
          raw.advance(rd);
        }
      }
      for (const m of out) {
        const back = fromWire(decode(RaftMessageSchema, encode(toWire(m))));
        assert.deepEqual(back, m);
        seen.add(m.type);
        nodes.get(back.to)!.raw.step(back);
      }
    }
  }
  assert.ok(applied > 0);
  for (const t of [
    'app',
    'appResp',
    'preVote',
    'preVoteResp',
    'vote',
    'voteResp',
    'heartbeat',
    'heartbeatResp',
    'timeoutNow',
  ]) {
    assert.ok(seen.has(t), `saw ${t}`);
  }
});
