/**
 * Unit tests named after the properties of the Raft paper (Ongaro & Ousterhout, "In Search of an
 * Understandable Consensus Algorithm") and of Ongaro's thesis (§6 client interaction, §4 membership, §9.6
 * pre-vote). Each test drives RawNodes deterministically through a tiny in-memory network.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RawNode } from './rawnode.ts';
import { Prng } from './sim/prng.ts';
import { MemoryStorage } from './storage.ts';
import type { Entry, Message, NodeId, ReadState } from './types.ts';
import { decodeConfChange, RaftError } from './types.ts';

const enc = new TextEncoder();

interface TNode {
  raw: RawNode;
  disk: MemoryStorage;
  applied: Entry[];
  readStates: ReadState[];
}

/** A tiny deterministic network: persist each Ready, then deliver its messages (unless dropped). */
class Net {
  nodes = new Map<NodeId, TNode>();
  /** Directed links that drop everything: "a>b". */
  cut = new Set<string>();
  /** Extra filter: return false to drop a message. */
  filter: (m: Message) => boolean = () => true;
  queue: Message[] = [];
  private rng = new Prng(42);

  constructor(ids: NodeId[], opts: { bootstrap?: boolean; preVote?: boolean; checkQuorum?: boolean } = {}) {
    for (const id of ids) this.add(id, opts);
    if (opts.bootstrap !== false)
      for (const id of ids) this.nodes.get(id)!.raw.bootstrap({ voters: ids, learners: [] });
    this.settle();
  }

  add(
    id: NodeId,
    opts: { preVote?: boolean; checkQuorum?: boolean } = {},
    disk = new MemoryStorage(),
  ): TNode {
    const r = this.rng.fork();
    const raw = new RawNode({
      id,
      storage: disk,
      electionTick: 10,
      heartbeatTick: 1,
      rand: () => r.next(),
      preVote: opts.preVote ?? true,
      checkQuorum: opts.checkQuorum ?? true,
      maxSizePerMsg: 1024,
      maxInflight: 8,
    });
    const n: TNode = { raw, disk, applied: [], readStates: [] };
    this.nodes.set(id, n);
    return n;
  }

  get(id: NodeId): RawNode {
    return this.nodes.get(id)!.raw;
  }

  private drain(n: TNode): void {
    while (n.raw.hasReady()) {
      const rd = n.raw.ready();
      if (rd.snapshot) n.disk.applySnapshot(rd.snapshot);
      n.disk.append(rd.entries);
      if (rd.hardState) n.disk.setHardState(rd.hardState);
      for (const m of rd.messages) this.queue.push(m);
      for (const e of rd.committedEntries) {
        n.applied.push(e);
        if (e.type === 'conf') n.raw.applyConfChange(decodeConfChange(e.data));
      }
      n.readStates.push(...rd.readStates);
      n.raw.advance(rd);
    }
  }

  /** Processes Readies and delivers messages until nothing moves (bounded). */
  settle(maxRounds = 200): void {
    for (let round = 0; round < maxRounds; round++) {
      for (const n of this.nodes.values()) this.drain(n);
      if (this.queue.length === 0) return;
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) {
        if (this.cut.has(`${m.from}>${m.to}`) || !this.filter(m)) continue;
        this.nodes.get(m.to)?.raw.step(m);
      }
    }
    throw new Error('network did not settle');
  }

  tickAll(times: number): void {
    for (let i = 0; i < times; i++) {
      for (const n of this.nodes.values()) n.raw.tick();
      this.settle();
    }
  }

  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}>${other}`);
      this.cut.add(`${other}>${id}`);
    }
  }

  heal(): void {
    this.cut.clear();
  }

  leaders(): NodeId[] {
    return [...this.nodes.entries()].filter(([, n]) => n.raw.status().state === 'leader').map(([id]) => id);
  }
}

function elect(net: Net, id: NodeId): void {
  net.get(id).campaign();
  net.settle();
  assert.equal(net.get(id).status().state, 'leader');
}

function payloads(n: TNode): string[] {
  return n.applied
    .filter((e) => e.type === 'normal' && e.data.byteLength > 0)
    .map((e) => new TextDecoder().decode(e.data));
}

describe('§5.2 leader election', () => {
  it('a candidate that gets votes from a majority becomes leader; others follow it', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    assert.equal(net.get('b').status().lead, 'a');
    assert.equal(net.get('c').status().lead, 'a');
    assert.deepEqual(net.leaders(), ['a']);
  });

  it('a follower that hears nothing campaigns after a randomized election timeout', () => {
    const net = new Net(['a', 'b', 'c']);
    net.tickAll(25);
    assert.equal(net.leaders().length, 1);
  });

  it('election safety: a node grants at most one vote per term', () => {
    const net = new Net(['a', 'b', 'c'], { preVote: false });
    const c = net.get('c');
    const term = c.status().term + 1;
    c.step({ type: 'vote', from: 'a', to: 'c', term, index: 3, logTerm: 1, transfer: false });
    c.step({ type: 'vote', from: 'b', to: 'c', term, index: 3, logTerm: 1, transfer: false });
    const rd = c.ready();
    const resps = rd.messages.filter((m) => m.type === 'voteResp');
    assert.deepEqual(
      resps.map((m) => [m.to, m.type === 'voteResp' && m.reject]),
      [
        ['a', false],
        ['b', true],
      ],
    );
    assert.equal(rd.hardState?.vote, 'a', 'the vote is in the hard state to persist before answering');
  });

  it('with split votes no one wins the term, and a later election succeeds', () => {
    const net = new Net(['a', 'b', 'c', 'd'], { preVote: false });
    // a and b campaign in the same term; c votes a, d votes b: neither reaches 3 votes.
    net.filter = (m) => !((m.from === 'a' && m.to === 'd') || (m.from === 'b' && m.to === 'c'));
    net.get('a').campaign();
    net.get('b').campaign();
    net.settle();
    assert.equal(net.leaders().length, 0);
    net.filter = () => true;
    net.tickAll(40);
    assert.equal(net.leaders().length, 1);
  });
});

describe('§5.3 log replication', () => {
  it('entries proposed to the leader are replicated and applied in order on all nodes', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    for (let i = 0; i < 20; i++) net.get('a').propose(enc.encode(`x${i}`));
    net.settle();
    const want = Array.from({ length: 20 }, (_, i) => `x${i}`);
    for (const id of ['a', 'b', 'c']) assert.deepEqual(payloads(net.nodes.get(id)!), want);
  });

  it('log matching: a follower with conflicting uncommitted entries is overwritten by the leader', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    // a (leader) appends two entries nobody else receives, then loses leadership to b.
    net.isolate('a');
    net.get('a').propose(enc.encode('lost1'));
    net.get('a').propose(enc.encode('lost2'));
    net.settle();
    net.tickAll(30); // b and c's leader lease runs out; one of them is elected
    const nl = net.leaders().find((id) => id !== 'a')!;
    assert.ok(nl);
    net.get(nl).propose(enc.encode('kept'));
    net.settle();
    net.heal();
    net.tickAll(3);
    const a = net.nodes.get('a')!;
    assert.equal(a.raw.status().lead, nl);
    assert.deepEqual(payloads(a), ['kept']);
    const la = a.disk.lastIndex();
    const lb = net.nodes.get(nl)!.disk.lastIndex();
    assert.equal(la, lb);
    for (let i = 1; i <= la; i++)
      assert.equal(a.disk.term(i), net.nodes.get(nl)!.disk.term(i), `term at ${i}`);
  });

  it('a follower far behind is caught up with fast backtracking and batched appends', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.isolate('c');
    for (let i = 0; i < 100; i++) net.get('a').propose(enc.encode(`e${i}`));
    net.settle();
    net.heal();
    let appends = 0;
    net.filter = (m) => {
      if (m.type === 'app' && m.to === 'c' && m.entries.length > 0) appends++;
      return true;
    };
    net.tickAll(3);
    assert.equal(payloads(net.nodes.get('c')!).length, 100);
    assert.ok(appends < 30, `batched: ${appends} appends for 100 entries`);
  });
});

describe('§5.4 safety', () => {
  it('§5.4.1 election restriction: a candidate whose log is behind is not elected', () => {
    const net = new Net(['a', 'b', 'c'], { preVote: false, checkQuorum: false });
    elect(net, 'a');
    net.isolate('c');
    net.get('a').propose(enc.encode('x'));
    net.settle();
    net.heal();
    net.filter = (m) => m.from !== 'a'; // c does not hear of x and campaigns
    net.get('c').campaign();
    net.settle();
    assert.notEqual(net.get('c').status().state, 'leader');
  });

  it('§5.4.2 leader does not commit entries from previous terms by counting replicas', () => {
    // Figure 8: s1 leads term 4 with an entry of term 2 at index 2 that a majority has, but only commits
    // it together with an entry of its own term.
    const ids = ['s1', 's2', 's3', 's4', 's5'];
    const disk = new MemoryStorage();
    disk.applySnapshot({ index: 1, term: 1, conf: { voters: ids, learners: [] }, data: new Uint8Array(0) });
    disk.append([{ index: 2, term: 2, type: 'normal', data: enc.encode('old') }]);
    disk.setHardState({ term: 3, vote: null, commit: 1 });
    const raw = new RawNode({
      id: 's1',
      storage: disk,
      electionTick: 10,
      heartbeatTick: 1,
      rand: () => 0,
      preVote: false,
    });
    raw.campaign();
    for (const v of ['s2', 's3']) raw.step({ type: 'voteResp', from: v, to: 's1', term: 4, reject: false });
    assert.equal(raw.status().state, 'leader');
    assert.equal(raw.raft.log.lastIndex(), 3, 'leader appended an empty entry of term 4');
    const ack = (from: string, index: number) =>
      raw.step({ type: 'appResp', from, to: 's1', term: 4, index, reject: false, rejectHint: 0, logTerm: 0 });
    ack('s2', 2);
    ack('s3', 2);
    assert.equal(
      raw.status().commit,
      1,
      'index 2 (term 2) is on a majority but must not be committed by counting',
    );
    ack('s2', 3);
    assert.equal(raw.status().commit, 1, 'index 3 is on 2 of 5 only');
    ack('s3', 3);
    assert.equal(raw.status().commit, 3, 'committing the term-4 entry commits index 2 indirectly');
  });

  it('state machine safety: committed entries survive leader changes', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.get('a').propose(enc.encode('one'));
    net.settle();
    net.get('a').transferLeadership('b');
    net.settle();
    net.get('b').propose(enc.encode('two'));
    net.settle();
    net.get('b').transferLeadership('c');
    net.settle();
    net.get('c').propose(enc.encode('three'));
    net.settle();
    for (const id of ['a', 'b', 'c']) assert.deepEqual(payloads(net.nodes.get(id)!), ['one', 'two', 'three']);
  });
});

describe('§9.6 pre-vote and check-quorum', () => {
  it('a partitioned node rejoining does not disrupt the leader (its term does not grow)', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    const term = net.get('a').status().term;
    net.isolate('c');
    net.tickAll(100);
    assert.equal(net.get('c').status().term, term, 'pre-vote kept c from bumping its term');
    net.heal();
    net.tickAll(5);
    assert.equal(net.get('a').status().state, 'leader');
    assert.equal(net.get('a').status().term, term);
    assert.equal(net.get('c').status().lead, 'a');
  });

  it('without pre-vote a rejoining node with a higher term is rejected by leader lease (check-quorum)', () => {
    const net = new Net(['a', 'b', 'c'], { preVote: false });
    elect(net, 'a');
    net.isolate('c');
    net.tickAll(60);
    assert.ok(net.get('c').status().term > net.get('a').status().term);
    net.heal();
    net.tickAll(30);
    assert.equal(net.leaders().length, 1);
  });

  it('check-quorum: a leader that cannot reach a quorum steps down', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.isolate('a');
    net.tickAll(25);
    assert.notEqual(net.get('a').status().state, 'leader');
  });
});

describe('§6.4 ReadIndex (linearizable reads)', () => {
  it('the leader answers only after a heartbeat round confirms it is still leader', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.get('a').propose(enc.encode('w'));
    net.settle();
    net.isolate('a');
    net.get('a').readIndex(enc.encode('r1'));
    net.settle();
    assert.equal(net.nodes.get('a')!.readStates.length, 0, 'no quorum, no answer');
    net.heal();
    net.get('a').readIndex(enc.encode('r2'));
    net.settle();
    const rs = net.nodes.get('a')!.readStates;
    // Confirming r2 also confirms r1, which was queued before it.
    assert.deepEqual(
      rs.map((r) => new TextDecoder().decode(r.ctx)),
      ['r1', 'r2'],
    );
    assert.equal(rs[rs.length - 1].index, net.get('a').status().commit);
  });

  it('a follower gets the read index from the leader', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.get('a').propose(enc.encode('w'));
    net.settle();
    net.get('c').readIndex(enc.encode('fr'));
    net.settle();
    const rs = net.nodes.get('c')!.readStates;
    assert.equal(rs.length, 1);
    assert.equal(rs[0].index, net.get('a').status().commit);
  });

  it('a new leader defers reads until it has committed an entry of its term', () => {
    const disk = new MemoryStorage();
    disk.applySnapshot({
      index: 1,
      term: 1,
      conf: { voters: ['a', 'b', 'c'], learners: [] },
      data: new Uint8Array(0),
    });
    disk.setHardState({ term: 1, vote: null, commit: 1 });
    const raw = new RawNode({
      id: 'a',
      storage: disk,
      electionTick: 10,
      heartbeatTick: 1,
      rand: () => 0,
      preVote: false,
    });
    raw.campaign();
    raw.step({ type: 'voteResp', from: 'b', to: 'a', term: 2, reject: false });
    raw.readIndex(enc.encode('early'));
    raw.step({ type: 'heartbeatResp', from: 'b', to: 'a', term: 2, ctx: enc.encode('early') });
    assert.equal(raw.ready().readStates.length, 0);
    raw.advance({ entries: [], committedEntries: [], messages: [], readStates: [] });
    raw.step({
      type: 'appResp',
      from: 'b',
      to: 'a',
      term: 2,
      index: 2,
      reject: false,
      rejectHint: 0,
      logTerm: 0,
    });
    raw.step({ type: 'heartbeatResp', from: 'b', to: 'a', term: 2, ctx: enc.encode('early') });
    const rd = raw.ready();
    assert.equal(rd.readStates.length, 1);
    assert.equal(rd.readStates[0].index, 2);
  });

  it('reads with no leader known are rejected with an error', () => {
    const net = new Net(['a', 'b', 'c']);
    assert.throws(
      () => net.get('a').readIndex(enc.encode('x')),
      (e: unknown) => e instanceof RaftError && e.code === 'READ_DROPPED',
    );
  });
});

describe('proposals on followers', () => {
  it('a follower forwards proposals to the leader', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.get('c').propose(enc.encode('via-c'));
    net.settle();
    assert.deepEqual(payloads(net.nodes.get('a')!), ['via-c']);
  });

  it('with no leader known a proposal is dropped with an error', () => {
    const net = new Net(['a', 'b', 'c']);
    assert.throws(
      () => net.get('b').propose(enc.encode('x')),
      (e: unknown) => e instanceof RaftError && e.code === 'PROPOSAL_DROPPED',
    );
  });
});

describe('leadership transfer (thesis §3.10)', () => {
  it('transfers to an up-to-date follower, which wins at once', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    const term = net.get('a').status().term;
    net.get('a').transferLeadership('c');
    net.settle();
    assert.deepEqual(net.leaders(), ['c']);
    assert.equal(net.get('c').status().term, term + 1);
  });

  it('catches a lagging transferee up first; proposals are refused while transferring', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.isolate('c');
    net.get('a').propose(enc.encode('x'));
    net.settle();
    net.heal();
    net.filter = (m) => m.type !== 'appResp' || m.from !== 'c';
    net.get('a').transferLeadership('c');
    net.settle();
    assert.throws(() => net.get('a').propose(enc.encode('y')), RaftError);
    net.filter = () => true;
    net.tickAll(2);
    assert.deepEqual(net.leaders(), ['c']);
  });
});

describe('§4 membership changes and learners', () => {
  it('adds a learner, which replicates but neither votes nor counts for commit, then promotes it', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.add('d');
    net.get('a').proposeConfChange({ type: 'addLearner', node: 'd' });
    net.settle();
    net.get('a').propose(enc.encode('x'));
    net.settle();
    assert.deepEqual(payloads(net.nodes.get('d')!), ['x']);
    assert.deepEqual(net.get('a').status().conf, { voters: ['a', 'b', 'c'], learners: ['d'] });
    // The learner does not campaign even after long silence.
    net.isolate('d');
    net.tickAll(50);
    assert.equal(net.get('d').status().state, 'follower');
    net.heal();
    net.tickAll(3);
    // With b and c unreachable, a + learner d cannot commit.
    const leader = net.leaders()[0];
    const before = net.get(leader).status().commit;
    for (const id of ['a', 'b', 'c']) if (id !== leader) net.isolate(id);
    net.get(leader).propose(enc.encode('needs-quorum'));
    net.settle();
    assert.equal(net.get(leader).status().commit, before);
    net.heal();
    net.tickAll(3);
    const l2 = net.leaders()[0];
    net.get(l2).proposeConfChange({ type: 'addVoter', node: 'd' });
    net.settle();
    assert.deepEqual(net.get(l2).status().conf, { voters: ['a', 'b', 'c', 'd'], learners: [] });
  });

  it('only one membership change at a time', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.add('d');
    net.add('e');
    net.isolate('b');
    net.isolate('c');
    net.get('a').proposeConfChange({ type: 'addLearner', node: 'd' });
    assert.throws(() => net.get('a').proposeConfChange({ type: 'addLearner', node: 'e' }), RaftError);
  });

  it('a removed leader steps down and the rest elect a new one', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.get('a').proposeConfChange({ type: 'removeNode', node: 'a' });
    net.settle();
    assert.notEqual(net.get('a').status().state, 'leader');
    net.isolate('a');
    net.tickAll(40);
    const leaders = net.leaders();
    assert.equal(leaders.length, 1);
    assert.notEqual(leaders[0], 'a');
    assert.deepEqual(net.get(leaders[0]).status().conf.voters, ['b', 'c']);
  });
});

describe('§7 log compaction and InstallSnapshot', () => {
  it('a follower behind the compacted log gets a snapshot and continues from it', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.isolate('c');
    for (let i = 0; i < 10; i++) net.get('a').propose(enc.encode(`s${i}`));
    net.settle();
    const a = net.nodes.get('a')!;
    const applied = a.raw.status().applied;
    a.disk.createSnapshot(applied, a.raw.status().conf, enc.encode('state-at-' + applied));
    a.disk.compact(applied);
    let snapshots = 0;
    net.filter = (m) => {
      if (m.type === 'snapshot') snapshots++;
      return true;
    };
    net.heal();
    net.tickAll(3);
    assert.equal(snapshots, 1);
    const c = net.nodes.get('c')!;
    assert.equal(c.disk.snapshot().index, applied);
    net.get('a').propose(enc.encode('after'));
    net.settle();
    assert.deepEqual(payloads(c).slice(-1), ['after']);
    assert.equal(c.raw.status().commit, a.raw.status().commit);
  });
});

describe('restart', () => {
  it('a node restarted from its storage keeps term, vote and log', () => {
    const net = new Net(['a', 'b', 'c']);
    elect(net, 'a');
    net.get('a').propose(enc.encode('p'));
    net.settle();
    const b = net.nodes.get('b')!;
    const st = b.raw.status();
    const again = new RawNode({
      id: 'b',
      storage: b.disk,
      electionTick: 10,
      heartbeatTick: 1,
      rand: () => 0,
    });
    const st2 = again.status();
    assert.equal(st2.term, st.term);
    assert.equal(st2.commit, st.commit);
    assert.equal(again.raft.log.lastIndex(), b.raw.raft.log.lastIndex());
  });
});
