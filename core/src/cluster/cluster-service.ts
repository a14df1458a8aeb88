/**
 * Consensus for one node: forms or joins the Raft cluster by itself (formation rule in core/src/raft/README.md),
 * keeps the voter count at its target (autopilot, on the leader), carries Raft over libp2p, and exposes the
 * replicated job log (`CommandLog`) that the job layer writes through. Only a few nodes vote; every other node is
 * a learner that receives the whole log, so it knows its own assignments without asking.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  decode,
  decodeUnchecked,
  encode,
  type JobCommandInput,
  JobCommandSchema,
  RPC_ERRORS,
} from '@meshrun/protocol';
import type { Level } from 'level';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ApplyResult, JobStateMachine } from '../jobs/state-machine.ts';
import type { MeshNode } from '../node/mesh-node.ts';
import { RpcFailure } from '../node/rpc-registry.ts';
import { autopilot, decideFormation } from '../raft/formation.ts';
import type { ConfChange, ConfState, Entry, Status } from '../raft/types.ts';
import type { CommandLog } from './command-log.ts';

/** What the cluster service needs from a Raft driver (core/src/raft/driver.ts provides it). */
export interface ConsensusDriver {
  /** True once the node has any Raft state (bootstrapped, or joined and received the log). */
  hasState(): boolean;
  bootstrap(conf: ConfState): Promise<void>;
  propose(data: Uint8Array, opts?: { timeoutMs?: number }): Promise<{ index: number; result: unknown }>;
  proposeConfChange(cc: ConfChange, opts?: { timeoutMs?: number }): Promise<void>;
  read(opts?: { timeoutMs?: number }): Promise<void>;
  status(): Status;
  transferLeadership(to: string): void;
  stop(): Promise<void>;
}

export interface ClusterServiceOptions {
  node: MeshNode;
  db: Level<string, Uint8Array>;
  log: Logger;
  driver: ConsensusDriver;
  machine: JobStateMachine;
  /** The replicated state machine (for the key-value RPCs). */
  stateMachine: JobLogStateMachine;
  targetVoters: number;
  /** A voter unreachable this long is replaced by a healthy learner (default 30 s). */
  deadVoterAfterMs: number;
  /** Fired whenever leader, term or role change (the daemon re-advertises). */
  onChange?: () => void;
}

/** How often an undecided node re-evaluates formation, and the leader runs autopilot. */
export const FORMATION_INTERVAL_MS = 500;
export const AUTOPILOT_INTERVAL_MS = 1000;
/** A bootstrap decision must be the same this many formation rounds in a row before a node acts on it. */
export const BOOTSTRAP_STABLE_ROUNDS = 3;
const CLUSTER_ID_KEY = 'cluster/id';

/** Cluster ID: derived from the founding voters, so every founder computes the same one. */
export function clusterIdOf(voters: string[]): string {
  return createHash('sha256')
    .update([...voters].sort().join(','))
    .digest('hex')
    .slice(0, 16);
}

/** Bounds of the small replicated key-value map (used for benchmarks and linearizability checks). */
export const KV_LIMITS = { maxKeys: 100_000, maxKeyLength: 256, maxValueBytes: 64 * 1024 } as const;

const KvPutSchema = z.object({
  kv: z.literal('put'),
  key: z.string().min(1).max(KV_LIMITS.maxKeyLength),
  value: z.instanceof(Uint8Array).refine((v) => v.byteLength <= KV_LIMITS.maxValueBytes, 'value too large'),
});
const SnapshotSchema = z.object({
  v: z.literal(2),
  jobs: z.instanceof(Uint8Array),
  kv: z.array(z.tuple([z.string(), z.instanceof(Uint8Array)])).max(KV_LIMITS.maxKeys),
});

/**
 * The Raft state machine adapter: log entries carry CBOR-encoded job commands (or small key-value puts);
 * applying one runs the pure job state machine and tells listeners what happened. Deterministic: every node
 * applying the same entries ends in the same state, and a bad entry is refused the same way everywhere.
 */
export class JobLogStateMachine {
  readonly applied = new EventEmitter();
  readonly machine: JobStateMachine;
  /** Insertion-ordered, so eviction past the key limit is the same on every node. */
  readonly kv = new Map<string, Uint8Array>();
  constructor(machine: JobStateMachine) {
    this.machine = machine;
    this.applied.setMaxListeners(100);
  }
  apply(entry: Entry | Uint8Array): ApplyResult | { ok: true; kv: true } {
    const data = entry instanceof Uint8Array ? entry : entry.data;
    let raw: unknown;
    try {
      raw = decodeUnchecked(data);
    } catch (err) {
      return { ok: false, code: 'INVALID', error: (err as Error).message, stale: false };
    }
    if (raw && typeof raw === 'object' && 'kv' in raw) {
      const put = KvPutSchema.safeParse(raw);
      if (!put.success)
        return { ok: false, code: 'INVALID', error: 'malformed key-value entry', stale: false };
      this.kv.delete(put.data.key);
      this.kv.set(put.data.key, put.data.value);
      if (this.kv.size > KV_LIMITS.maxKeys) this.kv.delete(this.kv.keys().next().value!);
      return { ok: true, kv: true };
    }
    const parsed = JobCommandSchema.safeParse(raw);
    if (!parsed.success)
      return {
        ok: false,
        code: 'INVALID',
        error: parsed.error.issues[0]?.message ?? 'invalid command',
        stale: false,
      };
    const cmd = parsed.data as JobCommandInput;
    const result = this.machine.apply(cmd);
    this.applied.emit('applied', cmd, result);
    return result;
  }
  snapshot(): Uint8Array {
    return encode({ v: 2, jobs: this.machine.snapshot(), kv: [...this.kv.entries()] });
  }
  restore(data: Uint8Array): void {
    const snap = decode(SnapshotSchema, data);
    this.machine.restore(snap.jobs);
    this.kv.clear();
    for (const [k, v] of snap.kv) this.kv.set(k, v);
    this.applied.emit('restored');
  }
}

export class ClusterService implements CommandLog {
  readonly #o: ClusterServiceOptions;
  #clusterId: string | null = null;
  #timers: NodeJS.Timeout[] = [];
  #lastView = '';
  #joining = false;
  #stopped = false;
  #bootstrapView = '';
  readonly #unreachableSince = new Map<string, number>();
  #bootstrapVotes = 0;

  constructor(o: ClusterServiceOptions) {
    this.#o = o;
  }

  get clusterId(): string | null {
    return this.#clusterId;
  }

  async start(): Promise<void> {
    const stored = await this.#o.db.get(CLUSTER_ID_KEY);
    if (stored) this.#clusterId = Buffer.from(stored).toString('utf8');
    this.#registerRpc();
    this.#timers.push(setInterval(() => void this.#formationStep(), FORMATION_INTERVAL_MS));
    this.#timers.push(setInterval(() => void this.#autopilotStep(), AUTOPILOT_INTERVAL_MS));
    this.#timers.push(setInterval(() => this.#notifyIfChanged(), 200));
    for (const t of this.#timers) t.unref();
    void this.#formationStep();
  }

  /** This node's cluster view for its advertisement. */
  view(): {
    id: string | null;
    leader: string | null;
    role: 'leader' | 'follower' | 'learner' | 'candidate' | 'none';
    term: number;
  } {
    if (!this.#o.driver.hasState()) return { id: this.#clusterId, leader: null, role: 'none', term: 0 };
    const s = this.#o.driver.status();
    const self = this.#o.node.peerId;
    const role =
      s.state === 'leader'
        ? 'leader'
        : s.state === 'candidate' || s.state === 'preCandidate'
          ? 'candidate'
          : s.conf.learners.includes(self)
            ? 'learner'
            : s.conf.voters.includes(self)
              ? 'follower'
              : 'none';
    return { id: this.#clusterId, leader: s.lead, role, term: s.term };
  }

  #notifyIfChanged(): void {
    const v = JSON.stringify(this.view());
    if (v !== this.#lastView) {
      this.#lastView = v;
      this.#o.onChange?.();
    }
  }

  async #setClusterId(id: string): Promise<void> {
    if (this.#clusterId === id) return;
    this.#clusterId = id;
    await this.#o.db.put(CLUSTER_ID_KEY, Buffer.from(id), { sync: true });
  }

  // ---- formation -----------------------------------------------------------------------------------

  async #formationStep(): Promise<void> {
    if (this.#stopped || this.#joining) return;
    const self = this.#o.node.peerId;
    if (this.#o.driver.hasState()) {
      const s = this.#o.driver.status();
      if (s.conf.voters.includes(self) || s.conf.learners.includes(self)) {
        // Learn the cluster ID from peers if we joined without it.
        if (!this.#clusterId) {
          const peer = this.#o.node.nodes().find((n) => n.cluster?.id && !n.self);
          if (peer?.cluster?.id) await this.#setClusterId(peer.cluster.id);
        }
        return;
      }
    }
    const discovered = this.#o.node
      .nodes()
      .filter((n) => n.self || n.connected)
      .map((n) => ({
        id: n.peerId,
        clusterId: n.self ? null : (n.cluster?.id ?? null),
        leader: n.self ? null : (n.cluster?.leader ?? null),
      }));
    const decision = decideFormation({ self, expectVoters: this.#o.targetVoters, discovered });
    if (decision.action !== 'bootstrap') this.#bootstrapVotes = 0;
    if (decision.action === 'wait') return;
    if (decision.action === 'bootstrap') {
      if (this.#o.driver.hasState()) return;
      // Act only on a view that held for a few discovery rounds: a node that has not yet heard of a cluster
      // being formed a moment ago gets time to see its advertisement (see core/src/raft/README.md).
      const key = decision.voters.join(',');
      this.#bootstrapVotes = this.#bootstrapView === key ? this.#bootstrapVotes + 1 : 1;
      this.#bootstrapView = key;
      if (this.#bootstrapVotes < BOOTSTRAP_STABLE_ROUNDS) return;
      this.#o.log.info({ voters: decision.voters }, 'bootstrapping a new cluster');
      await this.#setClusterId(clusterIdOf(decision.voters));
      await this.#o.driver.bootstrap({ voters: decision.voters, learners: [] });
      return;
    }
    // Join: ask the cluster (its leader, or any member, which forwards) to add us as a learner.
    this.#joining = true;
    try {
      const reply = (await this.#o.node.call(
        decision.via,
        'cluster.join',
        { id: self },
        { timeoutMs: 5000 },
      )) as { clusterId: string };
      if (reply?.clusterId) await this.#setClusterId(reply.clusterId);
      this.#o.log.info({ via: decision.via }, 'joined the cluster as a learner');
    } catch (err) {
      this.#o.log.debug({ via: decision.via, err: (err as Error).message }, 'join attempt failed');
    } finally {
      this.#joining = false;
    }
  }

  // ---- autopilot ---------------------------------------------------------------------------------------

  async #autopilotStep(): Promise<void> {
    if (this.#stopped || !this.#o.driver.hasState()) return;
    const s = this.#o.driver.status();
    if (s.state !== 'leader') return;
    const connected = new Set(this.#o.node.peers().map((p) => p.peerId));
    connected.add(s.id);
    const health = new Map<string, { alive: boolean; lastContactTicks: number; matchIndex: number }>();
    const now = Date.now();
    for (const [id, p] of Object.entries(s.progress)) {
      const reachable = id === s.id || (connected.has(id) && p.recentActive);
      if (reachable) this.#unreachableSince.delete(id);
      else if (!this.#unreachableSince.has(id)) this.#unreachableSince.set(id, now);
      // A voter counts as dead only after a while: a restart must not cost a node its seat (removed IDs
      // cannot come back), like Consul autopilot's stabilization time.
      const dead = !reachable && now - (this.#unreachableSince.get(id) ?? now) >= this.#o.deadVoterAfterMs;
      const isVoter = s.conf.voters.includes(id);
      health.set(id, { alive: isVoter ? !dead : reachable, lastContactTicks: 0, matchIndex: p.match });
    }
    const lastIndex = s.progress[s.id]?.match ?? s.commit;
    const cc = autopilot({ conf: s.conf, targetVoters: this.#o.targetVoters, health, lastIndex });
    if (!cc) return;
    if (cc.type === 'removeNode' && cc.node === s.id) return;
    this.#o.log.info({ change: cc }, 'autopilot membership change');
    await this.#o.driver
      .proposeConfChange(cc, { timeoutMs: 5000 })
      .catch((err: Error) => this.#o.log.warn({ err: err.message }, 'autopilot change failed'));
  }

  // ---- CommandLog ---------------------------------------------------------------------------------------

  async propose(cmd: JobCommandInput, opts: { timeoutMs?: number } = {}): Promise<ApplyResult> {
    if (!this.#o.driver.hasState())
      throw new RpcFailure(RPC_ERRORS.unavailable, 'this node has not joined a cluster yet');
    const { result } = await this.#o.driver.propose(encode(cmd), { timeoutMs: opts.timeoutMs ?? 10_000 });
    return result as ApplyResult;
  }

  async readBarrier(): Promise<void> {
    if (!this.#o.driver.hasState()) return;
    await this.#o.driver.read({ timeoutMs: 5000 });
  }

  isLeader(): boolean {
    return this.#o.driver.hasState() && this.#o.driver.status().state === 'leader';
  }

  leaderId(): string | null {
    return this.#o.driver.hasState() ? this.#o.driver.status().lead : null;
  }

  // ---- RPC ---------------------------------------------------------------------------------------------

  status(): Record<string, unknown> {
    const self = this.#o.node.peerId;
    if (!this.#o.driver.hasState()) {
      return {
        id: self,
        clusterId: this.#clusterId,
        leader: null,
        term: 0,
        commit: 0,
        applied: 0,
        role: 'none',
        voters: [],
        learners: [],
      };
    }
    const s = this.#o.driver.status();
    const connected = new Set(this.#o.node.peers().map((p) => p.peerId));
    const member = (id: string) => ({
      id,
      match: s.progress[id]?.match ?? null,
      reachable: id === self || connected.has(id),
    });
    return {
      id: self,
      clusterId: this.#clusterId,
      leader: s.lead,
      term: s.term,
      commit: s.commit,
      applied: s.applied,
      role: this.view().role,
      voters: s.conf.voters.map(member),
      learners: s.conf.learners.map(member),
    };
  }

  #registerRpc(): void {
    const rpc = this.#o.node.rpc;
    // Match indexes are known only to the leader: a follower asks it, and answers alone if it cannot.
    const statusViaLeader = async (local: boolean) => {
      const mine = this.status();
      const leader = mine.leader as string | null;
      if (local || !leader || leader === this.#o.node.peerId) return mine;
      try {
        const theirs = (await this.#o.node.call(
          leader,
          'cluster.status',
          { local: true },
          { timeoutMs: 2000 },
        )) as Record<string, unknown>;
        return { ...theirs, id: mine.id, role: mine.role, applied: mine.applied, leaderView: true };
      } catch {
        return mine;
      }
    };
    rpc.register('cluster.status', z.object({ local: z.boolean().default(false) }).strict(), ({ local }) =>
      statusViaLeader(local),
    );
    rpc.register('cluster', z.object({}).strict(), () => statusViaLeader(false));
    rpc.register(
      'cluster.join',
      z.object({ id: z.string().min(1).max(128) }).strict(),
      async ({ id }, ctx) => {
        if (!this.#o.driver.hasState()) throw new RpcFailure(RPC_ERRORS.unavailable, 'not a cluster member');
        const s = this.#o.driver.status();
        // Only the joining node itself (authenticated by its connection) may ask, or a member forwarding for it.
        const remote = ctx.remotePeer ?? '';
        const forwardedByMember = s.conf.voters.includes(remote) || s.conf.learners.includes(remote);
        if (ctx.via === 'p2p' && remote !== id && !forwardedByMember)
          throw new RpcFailure(RPC_ERRORS.forbidden, 'a node can only add itself');
        if (s.conf.voters.includes(id) || s.conf.learners.includes(id)) return { clusterId: this.#clusterId };
        if (s.state !== 'leader') {
          if (!s.lead) throw new RpcFailure(RPC_ERRORS.unavailable, 'no leader right now');
          return this.#o.node.call(s.lead, 'cluster.join', { id }, { timeoutMs: 5000 });
        }
        await this.#o.driver.proposeConfChange({ type: 'addLearner', node: id }, { timeoutMs: 5000 });
        return { clusterId: this.#clusterId };
      },
    );
    rpc.register(
      'kv.put',
      z
        .object({ key: z.string().min(1).max(KV_LIMITS.maxKeyLength), value: z.instanceof(Uint8Array) })
        .strict(),
      async ({ key, value }) => {
        if (value.byteLength > KV_LIMITS.maxValueBytes)
          throw new RpcFailure(RPC_ERRORS.badRequest, 'value too large');
        if (!this.#o.driver.hasState())
          throw new RpcFailure(RPC_ERRORS.unavailable, 'this node has not joined a cluster yet');
        const { index } = await this.#o.driver.propose(encode({ kv: 'put', key, value }), {
          timeoutMs: 10_000,
        });
        return { index };
      },
    );
    rpc.register(
      'kv.get',
      z.object({ key: z.string().min(1).max(KV_LIMITS.maxKeyLength) }).strict(),
      async ({ key }) => {
        await this.readBarrier();
        return { value: this.#o.stateMachine.kv.get(key) ?? null };
      },
    );
    rpc.register('cluster.transfer', z.object({ to: z.string().min(1).max(128) }).strict(), ({ to }) => {
      this.#o.driver.transferLeadership(to);
      return { ok: true };
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    await this.#o.driver.stop();
  }
}
