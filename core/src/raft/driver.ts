/**
 * RaftDriver: the only part of the Raft package with timers and I/O. It runs the RawNode loop:
 *
 *   tick every `tickMs` ─┐
 *   message from peer ───┼─> RawNode ─> Ready ─> 1. persist (LevelRaftStorage.save, fsync)
 *   propose / read ──────┘                       2. send messages (only after 1: votes and acks are durable)
 *                                                3. restore snapshot, apply committed entries
 *                                                4. advance; resolve proposals/reads; maybe snapshot+compact
 *
 * Proposals carry an envelope `[1][id length][id][payload]` with a unique id (node id + incarnation +
 * counter), so the node that proposed resolves its promise when it applies that exact entry, with the state
 * machine's result — also when the proposal was made on a follower and forwarded to the leader.
 *
 * Note: Raft does not deduplicate. A proposal that times out here may still be committed later, and a
 * transport that duplicates messages could commit a forwarded proposal twice; state machines that need
 * exactly-once semantics should deduplicate on an id inside their payload.
 */
import { randomUUID } from 'node:crypto';
import type { LevelRaftStorage, RaftLevelDb } from './level-storage.ts';
import { LevelRaftStorage as Storage } from './level-storage.ts';
import { DEFAULTS as RAFT_DEFAULTS } from './raft.ts';
import { RawNode } from './rawnode.ts';
import type { ConfChange, ConfState, Entry, HardState, Message, NodeId, Ready, Status } from './types.ts';
import { decodeConfChange, entrySize, RaftError, sameTermAndVote } from './types.ts';

export interface RaftTransport {
  /**
   * Best effort. May throw if the peer is unreachable (the driver then stops streaming to it). May return a
   * promise settling when the message was handed to the peer (or failed): for snapshots the driver uses it
   * to resume replication as soon as the snapshot is through, instead of waiting for a timeout.
   */
  send(to: NodeId, msg: Message): void | Promise<void>;
  /** `from` is the authenticated sender (libp2p peer id); messages whose `msg.from` differs are dropped. */
  onMessage(handler: (from: NodeId, msg: Message) => void): void;
}

export interface StateMachine {
  /** Applies a committed normal entry (data = the proposer's payload). The result goes to the proposer. */
  apply(entry: Entry): unknown;
  snapshot(): Uint8Array;
  restore(data: Uint8Array): void;
}

export interface RaftDriverOptions {
  id: NodeId;
  db: RaftLevelDb;
  transport: RaftTransport;
  stateMachine: StateMachine;
  tickMs?: number;
  electionTick?: number;
  heartbeatTick?: number;
  /** Take a snapshot and compact the log every this many applied entries. */
  snapshotEvery?: number;
  /** Entries kept before the snapshot point, so slightly slow followers need no snapshot. */
  keepEntries?: number;
  maxSizePerMsg?: number;
  maxInflight?: number;
  /**
   * Ticks the leader waits for a follower to acknowledge an InstallSnapshot before sending it again
   * (default 5 election timeouts). Raise it when snapshots are large and links slow.
   */
  snapshotTimeoutTicks?: number;
  /**
   * Largest payload accepted by propose(). Keep it well under the wire limit for one message
   * (protocol/src/raft.ts RAFT_LIMITS.maxEntryBytes): an entry the receivers refuse would stall replication.
   */
  maxProposalBytes?: number;
  /** Max proposals/reads/membership changes waiting for an answer; more are rejected at once. */
  maxPending?: number;
  /** Default timeout for propose/read/membership changes. */
  defaultTimeoutMs?: number;
  /**
   * How long an append that carries only a new commit index waits for a newer append to the same follower
   * that would make it redundant (ms; 0 sends at once). See sendOne.
   */
  commitNotifyDelayMs?: number;
  /** Randomness for election timeouts (defaults to Math.random). */
  rand?: () => number;
  /** Called once if the driver stops because of an unrecoverable error (e.g. the disk failed). */
  onFatal?: (err: Error) => void;
}

export class RaftDriverError extends Error {
  readonly code: 'NO_LEADER' | 'TIMEOUT' | 'STOPPED' | 'OVERLOADED' | 'REJECTED' | 'TOO_LARGE';
  constructor(code: RaftDriverError['code'], message: string) {
    super(message);
    this.name = 'RaftDriverError';
    this.code = code;
  }
}

interface Waiter<T> {
  resolve: (v: T) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const ENVELOPE_VERSION = 1;
const MAX_ID_BYTES = 255;
const enc = new TextEncoder();
const dec = new TextDecoder();

export function wrapProposal(id: string, payload: Uint8Array): Uint8Array {
  const idBytes = enc.encode(id);
  if (idBytes.byteLength > MAX_ID_BYTES) throw new RangeError('proposal id too long');
  const out = new Uint8Array(2 + idBytes.byteLength + payload.byteLength);
  out[0] = ENVELOPE_VERSION;
  out[1] = idBytes.byteLength;
  out.set(idBytes, 2);
  out.set(payload, 2 + idBytes.byteLength);
  return out;
}

export function unwrapProposal(data: Uint8Array): { id: string; payload: Uint8Array } | null {
  if (data.byteLength < 2 || data[0] !== ENVELOPE_VERSION || data.byteLength < 2 + data[1]) return null;
  return { id: dec.decode(data.subarray(2, 2 + data[1])), payload: data.subarray(2 + data[1]) };
}

export class RaftDriver {
  readonly id: NodeId;
  private readonly storage: LevelRaftStorage;
  private readonly node: RawNode;
  private readonly transport: RaftTransport;
  private readonly sm: StateMachine;
  private readonly opts: Required<
    Omit<RaftDriverOptions, 'onFatal' | 'rand' | 'db' | 'transport' | 'stateMachine' | 'id'>
  >;
  private readonly onFatal?: (err: Error) => void;
  private readonly incarnation = randomUUID().slice(0, 8);
  private counter = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private fatal: Error | undefined;
  private conf: ConfState;
  private applied: number;
  private lastSnapshotIndex: number;
  private loop: Promise<void> | undefined;
  private rerun = false;
  /** Commit-only appends waiting to be sent, per follower (see sendOne). */
  private readonly held = new Map<NodeId, { msg: Message; timer: NodeJS.Timeout }>();
  /** When a message from each peer last arrived (Date.now()): see heardWithin. */
  private readonly heardAt = new Map<NodeId, number>();
  /** Latest hard state whose only change is the commit index, not yet written (see handleReady). */
  private lazyHardState: HardState | undefined;
  private readonly proposals = new Map<string, Waiter<{ index: number; result: unknown }>>();
  private readonly reads = new Map<string, Waiter<void>>();
  /** Reads whose index is known, waiting for applied >= index. */
  private readsWaitingApply: { index: number; key: string }[] = [];
  private readonly confWaiters = new Set<{ cc: ConfChange; w: Waiter<ConfState> }>();

  private constructor(o: RaftDriverOptions, storage: LevelRaftStorage) {
    this.id = o.id;
    this.storage = storage;
    this.transport = o.transport;
    this.sm = o.stateMachine;
    this.onFatal = o.onFatal;
    this.opts = {
      tickMs: o.tickMs ?? 100,
      electionTick: o.electionTick ?? 10,
      heartbeatTick: o.heartbeatTick ?? 1,
      snapshotEvery: o.snapshotEvery ?? 10_000,
      keepEntries: o.keepEntries ?? 1000,
      maxSizePerMsg: o.maxSizePerMsg ?? 1024 * 1024,
      maxInflight: o.maxInflight ?? 256,
      maxProposalBytes: o.maxProposalBytes ?? 1024 * 1024,
      snapshotTimeoutTicks: o.snapshotTimeoutTicks ?? (o.electionTick ?? 10) * 5,
      maxPending: o.maxPending ?? 10_000,
      defaultTimeoutMs: o.defaultTimeoutMs ?? 5000,
      commitNotifyDelayMs: o.commitNotifyDelayMs ?? 2,
    };
    const snap = storage.snapshot();
    if (snap.index > 0) this.sm.restore(snap.data);
    this.conf = { voters: [...snap.conf.voters], learners: [...snap.conf.learners] };
    this.applied = snap.index;
    this.lastSnapshotIndex = snap.index;
    this.node = new RawNode({
      id: o.id,
      storage,
      electionTick: this.opts.electionTick,
      heartbeatTick: this.opts.heartbeatTick,
      rand: o.rand ?? Math.random,
      preVote: true,
      checkQuorum: true,
      maxSizePerMsg: this.opts.maxSizePerMsg,
      maxInflight: this.opts.maxInflight,
      snapshotTimeoutTicks: this.opts.snapshotTimeoutTicks,
      applied: snap.index,
    });
  }

  /** Opens storage, restores the state machine from the latest snapshot and starts ticking. */
  static async open(o: RaftDriverOptions): Promise<RaftDriver> {
    const storage = await Storage.open(o.db);
    const d = new RaftDriver(o, storage);
    o.transport.onMessage((from, msg) => d.receive(from, msg));
    d.timer = setInterval(() => d.onTick(), d.opts.tickMs);
    d.timer.unref?.();
    d.kick();
    return d;
  }

  /**
   * Peers a message arrived from in the last `ms` milliseconds. This is what liveness checks above Raft
   * should read, not the progress' `recentActive`: the leader clears that flag for everyone at every
   * election-timeout tick, and a check sampling it from another timer can land right after the clearing
   * every time when the event loop is late (timers due together run in order), so live peers looked silent
   * to autopilot and to the jobs service on a loaded machine.
   */
  heardWithin(ms: number, now = Date.now()): Set<NodeId> {
    const out = new Set<NodeId>();
    for (const [id, at] of this.heardAt) if (now - at <= ms) out.add(id);
    return out;
  }

  /** True when this node has no Raft state yet (never bootstrapped nor joined). */
  isEmpty(): boolean {
    return this.storage.lastIndex() === 0 && this.storage.hardState().term === 0;
  }

  /** Makes a brand-new node a member of a new cluster (see formation.ts for who does this). */
  bootstrap(conf: ConfState): void {
    this.node.bootstrap(conf);
    this.kick();
  }

  private receive(from: NodeId, msg: Message): void {
    if (this.stopped || msg.from !== from || msg.to !== this.id) return;
    this.heardAt.set(from, Date.now());
    try {
      this.node.step(msg);
    } catch (err) {
      if (!(err instanceof RaftError)) {
        this.die(err as Error);
        return;
      }
    }
    this.kick();
  }

  private onTick(): void {
    if (this.stopped) return;
    this.node.tick();
    this.kick();
    this.flushLazyHardState();
  }

  /** Writes a commit-index-only hard state that no log write carried since (no fsync; see handleReady). */
  private flushLazyHardState(): void {
    const hs = this.lazyHardState;
    if (!hs || this.loop) return;
    this.lazyHardState = undefined;
    this.storage.save(hs, []).catch((err: Error) => this.die(err));
  }

  /** Runs the Ready loop (one at a time; a request during a run makes it go around again). */
  private kick(): void {
    if (this.stopped) return;
    if (this.loop) {
      this.rerun = true;
      return;
    }
    this.loop = this.runLoop().finally(() => {
      this.loop = undefined;
      // A kick between the loop's last check and this callback (a proposal made in reaction to one just
      // applied, some microtasks later) only set `rerun`: without this it would wait for the next tick.
      if (this.rerun) this.kick();
    });
  }

  private async runLoop(): Promise<void> {
    do {
      this.rerun = false;
      while (!this.stopped && this.node.hasReady()) {
        try {
          await this.handleReady(this.node.ready());
        } catch (err) {
          this.die(err as Error);
          return;
        }
      }
    } while (this.rerun && !this.stopped);
  }

  private async handleReady(rd: Ready): Promise<void> {
    const messages = coalesceAppends(rd.messages, {
      maxEntries: RAFT_DEFAULTS.maxEntriesPerMsg,
      maxBytes: this.opts.maxSizePerMsg,
    });
    // A leader whose term and vote are already durable sends before its own fsync, so its disk write
    // overlaps the followers' (Raft thesis §10.2.1; etcd does the same). Safe because nothing that depends on
    // these entries being on the leader's disk is observed before the save below completes: commits that
    // count the leader's own copy are applied, answered and announced only in a later Ready, which this
    // loop hands out after this save. Everyone else persists first (votes and acks must be durable).
    const early = this.leaderMaySendFirst(rd);
    if (early) for (const m of messages) this.sendOne(m);
    // 1. Durable first: nothing below may be observed by anyone before this resolves. A hard state that only
    // moves the commit index is not: that write is for a faster restart, not for safety (a lost commit index
    // is learnt again from the leader), so it rides along with the next write or the next tick's flush and
    // never delays the log writes behind it.
    if (rd.entries.length > 0 || rd.snapshot || (rd.hardState && !this.onlyCommitMoved(rd.hardState))) {
      const hs = rd.hardState ?? this.lazyHardState;
      this.lazyHardState = undefined;
      await this.storage.save(hs, rd.entries, rd.snapshot);
    } else if (rd.hardState) {
      this.lazyHardState = rd.hardState;
    }
    if (this.stopped) return;
    // 2. Send.
    if (!early) for (const m of messages) this.sendOne(m);
    // 3. Apply.
    if (rd.snapshot) {
      this.sm.restore(rd.snapshot.data);
      this.conf = { voters: [...rd.snapshot.conf.voters], learners: [...rd.snapshot.conf.learners] };
      this.applied = rd.snapshot.index;
      this.lastSnapshotIndex = rd.snapshot.index;
    }
    for (const e of rd.committedEntries) this.applyEntry(e);
    for (const rs of rd.readStates) {
      const key = Buffer.from(rs.ctx).toString('hex');
      if (this.reads.has(key)) this.readsWaitingApply.push({ index: rs.index, key });
    }
    // 4. Advance and answer.
    this.node.advance(rd);
    this.releaseReads();
    await this.maybeSnapshot();
  }

  private onlyCommitMoved(hs: HardState): boolean {
    return sameTermAndVote(hs, this.storage.hardState());
  }

  private leaderMaySendFirst(rd: Ready): boolean {
    if (rd.snapshot || this.node.status().state !== 'leader') return false;
    return !rd.hardState || this.onlyCommitMoved(rd.hardState);
  }

  /**
   * Sends a message, except that an append without entries (it only tells a follower the new commit index)
   * waits `commitNotifyDelayMs`: if another append to that follower goes out meanwhile it carries the same
   * commit index and the held one is dropped. At one commit at a time this takes two messages per follower
   * and commit off the path of the client's answer; under load most of them are never sent. Dropping or
   * delaying a message is within Raft's fault model (the next append or heartbeat carries the commit).
   */
  private sendOne(m: Message): void {
    const held = this.held.get(m.to);
    if (m.type === 'app' && m.entries.length === 0 && this.opts.commitNotifyDelayMs > 0) {
      if (held) {
        held.msg = m;
        return;
      }
      const entry = {
        msg: m as Message,
        timer: setTimeout(() => {
          if (this.held.get(m.to) !== entry) return;
          this.held.delete(m.to);
          if (!this.stopped) this.transmit(entry.msg);
        }, this.opts.commitNotifyDelayMs),
      };
      this.held.set(m.to, entry);
      return;
    }
    if (held) {
      clearTimeout(held.timer);
      this.held.delete(m.to);
      // A newer append to this peer supersedes the held one; anything else goes after it, in order.
      if (m.type !== 'app') this.transmit(held.msg);
    }
    this.transmit(m);
  }

  private transmit(m: Message): void {
    let sent: void | Promise<void>;
    try {
      sent = this.transport.send(m.to, m);
    } catch {
      this.node.reportUnreachable(m.to);
      return;
    }
    if (!(sent instanceof Promise)) return;
    sent.then(
      () => {
        if (m.type === 'snapshot' && !this.stopped) {
          this.node.reportSnapshot(m.to, true);
          this.kick();
        }
      },
      () => {
        if (this.stopped) return;
        if (m.type === 'snapshot') this.node.reportSnapshot(m.to, false);
        else this.node.reportUnreachable(m.to);
        this.kick();
      },
    );
  }

  private applyEntry(e: Entry): void {
    if (e.type === 'conf') {
      const cc = decodeConfChange(e.data);
      this.conf = this.node.applyConfChange(cc);
      for (const cw of this.confWaiters) {
        if (cw.cc.type === cc.type && cw.cc.node === cc.node) {
          this.confWaiters.delete(cw);
          clearTimeout(cw.w.timer);
          cw.w.resolve(this.conf);
        }
      }
    } else if (e.data.byteLength > 0) {
      const env = unwrapProposal(e.data);
      const result = this.sm.apply(env ? { ...e, data: env.payload } : e);
      const w = env ? this.proposals.get(env.id) : undefined;
      if (env && w) {
        this.proposals.delete(env.id);
        clearTimeout(w.timer);
        w.resolve({ index: e.index, result });
      }
    }
    this.applied = e.index;
  }

  private releaseReads(): void {
    if (this.readsWaitingApply.length === 0) return;
    const still: { index: number; key: string }[] = [];
    for (const r of this.readsWaitingApply) {
      if (r.index > this.applied) {
        still.push(r);
        continue;
      }
      const w = this.reads.get(r.key);
      if (!w) continue;
      this.reads.delete(r.key);
      clearTimeout(w.timer);
      w.resolve();
    }
    this.readsWaitingApply = still;
  }

  private async maybeSnapshot(): Promise<void> {
    if (this.applied - this.lastSnapshotIndex < this.opts.snapshotEvery) return;
    const index = this.applied;
    this.lastSnapshotIndex = index;
    await this.storage.createSnapshot(index, this.conf, this.sm.snapshot());
    const compactTo = index - this.opts.keepEntries;
    if (compactTo >= this.storage.firstIndex()) await this.storage.compact(compactTo);
  }

  private die(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    this.shutdown(new RaftDriverError('STOPPED', `raft driver stopped: ${err.message}`));
    this.onFatal?.(err);
  }

  private shutdown(reason: Error): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const h of this.held.values()) clearTimeout(h.timer);
    this.held.clear();
    for (const w of this.proposals.values()) {
      clearTimeout(w.timer);
      w.reject(reason);
    }
    this.proposals.clear();
    for (const w of this.reads.values()) {
      clearTimeout(w.timer);
      w.reject(reason);
    }
    this.reads.clear();
    for (const cw of this.confWaiters) {
      clearTimeout(cw.w.timer);
      cw.w.reject(reason);
    }
    this.confWaiters.clear();
  }

  private checkUsable(): void {
    if (this.stopped) throw new RaftDriverError('STOPPED', 'raft driver is stopped');
    if (this.proposals.size + this.reads.size + this.confWaiters.size >= this.opts.maxPending) {
      throw new RaftDriverError('OVERLOADED', `more than ${this.opts.maxPending} requests pending`);
    }
  }

  private static translate(err: unknown): Error {
    if (err instanceof RaftError) {
      if (err.code === 'PROPOSAL_DROPPED' || err.code === 'READ_DROPPED') {
        return new RaftDriverError(
          err.message.startsWith('no leader') ? 'NO_LEADER' : 'REJECTED',
          err.message,
        );
      }
      return new RaftDriverError('REJECTED', err.message);
    }
    return err as Error;
  }

  /**
   * Replicates `payload` and resolves with its log index and the state machine's result once this node
   * applied it. Works on followers (forwarded to the leader). Rejects with RaftDriverError NO_LEADER when no
   * leader is known, TIMEOUT when not applied in time (it may still be applied later).
   */
  propose(
    payload: Uint8Array,
    options: { timeoutMs?: number } = {},
  ): Promise<{ index: number; result: unknown }> {
    try {
      this.checkUsable();
    } catch (err) {
      return Promise.reject(err);
    }
    if (payload.byteLength > this.opts.maxProposalBytes) {
      return Promise.reject(
        new RaftDriverError(
          'TOO_LARGE',
          `proposal of ${payload.byteLength} bytes exceeds ${this.opts.maxProposalBytes}`,
        ),
      );
    }
    const id = `${this.id}/${this.incarnation}/${++this.counter}`;
    const timeoutMs = options.timeoutMs ?? this.opts.defaultTimeoutMs;
    return new Promise((resolve, reject) => {
      try {
        this.node.propose(wrapProposal(id, payload));
      } catch (err) {
        reject(RaftDriver.translate(err));
        return;
      }
      const timer = setTimeout(() => {
        this.proposals.delete(id);
        reject(new RaftDriverError('TIMEOUT', `proposal ${id} not applied within ${timeoutMs} ms`));
      }, timeoutMs);
      this.proposals.set(id, { resolve, reject, timer });
      this.kick();
    });
  }

  /**
   * Linearizable read barrier (ReadIndex): resolves once this node's state machine reflects every write
   * committed before the call. Read the state machine right after it resolves.
   */
  read(options: { timeoutMs?: number } = {}): Promise<void> {
    try {
      this.checkUsable();
    } catch (err) {
      return Promise.reject(err);
    }
    const ctx = enc.encode(`${this.incarnation}/${++this.counter}`);
    const key = Buffer.from(ctx).toString('hex');
    const timeoutMs = options.timeoutMs ?? this.opts.defaultTimeoutMs;
    return new Promise((resolve, reject) => {
      try {
        this.node.readIndex(ctx);
      } catch (err) {
        reject(RaftDriver.translate(err));
        return;
      }
      const timer = setTimeout(() => {
        this.reads.delete(key);
        reject(new RaftDriverError('TIMEOUT', `read not confirmed within ${timeoutMs} ms`));
      }, timeoutMs);
      this.reads.set(key, { resolve, reject, timer });
      this.kick();
    });
  }

  /** Proposes a membership change and resolves with the new configuration once it is applied here. */
  changeMembership(cc: ConfChange, options: { timeoutMs?: number } = {}): Promise<ConfState> {
    try {
      this.checkUsable();
    } catch (err) {
      return Promise.reject(err);
    }
    const timeoutMs = options.timeoutMs ?? this.opts.defaultTimeoutMs;
    return new Promise((resolve, reject) => {
      try {
        this.node.proposeConfChange(cc);
      } catch (err) {
        reject(RaftDriver.translate(err));
        return;
      }
      const entry = {
        cc,
        w: {
          resolve,
          reject,
          timer: setTimeout(() => {
            this.confWaiters.delete(entry);
            reject(
              new RaftDriverError(
                'TIMEOUT',
                `membership change ${cc.type} ${cc.node} not applied within ${timeoutMs} ms`,
              ),
            );
          }, timeoutMs),
        },
      };
      this.confWaiters.add(entry);
      this.kick();
    });
  }

  addLearner(id: NodeId, options?: { timeoutMs?: number }): Promise<ConfState> {
    return this.changeMembership({ type: 'addLearner', node: id }, options);
  }

  promote(id: NodeId, options?: { timeoutMs?: number }): Promise<ConfState> {
    return this.changeMembership({ type: 'addVoter', node: id }, options);
  }

  removeNode(id: NodeId, options?: { timeoutMs?: number }): Promise<ConfState> {
    return this.changeMembership({ type: 'removeNode', node: id }, options);
  }

  /** Asks the leader to hand leadership to `to`; resolves when this node sees `to` as leader. */
  async transferLeadership(to: NodeId, options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.stopped) throw new RaftDriverError('STOPPED', 'raft driver is stopped');
    const deadline = Date.now() + (options.timeoutMs ?? this.opts.defaultTimeoutMs);
    this.node.transferLeadership(to);
    this.kick();
    while (this.node.status().lead !== to) {
      if (this.stopped) throw new RaftDriverError('STOPPED', 'raft driver is stopped');
      if (Date.now() >= deadline) throw new RaftDriverError('TIMEOUT', `leadership did not move to ${to}`);
      await new Promise((r) => setTimeout(r, this.opts.tickMs));
    }
  }

  status(): Status & { applied: number; stopped: boolean } {
    return { ...this.node.status(), applied: this.applied, stopped: this.stopped };
  }

  /** Configuration as of the applied index. */
  confState(): ConfState {
    return { voters: [...this.conf.voters], learners: [...this.conf.learners] };
  }

  /** Stops ticking, rejects pending requests, waits for an in-progress write. Does not close the db. */
  async stop(): Promise<void> {
    if (!this.stopped) this.shutdown(new RaftDriverError('STOPPED', 'raft driver stopped'));
    await this.loop;
    const hs = this.lazyHardState;
    this.lazyHardState = undefined;
    if (hs) await this.storage.save(hs, []).catch(() => {});
  }
}

function entryBytes(entries: Entry[]): number {
  let n = 0;
  for (const e of entries) n += entrySize(e);
  return n;
}

/**
 * Merges back-to-back appends to the same follower into one message: the core emits one per proposal, so
 * under load a Ready would otherwise carry hundreds of small appends per follower, each acknowledged on its
 * own. Only an append that continues exactly where the previous one to that peer ended (same term) is
 * merged, and only when no other message to that peer lies between them, so per-peer order is unchanged.
 * The follower's single acknowledgement of the last index frees every merged in-flight slot at the leader.
 */
export function coalesceAppends(
  messages: Message[],
  // A merged append stays within the bounds the core applies to the appends it builds itself.
  limits: { maxEntries: number; maxBytes: number } = {
    maxEntries: RAFT_DEFAULTS.maxEntriesPerMsg,
    maxBytes: RAFT_DEFAULTS.maxSizePerMsg,
  },
): Message[] {
  if (messages.length < 2) return messages;
  const out: Message[] = [];
  /** Per peer: where its latest message sits in `out`, and the entry bytes of that message if it is an append. */
  const last = new Map<NodeId, { at: number; bytes: number; owned: boolean }>();
  for (const m of messages) {
    const l = last.get(m.to);
    const prev = l === undefined ? undefined : out[l.at];
    if (l && m.type === 'app' && prev?.type === 'app' && prev.term === m.term && m.entries.length > 0) {
      const end = prev.entries.length > 0 ? prev.entries[prev.entries.length - 1]! : null;
      const prevLast = end ? end.index : prev.index;
      const prevLastTerm = end ? end.term : prev.logTerm;
      const bytes = entryBytes(m.entries);
      const fits =
        prev.entries.length + m.entries.length <= limits.maxEntries && l.bytes + bytes <= limits.maxBytes;
      if (fits && m.index === prevLast && m.logTerm === prevLastTerm) {
        // The first merge copies (the core's message is not ours to change); later ones append in place.
        const merged = l.owned ? prev : { ...prev, entries: [...prev.entries] };
        merged.entries.push(...m.entries);
        merged.commit = Math.max(prev.commit, m.commit);
        out[l.at] = merged;
        l.bytes += bytes;
        l.owned = true;
        continue;
      }
    }
    last.set(m.to, { at: out.length, bytes: m.type === 'app' ? entryBytes(m.entries) : 0, owned: false });
    out.push(m);
  }
  return out;
}
