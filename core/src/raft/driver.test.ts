/**
 * Three RaftDrivers in one process: real timers, real level databases in temp dirs, an in-memory
 * transport (asynchronous delivery, can cut a node off).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Level } from 'level';
import type { RaftDriverOptions, RaftTransport, StateMachine } from './driver.ts';
import { coalesceAppends, RaftDriver, RaftDriverError } from './driver.ts';
import { LevelRaftStorage } from './level-storage.ts';
import type { Entry, Message, NodeId } from './types.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Delivers messages on the next macrotask; `down` nodes neither send nor receive. */
class MemoryHub {
  handlers = new Map<NodeId, (from: NodeId, msg: Message) => void>();
  down = new Set<NodeId>();
  snapshotsDelivered = 0;
  heartbeatsDelivered = 0;
  transport(id: NodeId): RaftTransport {
    return {
      // Settles once delivered (or refused), like a stream write; the driver uses it for snapshots.
      send: (to, msg) =>
        new Promise<void>((resolve, reject) => {
          if (this.down.has(id) || this.down.has(to)) {
            reject(new Error(`${to} unreachable`));
            return;
          }
          setImmediate(() => {
            if (this.down.has(id) || this.down.has(to)) {
              reject(new Error(`${to} unreachable`));
              return;
            }
            if (msg.type === 'snapshot') this.snapshotsDelivered++;
            if (msg.type === 'heartbeat') this.heartbeatsDelivered++;
            this.handlers.get(to)?.(id, msg);
            resolve();
          });
        }),
      onMessage: (h) => {
        this.handlers.set(id, h);
      },
    };
  }
}

/** A tiny KV: payload "key=value"; apply returns the previous value. */
class Kv implements StateMachine {
  map = new Map<string, string>();
  apply(e: Entry): unknown {
    const [k, v] = new TextDecoder().decode(e.data).split('=');
    const prev = this.map.get(k) ?? null;
    this.map.set(k, v);
    return prev;
  }
  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify([...this.map]));
  }
  restore(data: Uint8Array): void {
    this.map = new Map(JSON.parse(new TextDecoder().decode(data)));
  }
}

const ids = ['p1', 'p2', 'p3'];
const enc = (s: string) => new TextEncoder().encode(s);

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Member {
  id: NodeId;
  dir: string;
  db: Level<string, Uint8Array>;
  kv: Kv;
  driver: RaftDriver;
}

async function start(
  hub: MemoryHub,
  id: NodeId,
  dir: string,
  bootstrap: boolean,
  overrides: Partial<RaftDriverOptions> = {},
): Promise<Member> {
  const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
  const kv = new Kv();
  const driver = await RaftDriver.open({
    id,
    db,
    transport: hub.transport(id),
    stateMachine: kv,
    tickMs: 10,
    electionTick: 10,
    heartbeatTick: 1,
    snapshotEvery: 20,
    keepEntries: 5,
    defaultTimeoutMs: 3000,
    ...overrides,
  });
  if (bootstrap && driver.isEmpty()) driver.bootstrap({ voters: ids, learners: [] });
  return { id, dir, db, kv, driver };
}

/** The three members p1-p3, each on its own new data dir, bootstrapped together. */
async function startThree(hub: MemoryHub, dirPrefix: string): Promise<Member[]> {
  const members: Member[] = [];
  for (const id of ids) {
    const dir = await mkdtemp(join(tmpdir(), `${dirPrefix}-${id}-`));
    dirs.push(dir);
    members.push(await start(hub, id, dir, true));
  }
  return members;
}

/** Waits for one of `members` to lead and returns it. */
async function electedLeader(members: Member[]): Promise<Member> {
  await waitFor(() => members.some((m) => m.driver.status().state === 'leader'), 5000, 'a leader');
  return members.find((m) => m.driver.status().state === 'leader')!;
}

async function stopMember(m: Member): Promise<void> {
  await m.driver.stop();
  await m.db.close();
}

describe('RaftDriver (3 nodes, in-memory transport, level on disk)', () => {
  it('elects a leader, applies proposals made on a follower, serves ReadIndex reads, and a restarted node catches up', async () => {
    const hub = new MemoryHub();
    const members = await startThree(hub, 'raft-driver');
    try {
      const leader = await electedLeader(members);
      await waitFor(
        () => members.every((m) => m.driver.status().lead === leader.id),
        3000,
        'everyone to know the leader',
      );
      const follower = members.find((m) => m !== leader)!;

      const r1 = await follower.driver.propose(enc('color=red'));
      assert.equal(r1.result, null);
      const r2 = await follower.driver.propose(enc('color=blue'));
      assert.equal(r2.result, 'red', 'the proposer gets the state machine result for its own entry');
      assert.ok(r2.index > r1.index);

      // ReadIndex barrier on another follower: after it, that node's state machine has the write.
      const other = members.find((m) => m !== leader && m !== follower)!;
      await other.driver.read();
      assert.equal(other.kv.map.get('color'), 'blue');

      // Take one follower down, write enough to trigger snapshots + compaction, bring it back.
      hub.down.add(other.id);
      await stopMember(other);
      for (let i = 0; i < 40; i++) await leader.driver.propose(enc(`k${i}=${i}`));
      const back = await start(hub, other.id, other.dir, true);
      members[members.indexOf(other)] = back;
      hub.down.delete(other.id);
      await waitFor(() => back.kv.map.get('k39') === '39', 5000, 'the restarted node to catch up');
      assert.ok(hub.snapshotsDelivered > 0, 'the log was compacted, so it caught up from a snapshot');
      assert.equal(back.kv.map.get('color'), 'blue');
      await back.driver.read();
      assert.deepEqual([...back.kv.map].sort(), [...leader.kv.map].sort());
    } finally {
      for (const m of members) await stopMember(m);
    }
  });

  it('survives the leader stopping, and transfers leadership on request', async () => {
    const hub = new MemoryHub();
    let members = await startThree(hub, 'raft-driver-fo');
    try {
      await waitFor(() => members.some((m) => m.driver.status().state === 'leader'), 5000, 'a leader');
      const first = members.find((m) => m.driver.status().state === 'leader')!;
      await first.driver.propose(enc('a=1'));
      hub.down.add(first.id);
      await stopMember(first);
      members = members.filter((m) => m !== first);
      await waitFor(() => members.some((m) => m.driver.status().state === 'leader'), 5000, 'a new leader');
      const [x, y] = members;
      await waitFor(
        () => x.driver.status().lead !== null && x.driver.status().lead === y.driver.status().lead,
        3000,
        'agreement',
      );
      const r = await x.driver.propose(enc('a=2'));
      assert.equal(r.result, '1', 'the committed write survived the leader');
      const follower = x.driver.status().state === 'leader' ? y : x;
      await follower.driver.transferLeadership(follower.id, { timeoutMs: 3000 });
      assert.equal(follower.driver.status().state, 'leader');
      await follower.driver.propose(enc('a=3'));
      await waitFor(() => x.kv.map.get('a') === '3' && y.kv.map.get('a') === '3', 3000, 'both to apply');
    } finally {
      for (const m of members) await stopMember(m);
    }
  });

  it('heardWithin lists the peers that sent a message lately, and drops one that went quiet', async () => {
    const hub = new MemoryHub();
    const members = await startThree(hub, 'raft-driver-heard');
    try {
      const leader = await electedLeader(members);
      const [quiet, other] = members.filter((m) => m !== leader);
      // Heartbeats every 10 ms tick: both followers answer well within 200 ms.
      await waitFor(() => leader.driver.heardWithin(200).size === 2, 2000, 'both followers heard');
      hub.down.add(quiet!.id);
      await new Promise((r) => setTimeout(r, 400));
      const heard = leader.driver.heardWithin(200);
      assert.ok(!heard.has(quiet!.id), 'a cut-off follower is not heard');
      assert.ok(heard.has(other!.id), 'the other follower still is');
    } finally {
      for (const m of members) await stopMember(m);
    }
  });

  it('rejects proposals without a leader and after stop', async () => {
    const hub = new MemoryHub();
    const dir = await mkdtemp(join(tmpdir(), 'raft-driver-lone-'));
    dirs.push(dir);
    const m = await start(hub, 'lonely', dir, false);
    await assert.rejects(
      m.driver.propose(enc('a=1')),
      (e: unknown) => e instanceof RaftDriverError && e.code === 'NO_LEADER',
    );
    await assert.rejects(
      m.driver.read(),
      (e: unknown) => e instanceof RaftDriverError && e.code === 'NO_LEADER',
    );
    await assert.rejects(
      m.driver.propose(new Uint8Array(2 * 1024 * 1024)),
      (e: unknown) => e instanceof RaftDriverError && e.code === 'TOO_LARGE',
    );
    await stopMember(m);
    await assert.rejects(
      m.driver.propose(enc('a=1')),
      (e: unknown) => e instanceof RaftDriverError && e.code === 'STOPPED',
    );
  });

  it('a single-node cluster commits on its own and adds a learner that catches up', async () => {
    const hub = new MemoryHub();
    const d1 = await mkdtemp(join(tmpdir(), 'raft-driver-solo-'));
    const d2 = await mkdtemp(join(tmpdir(), 'raft-driver-learner-'));
    dirs.push(d1, d2);
    const db1 = new Level<string, Uint8Array>(d1, { keyEncoding: 'utf8', valueEncoding: 'view' });
    const kv1 = new Kv();
    const solo = await RaftDriver.open({
      id: 'solo',
      db: db1,
      transport: hub.transport('solo'),
      stateMachine: kv1,
      tickMs: 10,
    });
    solo.bootstrap({ voters: ['solo'], learners: [] });
    const db2 = new Level<string, Uint8Array>(d2, { keyEncoding: 'utf8', valueEncoding: 'view' });
    const kv2 = new Kv();
    const learner = await RaftDriver.open({
      id: 'lrn',
      db: db2,
      transport: hub.transport('lrn'),
      stateMachine: kv2,
      tickMs: 10,
    });
    try {
      await waitFor(() => solo.status().state === 'leader', 5000, 'solo leader');
      await solo.propose(enc('x=1'));
      const conf = await solo.addLearner('lrn');
      assert.deepEqual(conf, { voters: ['solo'], learners: ['lrn'] });
      await waitFor(() => kv2.map.get('x') === '1', 5000, 'learner to catch up');
      await solo.promote('lrn');
      await solo.propose(enc('y=2'));
      await waitFor(() => kv2.map.get('y') === '2', 5000, 'the new voter to apply');
      assert.deepEqual(solo.confState().voters, ['lrn', 'solo']);
    } finally {
      await solo.stop();
      await learner.stop();
      await db1.close();
      await db2.close();
    }
  });

  it('a proposal made while the Ready loop is winding down is not left for the next tick', async () => {
    // A proposal made as a reaction to the previous one's result (a node reporting the task it was just
    // given, the command batcher sending its next batch) arrives some microtasks after that result. One that
    // landed after the Ready loop's last check, but before the loop was marked finished, was only picked
    // up by the next tick: on a single node every such proposal took a whole tick (50 ms in the daemon).
    // The tick here is far longer than any proposal may take, and every microtask depth is tried.
    const hub = new MemoryHub();
    const dir = await mkdtemp(join(tmpdir(), 'raft-driver-wakeup-'));
    dirs.push(dir);
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    const solo = await RaftDriver.open({
      id: 'solo',
      db,
      transport: hub.transport('solo'),
      stateMachine: new Kv(),
      tickMs: 400,
      electionTick: 2,
      heartbeatTick: 1,
    });
    solo.bootstrap({ voters: ['solo'], learners: [] });
    try {
      await waitFor(() => solo.status().state === 'leader', 10_000, 'solo leader');
      const slow: string[] = [];
      for (let depth = 0; depth < 40; depth++) {
        await solo.propose(enc(`warm=${depth}`));
        for (let i = 0; i < depth; i++) await null;
        const t0 = performance.now();
        await solo.propose(enc(`k=${depth}`));
        const ms = performance.now() - t0;
        if (ms > 200) slow.push(`depth ${depth}: ${Math.round(ms)} ms`);
      }
      assert.deepEqual(slow, [], 'proposals that waited for a tick');
    } finally {
      await solo.stop();
      await db.close();
    }
  });
});

describe('coalesceAppends', () => {
  const ent = (index: number, term = 2, bytes = 1) => ({
    term,
    index,
    type: 'normal' as const,
    data: new Uint8Array(bytes),
  });
  const app = (to: NodeId, index: number, logTerm: number, entries: Entry[], commit: number): Message => ({
    type: 'app',
    from: 'p1',
    to,
    term: 2,
    index,
    logTerm,
    entries,
    commit,
  });
  const hb = (to: NodeId): Message => ({
    type: 'heartbeat',
    from: 'p1',
    to,
    term: 2,
    commit: 0,
    ctx: new Uint8Array(0),
  });

  it('merges appends that continue each other, per peer, keeping the newest commit', () => {
    const msgs = [
      app('p2', 4, 2, [ent(5)], 4),
      app('p3', 4, 2, [ent(5)], 4),
      app('p2', 5, 2, [ent(6)], 5),
      app('p3', 5, 2, [ent(6), ent(7)], 5),
      app('p2', 6, 2, [ent(7)], 6),
    ];
    const out = coalesceAppends(msgs);
    assert.equal(out.length, 2);
    const [to2, to3] = out as Extract<Message, { type: 'app' }>[];
    assert.deepEqual(
      to2!.entries.map((e) => e.index),
      [5, 6, 7],
    );
    assert.equal(to2!.index, 4);
    assert.equal(to2!.commit, 6);
    assert.deepEqual(
      to3!.entries.map((e) => e.index),
      [5, 6, 7],
    );
    // The core's messages are not modified.
    assert.equal((msgs[0] as Extract<Message, { type: 'app' }>).entries.length, 1);
  });

  it('does not merge across another message to the same peer, a gap, a term change or the size limits', () => {
    const acrossHeartbeat = coalesceAppends([
      app('p2', 4, 2, [ent(5)], 4),
      hb('p2'),
      app('p2', 5, 2, [ent(6)], 4),
    ]);
    assert.equal(acrossHeartbeat.length, 3);
    const gap = coalesceAppends([app('p2', 4, 2, [ent(5)], 4), app('p2', 6, 2, [ent(7)], 4)]);
    assert.equal(gap.length, 2);
    const otherTerm = coalesceAppends([app('p2', 4, 2, [ent(5, 2)], 4), app('p2', 5, 3, [ent(6, 3)], 4)]);
    assert.equal(otherTerm.length, 2, 'prev entry term must match logTerm');
    const big = coalesceAppends(
      [app('p2', 4, 2, [ent(5, 2, 600)], 4), app('p2', 5, 2, [ent(6, 2, 600)], 4)],
      {
        maxEntries: 100,
        maxBytes: 1000,
      },
    );
    assert.equal(big.length, 2);
    const many = coalesceAppends(
      [app('p2', 4, 2, [ent(5)], 4), app('p2', 5, 2, [ent(6)], 4), app('p2', 6, 2, [ent(7)], 4)],
      { maxEntries: 2, maxBytes: 1000 },
    );
    assert.deepEqual(
      many.map((m) => (m as Extract<Message, { type: 'app' }>).entries.length),
      [2, 1],
    );
  });
});

describe('RaftDriver commit notifications and lazy commit index', () => {
  it('followers learn the commit index of the last proposal without any further traffic, and it survives a clean restart', async () => {
    const hub = new MemoryHub();
    const members: Member[] = [];
    for (const id of ids) {
      const dir = await mkdtemp(join(tmpdir(), `raft-notify-${id}-`));
      dirs.push(dir);
      // Long heartbeat interval: only the (held, then sent) commit notification can tell followers.
      members.push(
        await start(hub, id, dir, true, { electionTick: 100, heartbeatTick: 50, commitNotifyDelayMs: 5 }),
      );
    }
    try {
      await waitFor(() => members.some((m) => m.driver.status().state === 'leader'), 10_000, 'a leader');
      const leader = members.find((m) => m.driver.status().state === 'leader')!;
      await leader.driver.propose(enc('a=1'));
      // Followers must apply a proposal with no heartbeat in between: the held commit notification told them.
      let withoutHeartbeat = false;
      for (let i = 0; i < 5 && !withoutHeartbeat; i++) {
        const beats = hub.heartbeatsDelivered;
        await leader.driver.propose(enc(`k=${i}`));
        await waitFor(() => members.every((m) => m.kv.map.get('k') === `${i}`), 3000, 'followers to apply');
        withoutHeartbeat = hub.heartbeatsDelivered === beats;
      }
      assert.ok(withoutHeartbeat, 'followers applied a proposal without a heartbeat carrying the commit');
      const f = members.find((m) => m !== leader)!;
      const commit = f.driver.status().commit;
      await stopMember(f);
      const reopened = new Level<string, Uint8Array>(f.dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
      const storage = await LevelRaftStorage.open(reopened);
      assert.equal(storage.hardState().commit, commit, 'the commit index was written on stop');
      await reopened.close();
      members.splice(members.indexOf(f), 1);
    } finally {
      for (const m of members) await stopMember(m);
    }
  });
});
