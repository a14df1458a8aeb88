/**
 * Deterministic cluster simulation: N RawNodes over a simulated network and simulated disks, all
 * randomness from one seeded PRNG. Faults: message loss, delay, reordering, duplication, symmetric and
 * asymmetric partitions, crashes (with and without losing the unsynced part of a Ready), restarts,
 * membership changes, leadership transfers, snapshots and log compaction.
 *
 * After every step the safety invariants of the Raft paper are checked (Figure 3):
 * election safety, log matching, leader completeness, state machine safety. After the chaos phase the
 * network heals, every node restarts, and the cluster must converge: every acknowledged write applied, in
 * the same order, on every member; the client history must be linearizable.
 */
import type { KvOp } from '../linearizability.ts';
import { checkKvHistory } from '../linearizability.ts';
import { ctxKey } from '../raft.ts';
import { RawNode } from '../rawnode.ts';
import { MemoryStorage } from '../storage.ts';
import type { ConfChange, ConfState, Entry, Message, NodeId, Ready } from '../types.ts';
import { decodeConfChange, RaftError } from '../types.ts';
import { decodeKvCommand, encodeKvCommand, KvStateMachine } from './kv.ts';
import { Prng } from './prng.ts';

export class SimFailure extends Error {
  readonly seed: number;
  readonly step: number;
  constructor(seed: number, step: number, detail: string) {
    super(`raft sim seed ${seed} failed at step ${step}: ${detail} (re-run with RAFT_SIM_SEED=${seed})`);
    this.name = 'SimFailure';
    this.seed = seed;
    this.step = step;
  }
}

export interface SimOptions {
  seed: number;
  /** Steps with faults injected. */
  chaosSteps: number;
  /** Max steps after healing for the cluster to converge (liveness bound). */
  healSteps: number;
  /**
   * A deliberately broken environment, to show the checkers catch what they claim to:
   * sendBeforePersist sends messages before the Ready is persisted, so a crash loses acknowledged state.
   */
  sabotage?: 'sendBeforePersist';
}

export interface SimStats {
  steps: number;
  leaders: number;
  acked: number;
  ops: number;
  snapshotsSent: number;
  confChanges: number;
  crashes: number;
}

interface SimNode {
  id: NodeId;
  disk: MemoryStorage;
  raw: RawNode | null;
  sm: KvStateMachine;
  conf: ConfState;
  applied: number;
  /** Command id -> history index, for puts proposed through this node (this incarnation). */
  proposals: Map<string, number>;
  /** ReadIndex ctx -> history index. */
  pendingReads: Map<string, number>;
  /** Reads whose read index is known, waiting for applied >= index. */
  readsWaiting: { index: number; op: number }[];
  lastCommitSeen: number;
}

interface InFlight {
  at: number;
  msg: Message;
}

const ELECTION_TICK = 10;
const HEARTBEAT_TICK = 2;
/** Bound on Ready rounds processed per node per step. */
const MAX_READY_ROUNDS = 4;
/** Bound on messages in flight (beyond it new messages are dropped, like a full socket buffer). */
const MAX_IN_FLIGHT = 5000;
const KEYS = ['a', 'b', 'c', 'd', 'e'];

function bytesKey(d: Uint8Array): string {
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('latin1');
}

export class Simulation {
  readonly seed: number;
  private readonly rng: Prng;
  private readonly opts: SimOptions;
  private step = 0;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly ids: NodeId[];
  private readonly initialVoters: NodeId[];
  private inFlight: InFlight[] = [];
  private readonly blocked = new Set<string>();
  private lossRate: number;
  private dupRate: number;
  private maxDelay: number;
  private readonly crashRate: number;
  private readonly opRate: number;
  private readonly confRate: number;
  private readonly compactRate: number;
  private readonly maxSizePerMsg: number;
  private readonly maxInflight: number;
  private readonly maxEntriesPerMsg: number;
  /** Mostly on (the production setting); sometimes off so that deposed leaders linger (harder for reads). */
  private readonly checkQuorum: boolean;
  private readonly preVote: boolean;

  // Invariant registries.
  private readonly leaderOfTerm = new Map<number, NodeId>();
  private readonly leadersChecked = new Set<string>();
  /** `${index}:${term}` -> data key + previous entry's term (log matching). */
  private readonly logRegistry = new Map<string, { data: string; prevTerm: number }>();
  /** index -> `${term}:${type}:${data}` of the entry applied there (state machine safety). */
  private readonly appliedRegistry = new Map<number, string>();
  /** index -> [term of the leader that first committed it, term of the entry]. */
  private readonly commitRecord = new Map<number, [number, number]>();
  private maxCommitted = 0;

  // Client history.
  private clock = 0;
  readonly history: KvOp[] = [];
  private readonly acked = new Set<string>();
  private opCounter = 0;
  private readonly removedEver = new Set<NodeId>();
  readonly stats: SimStats = {
    steps: 0,
    leaders: 0,
    acked: 0,
    ops: 0,
    snapshotsSent: 0,
    confChanges: 0,
    crashes: 0,
  };

  constructor(opts: SimOptions) {
    this.opts = opts;
    this.seed = opts.seed;
    this.rng = new Prng(opts.seed);
    const r = this.rng;
    this.lossRate = r.pick([0, 0.01, 0.05, 0.15]);
    this.dupRate = r.pick([0, 0.01, 0.05]);
    this.maxDelay = r.int(1, 4);
    this.crashRate = r.pick([0, 0.003, 0.01, 0.02]);
    this.opRate = r.pick([0.1, 0.3, 0.6]);
    this.confRate = r.pick([0, 0.01, 0.03]);
    this.compactRate = r.pick([0, 0.02, 0.08]);
    this.maxSizePerMsg = r.pick([64, 256, 4096]);
    this.maxInflight = r.pick([1, 4, 64]);
    this.maxEntriesPerMsg = r.pick([2, 16, 4096]);
    this.checkQuorum = r.chance(0.75);
    this.preVote = r.chance(0.75);
    const initialVoters = r.pick([1, 3, 3, 5]);
    const total = Math.min(initialVoters + 2, 6);
    this.ids = Array.from({ length: total }, (_, i) => `n${i + 1}`);
    const voters = this.ids.slice(0, initialVoters);
    this.initialVoters = voters;
    for (const id of this.ids) {
      const node = this.newNode(id);
      this.nodes.set(id, node);
      this.startNode(node);
    }
    // Bootstrap entries are committed by construction (no leader): record them as committed in term 0.
    for (let i = 1; i <= voters.length; i++) this.commitRecord.set(i, [0, 1]);
    this.maxCommitted = voters.length;
  }

  private newNode(id: NodeId): SimNode {
    return {
      id,
      disk: new MemoryStorage(),
      raw: null,
      sm: new KvStateMachine(),
      conf: { voters: [], learners: [] },
      applied: 0,
      proposals: new Map(),
      pendingReads: new Map(),
      readsWaiting: [],
      lastCommitSeen: 0,
    };
  }

  /** (Re)starts a node from its disk, as a process restart would. */
  private startNode(n: SimNode): void {
    const snap = n.disk.snapshot();
    const nodeRng = this.rng.fork();
    n.raw = new RawNode({
      id: n.id,
      storage: n.disk,
      electionTick: ELECTION_TICK,
      heartbeatTick: HEARTBEAT_TICK,
      rand: () => nodeRng.next(),
      preVote: this.preVote,
      checkQuorum: this.checkQuorum,
      maxSizePerMsg: this.maxSizePerMsg,
      maxInflight: this.maxInflight,
      maxEntriesPerMsg: this.maxEntriesPerMsg,
      applied: snap.index,
    });
    n.sm = new KvStateMachine();
    n.sm.restore(snap.data);
    n.conf = { voters: [...snap.conf.voters], learners: [...snap.conf.learners] };
    n.applied = snap.index;
    n.proposals = new Map();
    n.pendingReads = new Map();
    n.readsWaiting = [];
    n.lastCommitSeen = n.disk.initialState().hardState.commit;
    // Like a real node: an initial member whose disk is empty (never bootstrapped, or crashed before the
    // bootstrap Ready was persisted) bootstraps (again). All initial members write identical entries.
    if (this.initialVoters.includes(n.id) && n.disk.lastIndex() === 0 && n.disk.hardStateNow().term === 0) {
      n.raw.bootstrap({ voters: this.initialVoters, learners: [] });
    }
  }

  private crash(n: SimNode): void {
    n.raw = null;
    this.stats.crashes++;
  }

  private fail(detail: string): never {
    throw new SimFailure(this.seed, this.step, detail);
  }

  // ---- network ----

  private send(m: Message): void {
    if (this.inFlight.length >= MAX_IN_FLIGHT) return;
    if (this.rng.chance(this.lossRate)) return;
    if (m.type === 'snapshot') this.stats.snapshotsSent++;
    if (m.type === 'app' && m.entries.length > this.maxEntriesPerMsg)
      this.fail(`append with ${m.entries.length} entries`);
    this.inFlight.push({ at: this.step + this.rng.int(0, this.maxDelay), msg: m });
    if (this.rng.chance(this.dupRate))
      this.inFlight.push({ at: this.step + this.rng.int(0, this.maxDelay + 2), msg: m });
  }

  private deliver(): void {
    const due: InFlight[] = [];
    const later: InFlight[] = [];
    for (const f of this.inFlight) (f.at <= this.step ? due : later).push(f);
    this.inFlight = later;
    for (const { msg } of due) {
      if (this.blocked.has(`${msg.from}>${msg.to}`)) continue;
      const n = this.nodes.get(msg.to);
      if (!n?.raw) continue;
      try {
        n.raw.step(msg);
      } catch (err) {
        // Correct nodes never send structurally invalid messages: INVALID_ARGUMENT here is a bug.
        if (err instanceof RaftError && err.code !== 'INVALID_ARGUMENT') continue;
        throw err;
      }
    }
  }

  // ---- ready processing ----

  private processReady(n: SimNode, allowCrash: boolean): void {
    for (let round = 0; round < MAX_READY_ROUNDS && n.raw?.hasReady(); round++) {
      const raw = n.raw;
      const rd = raw.ready();
      if (this.opts.sabotage === 'sendBeforePersist') for (const m of rd.messages) this.send(m);
      if (allowCrash && this.rng.chance(this.crashRate / 4)) {
        // Crash before the Ready was persisted: its entries/hard state are lost and nothing was sent.
        this.crash(n);
        return;
      }
      this.persist(n, rd);
      if (this.opts.sabotage !== 'sendBeforePersist') for (const m of rd.messages) this.send(m);
      this.apply(n, rd);
      raw.advance(rd);
      this.serveReads(n);
    }
  }

  private persist(n: SimNode, rd: Ready): void {
    if (rd.snapshot) n.disk.applySnapshot(rd.snapshot);
    if (rd.entries.length > 0) {
      n.disk.append(rd.entries);
      const log = n.raw!.raft.log;
      for (const e of rd.entries) this.checkLogMatching(e, log.termOrUndefined(e.index - 1));
    }
    if (rd.hardState) {
      n.disk.setHardState(rd.hardState);
    }
  }

  private checkLogMatching(e: Entry, prevTerm: number | undefined): void {
    const key = `${e.index}:${e.term}`;
    const data = `${e.type}:${bytesKey(e.data)}`;
    const seen = this.logRegistry.get(key);
    if (!seen) {
      this.logRegistry.set(key, { data, prevTerm: prevTerm ?? -1 });
      return;
    }
    if (seen.data !== data)
      this.fail(`log matching: two different entries at index ${e.index} term ${e.term}`);
    if (prevTerm !== undefined && seen.prevTerm !== -1 && seen.prevTerm !== prevTerm) {
      this.fail(
        `log matching: entry ${e.index}@${e.term} follows different terms (${seen.prevTerm} vs ${prevTerm})`,
      );
    }
  }

  private apply(n: SimNode, rd: Ready): void {
    const raw = n.raw!;
    if (rd.snapshot) {
      n.sm.restore(rd.snapshot.data);
      n.conf = { voters: [...rd.snapshot.conf.voters], learners: [...rd.snapshot.conf.learners] };
      n.applied = rd.snapshot.index;
    }
    for (const e of rd.committedEntries) {
      if (e.index !== n.applied + 1) this.fail(`${n.id} applies ${e.index} after ${n.applied}`);
      const key = `${e.term}:${e.type}:${bytesKey(e.data)}`;
      const prior = this.appliedRegistry.get(e.index);
      if (prior === undefined) this.appliedRegistry.set(e.index, key);
      else if (prior !== key)
        this.fail(`state machine safety: ${n.id} applied a different entry at index ${e.index}`);
      if (e.type === 'conf') {
        n.conf = raw.applyConfChange(decodeConfChange(e.data));
      } else if (e.data.byteLength > 0) {
        const cmd = decodeKvCommand(e.data);
        n.sm.apply(cmd);
        const op = n.proposals.get(cmd.id);
        if (op !== undefined) {
          n.proposals.delete(cmd.id);
          this.history[op].ret = this.clock++;
          this.acked.add(cmd.id);
        }
      }
      n.applied = e.index;
    }
    for (const rs of rd.readStates) {
      const key = ctxKey(rs.ctx);
      const op = n.pendingReads.get(key);
      if (op === undefined) continue;
      n.pendingReads.delete(key);
      n.readsWaiting.push({ index: rs.index, op });
    }
  }

  private serveReads(n: SimNode): void {
    if (n.readsWaiting.length === 0) return;
    const still: { index: number; op: number }[] = [];
    for (const w of n.readsWaiting) {
      if (w.index <= n.applied) {
        const op = this.history[w.op];
        if (op.kind === 'get') op.value = n.sm.get(op.key);
        op.ret = this.clock++;
      } else still.push(w);
    }
    n.readsWaiting = still;
  }

  // ---- invariants checked every step ----

  private checkLeaders(): void {
    for (const n of this.nodes.values()) {
      const raw = n.raw;
      if (!raw) continue;
      const r = raw.raft;
      if (r.state === 'leader') {
        const prior = this.leaderOfTerm.get(r.term);
        if (prior === undefined) {
          this.leaderOfTerm.set(r.term, n.id);
          this.stats.leaders++;
        } else if (prior !== n.id) {
          this.fail(`election safety: ${prior} and ${n.id} are both leaders of term ${r.term}`);
        }
        const lk = `${n.id}@${r.term}`;
        if (!this.leadersChecked.has(lk)) {
          this.leadersChecked.add(lk);
          this.checkLeaderCompleteness(n);
        }
        // Record entries this leader newly committed (by counting replicas).
        if (r.log.committed > n.lastCommitSeen) {
          for (let i = n.lastCommitSeen + 1; i <= r.log.committed; i++) {
            const t = r.log.termOrUndefined(i);
            const rec = this.commitRecord.get(i);
            if (t === undefined) continue;
            if (!rec || rec[0] > r.term) this.commitRecord.set(i, [r.term, t]);
          }
          this.maxCommitted = Math.max(this.maxCommitted, r.log.committed);
        }
      }
      n.lastCommitSeen = Math.max(n.lastCommitSeen, r.log.committed);
    }
  }

  /** Leader completeness: a leader of term T holds every entry committed in a term < T. */
  private checkLeaderCompleteness(n: SimNode): void {
    const r = n.raw!.raft;
    const first = r.log.firstIndex();
    const last = r.log.lastIndex();
    for (let i = 1; i <= this.maxCommitted; i++) {
      const rec = this.commitRecord.get(i);
      if (!rec || rec[0] >= r.term) continue;
      if (i < first) continue; // covered by the leader's snapshot, which only holds committed entries
      if (i > last) this.fail(`leader completeness: leader ${n.id}@${r.term} lacks committed entry ${i}`);
      const t = r.log.termOrUndefined(i);
      if (t !== rec[1])
        this.fail(
          `leader completeness: leader ${n.id}@${r.term} has term ${t} at committed ${i}, not ${rec[1]}`,
        );
    }
  }

  // ---- faults and client load ----

  private liveNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.raw !== null);
  }

  private leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes.values()) {
      if (n.raw?.raft.state === 'leader' && (!best || n.raw.raft.term > best.raw!.raft.term)) best = n;
    }
    return best;
  }

  private chaos(): void {
    const r = this.rng;
    // Partitions.
    if (r.chance(0.02)) {
      this.blocked.clear();
      const kind = r.int(0, 2);
      const victim = r.pick(this.ids);
      for (const other of this.ids) {
        if (other === victim) continue;
        if (kind === 0 || kind === 1) this.blocked.add(`${victim}>${other}`); // 1: asymmetric, outbound only
        if (kind === 0 || kind === 2) this.blocked.add(`${other}>${victim}`); // 2: asymmetric, inbound only
      }
      if (r.chance(0.3)) {
        // Split in two halves instead.
        this.blocked.clear();
        const half = new Set(this.ids.filter(() => r.chance(0.5)));
        for (const a of this.ids)
          for (const b of this.ids) if (half.has(a) !== half.has(b)) this.blocked.add(`${a}>${b}`);
      }
    } else if (this.blocked.size > 0 && r.chance(0.03)) {
      this.blocked.clear();
    }
    // Crashes (clean: everything handed over so far was persisted) and restarts.
    for (const n of this.nodes.values()) {
      if (n.raw && r.chance(this.crashRate)) this.crash(n);
      else if (!n.raw && r.chance(0.05)) this.startNode(n);
    }
    // Client operations.
    if (r.chance(this.opRate)) this.clientOp();
    // Membership changes.
    if (r.chance(this.confRate)) this.confChange();
    // Leadership transfer.
    if (r.chance(0.005)) {
      const l = this.leader();
      if (l) l.raw!.transferLeadership(r.pick(l.raw!.raft.trk.voters));
    }
    // Snapshot + compaction.
    if (r.chance(this.compactRate)) {
      const n = r.pick(this.liveNodes());
      if (n) this.compact(n);
    }
  }

  private compact(n: SimNode): void {
    if (n.applied <= n.disk.snapshot().index || n.applied > n.disk.lastIndex()) return;
    n.disk.createSnapshot(n.applied, n.conf, n.sm.snapshot());
    n.disk.compact(Math.max(n.disk.firstIndex() - 1, n.applied - this.rng.int(0, 3)));
  }

  private clientOp(): void {
    const live = this.liveNodes();
    if (live.length === 0) return;
    const n = this.rng.pick(live);
    const key = this.rng.pick(KEYS);
    const raw = n.raw!;
    this.stats.ops++;
    if (this.rng.chance(0.5)) {
      const id = `${n.id}-${++this.opCounter}`;
      const value = `v${this.opCounter}`;
      try {
        raw.propose(encodeKvCommand({ id, key, value }));
      } catch (err) {
        if (err instanceof RaftError) return; // dropped locally: never happened
        throw err;
      }
      this.history.push({ kind: 'put', key, value, call: this.clock++, ret: Number.POSITIVE_INFINITY });
      n.proposals.set(id, this.history.length - 1);
    } else {
      const ctx = new TextEncoder().encode(`r${++this.opCounter}`);
      try {
        raw.readIndex(ctx);
      } catch (err) {
        if (err instanceof RaftError) return;
        throw err;
      }
      this.history.push({ kind: 'get', key, value: null, call: this.clock++, ret: Number.POSITIVE_INFINITY });
      n.pendingReads.set(ctxKey(ctx), this.history.length - 1);
    }
  }

  private confChange(): void {
    const l = this.leader();
    if (!l) return;
    const conf = l.raw!.raft.trk.confState();
    const r = this.rng;
    const options: ConfChange[] = [];
    for (const id of this.ids) {
      const member = conf.voters.includes(id) || conf.learners.includes(id);
      if (!member && !this.removedEver.has(id)) options.push({ type: 'addLearner', node: id });
    }
    for (const id of conf.learners) {
      options.push({ type: 'addVoter', node: id });
      options.push({ type: 'removeNode', node: id });
    }
    if (conf.voters.length > 2) for (const id of conf.voters) options.push({ type: 'removeNode', node: id });
    if (options.length === 0) return;
    const cc = r.pick(options);
    try {
      l.raw!.proposeConfChange(cc);
    } catch (err) {
      if (err instanceof RaftError) return;
      throw err;
    }
    this.stats.confChanges++;
    if (cc.type === 'removeNode') this.removedEver.add(cc.node);
  }

  // ---- driving ----

  private runStep(chaos: boolean): void {
    this.step++;
    if (chaos) this.chaos();
    for (const n of this.nodes.values()) n.raw?.tick();
    this.deliver();
    for (const n of this.nodes.values()) if (n.raw) this.processReady(n, chaos);
    this.checkLeaders();
  }

  /** Runs the whole scenario; throws SimFailure on any violation. */
  run(): SimStats {
    try {
      for (let i = 0; i < this.opts.chaosSteps; i++) this.runStep(true);
      this.heal();
      let converged = false;
      for (let i = 0; i < this.opts.healSteps && !converged; i++) {
        this.runStep(false);
        converged = this.converged();
      }
      if (!converged)
        this.fail(
          `liveness: cluster did not converge within ${this.opts.healSteps} steps after healing (${this.describe()})`,
        );
      this.checkFinal();
    } catch (err) {
      if (err instanceof SimFailure) throw err;
      this.fail(`exception: ${(err as Error).stack ?? String(err)}`);
    }
    this.stats.steps = this.step;
    this.stats.acked = this.acked.size;
    return this.stats;
  }

  private heal(): void {
    this.blocked.clear();
    this.lossRate = 0;
    this.dupRate = 0;
    this.maxDelay = 1;
    for (const n of this.nodes.values()) if (!n.raw) this.startNode(n);
  }

  private members(l: SimNode): SimNode[] {
    const conf = l.raw!.raft.trk.confState();
    return [...conf.voters, ...conf.learners].map((id) => this.nodes.get(id)!).filter(Boolean);
  }

  private converged(): boolean {
    const l = this.leader();
    if (!l) return false;
    const lr = l.raw!.raft;
    if (lr.log.committed !== lr.log.lastIndex() || lr.log.termOrUndefined(lr.log.committed) !== lr.term)
      return false;
    if (lr.pendingConfIndex > l.applied) return false;
    for (const n of this.members(l)) {
      if (!n.raw || n.applied !== lr.log.committed) return false;
    }
    return true;
  }

  private checkFinal(): void {
    const l = this.leader()!;
    const members = this.members(l);
    const fp = l.sm.fingerprint();
    const confKey = JSON.stringify(l.raw!.raft.trk.confState());
    for (const n of members) {
      if (n.sm.fingerprint() !== fp) this.fail(`state machines differ: ${n.id} vs leader ${l.id}`);
      if (JSON.stringify(n.conf) !== confKey)
        this.fail(`configuration differs on ${n.id}: ${JSON.stringify(n.conf)} vs ${confKey}`);
      for (const id of this.acked) {
        if (!n.sm.applied.has(id)) this.fail(`acknowledged write ${id} missing on ${n.id}`);
      }
    }
    const lin = checkKvHistory(this.history);
    if (!lin.ok) {
      this.fail(`history not linearizable on key ${lin.badKey}${lin.exhausted ? ' (search exhausted)' : ''}`);
    }
  }

  private describe(): string {
    return [...this.nodes.values()]
      .map((n) => {
        const r = n.raw?.raft;
        return r
          ? `${n.id}:${r.state}@${r.term} c=${r.log.committed} a=${n.applied} li=${r.log.lastIndex()} lead=${r.lead} conf=${JSON.stringify(r.trk.confState())}`
          : `${n.id}:down`;
      })
      .join('; ');
  }
}

export const DEFAULT_CHAOS_STEPS = 700;
export const DEFAULT_HEAL_STEPS = 500;

export function runSeed(seed: number, sabotage?: SimOptions['sabotage']): SimStats {
  return new Simulation({
    seed,
    chaosSteps: DEFAULT_CHAOS_STEPS,
    healSteps: DEFAULT_HEAL_STEPS,
    sabotage,
  }).run();
}
