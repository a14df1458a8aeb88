/**
 * Consensus for one node: forms or joins the Raft cluster by itself (formation rule in core/src/raft/README.md),
 * keeps the voter count at its target (autopilot, on the leader), carries Raft over libp2p, and exposes the
 * replicated job log (`CommandLog`) that the job layer writes through. Only a few nodes vote; every other node is
 * a learner that receives the whole log, so it knows its own assignments without asking.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { peerIdFromString } from '@libp2p/peer-id';
import {
  decode,
  decodeUnchecked,
  encode,
  expandTasksFinished,
  type JobCommandInput,
  JobCommandSchema,
  RPC_ERRORS,
  TasksFinishedCommandSchema,
  validateJobSpec,
} from '@meshrun/protocol';
import type { Level } from 'level';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { ApplyErrorCode, ApplyResult, JobStateMachine } from '../jobs/state-machine.ts';
import type { MeshNode } from '../node/mesh-node.ts';
import { type RpcContext, RpcFailure } from '../node/rpc-registry.ts';
import { autopilot, decideFormation } from '../raft/formation.ts';
import type { ConfChange, ConfState, Entry, Status } from '../raft/types.ts';
import { BATCH_LIMITS, BATCHABLE_COMMANDS, CommandBatcher } from './command-batcher.ts';
import type { CommandLog, ProposeOptions } from './command-log.ts';
import { canonicalParams, RequestAuthSchema, verifyRequest } from './submitter-keys.ts';

/** What the cluster service needs from a Raft driver (core/src/raft/driver.ts provides it). */
export interface ConsensusDriver {
  /** True once the node has any Raft state (bootstrapped, or joined and received the log). */
  hasState(): boolean;
  bootstrap(conf: ConfState): Promise<void>;
  propose(data: Uint8Array, opts?: { timeoutMs?: number }): Promise<{ index: number; result: unknown }>;
  proposeConfChange(cc: ConfChange, opts?: { timeoutMs?: number }): Promise<void>;
  read(opts?: { timeoutMs?: number }): Promise<void>;
  status(): Status;
  /** Peers a Raft message arrived from in the last `ms` milliseconds (RaftDriver.heardWithin). */
  heardWithin(ms: number): Set<string>;
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
/**
 * A member counts as reachable (autopilot) and alive (the jobs service) while a Raft message from it arrived
 * this recently. Followers answer the leader's heartbeats several times a second; two seconds leaves room for a
 * loaded machine without hiding a node that is really gone for long (autopilot and the jobs TTL add their own
 * waits on top).
 */
export const RAFT_CONTACT_MS = 2000;
/**
 * A member that has known no leader this long while a connected peer of its cluster names one asks that
 * leader to admit it again (see #formationStep); and at most this often.
 */
export const REJOIN_AFTER_LEADERLESS_MS = 5000;
/** A bootstrap decision must be the same this many formation rounds in a row before a node acts on it. */
export const BOOTSTRAP_STABLE_ROUNDS = 3;
/**
 * A task's start report waits this long in the command batcher (see CommandBatcher's startHoldMs): most tasks
 * of a high-rate job end sooner, and then one command reports both. The cost is that a longer task shows as
 * running this much later.
 */
export const START_REPORT_HOLD_MS = 50;
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
const RoleSchema = z.enum(['submit', 'admin']);
type Role = z.infer<typeof RoleSchema>;
interface TrustedKey {
  role: Role;
  name: string;
  addedAt: number;
  revoked: boolean;
}
/** Trusted submitter keys kept in the replicated state. */
export const MAX_TRUSTED_KEYS = 10_000;
const SignedSchema = z.object({ method: z.string().max(64), params: z.unknown(), auth: RequestAuthSchema });
export type SignedRequest = z.infer<typeof SignedSchema>;
const WrappedSchema = z
  .object({ cmd: z.unknown(), signed: SignedSchema.optional(), local: z.string().max(128).optional() })
  .refine((w) => (w.signed === undefined) !== (w.local === undefined), 'exactly one of signed or local');
const TrustEntrySchema = z
  .object({
    trust: z.enum(['add', 'revoke']),
    key: z.string().min(1).max(128),
    role: RoleSchema.optional(),
    name: z.string().min(1).max(64).optional(),
    at: z.number().int().nonnegative(),
    signed: SignedSchema.optional(),
    local: z.string().max(128).optional(),
  })
  .refine(
    (e) => e.trust === 'revoke' || (e.role !== undefined && e.name !== undefined),
    'add needs role and name',
  )
  .refine((e) => (e.signed === undefined) !== (e.local === undefined), 'exactly one of signed or local');
type Origin = { kind: 'plain' } | { kind: 'local'; node: string } | { kind: 'signed'; signed: SignedRequest };

const BatchEntrySchema = z
  .object({ batch: z.array(z.instanceof(Uint8Array)).min(1).max(BATCH_LIMITS.maxCommands) })
  .strict();

function refuse(code: ApplyErrorCode, error: string): ApplyResult {
  return { ok: false, code, error, stale: false };
}

const SnapshotSchema = z.object({
  v: z.literal(2),
  jobs: z.instanceof(Uint8Array),
  kv: z.array(z.tuple([z.string(), z.instanceof(Uint8Array)])).max(KV_LIMITS.maxKeys),
  trust: z
    .array(
      z.tuple([
        z.string(),
        z.object({ role: RoleSchema, name: z.string(), addedAt: z.number(), revoked: z.boolean() }),
      ]),
    )
    .max(MAX_TRUSTED_KEYS)
    .default([]),
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
  apply(
    entry: Entry | Uint8Array,
  ): ApplyResult | { ok: true; kv: true } | { ok: true; batch: ApplyResult[] } {
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
    if (raw && typeof raw === 'object' && 'trust' in raw) return this.#applyTrust(raw);
    if (raw && typeof raw === 'object' && 'batch' in raw) return this.#applyBatch(raw);
    let cmdRaw: unknown = raw;
    let origin: Origin = { kind: 'plain' };
    if (raw && typeof raw === 'object' && 'cmd' in raw) {
      const w = WrappedSchema.safeParse(raw);
      if (!w.success) return refuse('INVALID', 'malformed signed entry');
      cmdRaw = w.data.cmd;
      origin = w.data.local
        ? { kind: 'local', node: w.data.local }
        : { kind: 'signed', signed: w.data.signed! };
    }
    return this.#applyCommand(cmdRaw, origin, false);
  }

  /** Validates, authorizes and applies one job command; `batched` commands must need no origin. */
  #applyCommand(cmdRaw: unknown, origin: Origin, batched: boolean): ApplyResult {
    const parsed = JobCommandSchema.safeParse(cmdRaw);
    if (!parsed.success) return refuse('INVALID', parsed.error.issues[0]?.message ?? 'invalid command');
    const cmd = parsed.data as JobCommandInput;
    // Every node re-checks who may do this, from the log alone: a peer cannot submit in someone's name.
    const denied =
      batched && !BATCHABLE_COMMANDS.has(cmd.type)
        ? `${cmd.type} cannot be batched`
        : this.#authorize(cmd, origin);
    if (denied) return refuse('INVALID', denied);
    const result = this.machine.applyValid(parsed.data);
    this.applied.emit('applied', cmd, result);
    return result;
  }

  /**
   * A group of node-generated commands (see command-batcher.ts), applied in order as if each were its own
   * entry; the result has one answer per command. Commands that need an origin are refused inside a batch.
   */
  #applyBatch(raw: object): ApplyResult | { ok: true; batch: ApplyResult[] } {
    const b = BatchEntrySchema.safeParse(raw);
    if (!b.success) return refuse('INVALID', 'malformed batch entry');
    const results: ApplyResult[] = [];
    for (const bytes of b.data.batch) {
      let cmdRaw: unknown;
      try {
        cmdRaw = decodeUnchecked(bytes);
      } catch (err) {
        results.push(refuse('INVALID', (err as Error).message));
        continue;
      }
      if ((cmdRaw as { type?: unknown } | null)?.type === 'tasksFinished') {
        results.push(...this.#applyFolded(cmdRaw, BATCH_LIMITS.maxCommands - results.length));
        continue;
      }
      results.push(this.#applyCommand(cmdRaw, { kind: 'plain' }, true));
    }
    return { ok: true, batch: results };
  }

  /**
   * A folded report (protocol/src/job.ts, tasksFinished): its taskFinished commands, applied in order as if
   * each were its own batched command, with one result each; validated once, as columns. A malformed one
   * answers once, as any malformed command does. Refused whole when it would take the batch past
   * `room` commands (the proposer never folds more than a batch holds).
   */
  #applyFolded(raw: unknown, room: number): ApplyResult[] {
    const parsed = TasksFinishedCommandSchema.safeParse(raw);
    if (!parsed.success) return [refuse('INVALID', parsed.error.issues[0]?.message ?? 'invalid command')];
    if (parsed.data.index.length > room)
      return [refuse('INVALID', `a batch carries at most ${BATCH_LIMITS.maxCommands} commands`)];
    const results: ApplyResult[] = [];
    for (const cmd of expandTasksFinished(parsed.data)) {
      const result = this.machine.applyValid(cmd);
      this.applied.emit('applied', cmd, result);
      results.push(result);
    }
    return results;
  }

  /** The trusted submitter keys (replicated). */
  readonly trust = new Map<string, TrustedKey>();

  /** Keys are required once any is trusted; until then (a fresh cluster) the cluster key alone suffices. */
  get secured(): boolean {
    return [...this.trust.values()].some((k) => !k.revoked);
  }

  /** Why `key` may not act, or null. */
  keyProblem(keyId: string, roles: Role[]): string | null {
    const k = this.trust.get(keyId);
    if (!k)
      return `unknown key ${keyId}: an admin must add it first (meshrun keys add ${keyId} --role submit --name NAME)`;
    if (k.revoked) return `key ${keyId} (${k.name}) was revoked`;
    if (!roles.includes(k.role))
      return `key ${keyId} (${k.name}) has role ${k.role}; this needs ${roles.join(' or ')}`;
    return null;
  }

  submitterOf(keyId: string): string {
    return `key:${this.trust.get(keyId)?.name ?? '?'}:${keyId}`;
  }

  #authorize(cmd: JobCommandInput, origin: Origin): string | null {
    if (cmd.type !== 'submitJob' && cmd.type !== 'cancelJob') return null; // node-generated: fenced by attempts
    if (origin.kind === 'local') return null; // the machine's owner, through the data dir, is admin
    if (origin.kind === 'plain')
      return this.secured ? 'this cluster requires a signed request (use --key)' : null;
    const { auth, method, params } = origin.signed;
    const bad = verifyRequest(auth, method, params, cmd.at);
    if (bad) return bad;
    if (cmd.type === 'submitJob') {
      if (method !== 'jobs.submit') return 'signature is for another method';
      const problem = this.keyProblem(auth.key, ['submit', 'admin']);
      if (problem) return problem;
      if (cmd.submitter !== this.submitterOf(auth.key)) return 'submitter does not match the signing key';
      let signedSpec: unknown;
      try {
        signedSpec = validateJobSpec((params as { spec?: unknown })?.spec);
      } catch {
        return 'the signed spec is invalid';
      }
      if (!Buffer.from(encode(signedSpec)).equals(Buffer.from(encode(cmd.spec))))
        return 'the job is not the one that was signed';
      return null;
    }
    if (method !== 'jobs.cancel' || (params as { jobId?: unknown })?.jobId !== cmd.jobId)
      return 'signature is for another request';
    const problem = this.keyProblem(auth.key, ['submit', 'admin']);
    if (problem) return problem;
    const job = this.machine.job(cmd.jobId);
    if (this.trust.get(auth.key)?.role !== 'admin' && job && job.submitter !== this.submitterOf(auth.key)) {
      return `key ${auth.key} may only cancel its own jobs (this one is ${job.submitter}'s)`;
    }
    return null;
  }

  #applyTrust(raw: object): { ok: true; kv: true } | ApplyResult {
    const t = TrustEntrySchema.safeParse(raw);
    if (!t.success) return refuse('INVALID', 'malformed trust entry');
    const e = t.data;
    if (!e.local) {
      const { auth, method, params } = e.signed!;
      const bad = verifyRequest(auth, method, params, e.at);
      if (bad) return refuse('INVALID', bad);
      const problem = this.keyProblem(auth.key, ['admin']);
      if (problem) return refuse('INVALID', problem);
      const p = params as { key?: unknown; role?: unknown; name?: unknown };
      if (
        method !== `keys.${e.trust}` ||
        p?.key !== e.key ||
        (e.trust === 'add' && (p.role !== e.role || p.name !== e.name))
      ) {
        return refuse('INVALID', 'the key change is not the one that was signed');
      }
    }
    if (e.trust === 'add') {
      if (this.trust.get(e.key)?.revoked)
        return refuse('INVALID', `key ${e.key} was revoked; make a new key`);
      if (this.trust.size >= MAX_TRUSTED_KEYS) return refuse('INVALID', 'too many keys');
      this.trust.set(e.key, { role: e.role!, name: e.name!, addedAt: e.at, revoked: false });
    } else {
      const k = this.trust.get(e.key);
      if (!k) return refuse('NOT_FOUND', `unknown key ${e.key}`);
      k.revoked = true;
    }
    return { ok: true, kv: true };
  }

  snapshot(): Uint8Array {
    return encode({
      v: 2,
      jobs: this.machine.snapshot(),
      kv: [...this.kv.entries()],
      trust: [...this.trust.entries()],
    });
  }
  restore(data: Uint8Array): void {
    const snap = decode(SnapshotSchema, data);
    this.machine.restore(snap.jobs);
    this.kv.clear();
    for (const [k, v] of snap.kv) this.kv.set(k, v);
    this.trust.clear();
    for (const [k, v] of snap.trust) this.trust.set(k, { ...v });
    this.applied.emit('restored');
  }
}

export interface Principal {
  submitter: string;
  admin: boolean;
  origin: ProposeOptions;
}

export class ClusterService implements CommandLog {
  readonly #o: ClusterServiceOptions;
  #clusterId: string | null = null;
  #timers: NodeJS.Timeout[] = [];
  #lastView = '';
  #joining = false;
  #stopped = false;
  #bootstrapView = '';
  #bootstrapped = false;
  readonly #unreachableSince = new Map<string, number>();
  #bootstrapVotes = 0;
  /** Since when this member has known no leader (0: it knows one). */
  #leaderlessSince = 0;
  #lastRejoinAt = 0;
  /** Node-generated job commands go into the log in groups (see command-batcher.ts). */
  readonly #batcher = new CommandBatcher<ApplyResult>(
    async (encoded, timeoutMs, commands) => {
      const { result } = await this.#o.driver.propose(encode({ batch: encoded }), { timeoutMs });
      const r = result as ApplyResult | { ok: true; batch: ApplyResult[] };
      if ('batch' in r) return r.batch;
      // The entry as a whole was refused (cannot happen with a well-formed batch): every command gets that answer.
      return Array.from({ length: commands }, () => r as ApplyResult);
    },
    undefined,
    START_REPORT_HOLD_MS,
  );

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
    // Timer steps never overlap and never throw out of the timer (an unhandled rejection would end the daemon).
    const guarded = (name: string, step: () => Promise<void>) => {
      let running = false;
      return () => {
        if (running) return;
        running = true;
        step()
          .catch((err: Error) => this.#o.log.warn({ err: err.message }, `${name} step failed`))
          .finally(() => {
            running = false;
          });
      };
    };
    const formation = guarded('formation', () => this.#formationStep());
    this.#timers.push(setInterval(formation, FORMATION_INTERVAL_MS));
    this.#timers.push(
      setInterval(
        guarded('autopilot', () => this.#autopilotStep()),
        AUTOPILOT_INTERVAL_MS,
      ),
    );
    this.#timers.push(setInterval(() => this.#notifyIfChanged(), 200));
    for (const t of this.#timers) t.unref();
    formation();
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
        const leader = this.#leaderToAskForReadmission(s.lead);
        if (leader) await this.#join(leader, true);
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
      // hasState() reads persisted storage, which lags a bootstrap by one Ready: remember that we did it.
      if (this.#bootstrapped || this.#o.driver.hasState()) return;
      // Act only on a view that held for a few discovery rounds: a node that has not yet heard of a cluster
      // being formed a moment ago gets time to see its advertisement (see core/src/raft/README.md).
      const key = decision.voters.join(',');
      this.#bootstrapVotes = this.#bootstrapView === key ? this.#bootstrapVotes + 1 : 1;
      this.#bootstrapView = key;
      if (this.#bootstrapVotes < BOOTSTRAP_STABLE_ROUNDS) return;
      this.#o.log.info({ voters: decision.voters }, 'bootstrapping a new cluster');
      this.#bootstrapped = true;
      await this.#setClusterId(clusterIdOf(decision.voters));
      await this.#o.driver.bootstrap({ voters: decision.voters, learners: [] });
      return;
    }
    await this.#join(decision.via, false);
  }

  /**
   * Asks the cluster (its leader, or any member, which forwards) to add this node as a learner. Idempotent:
   * a member is only told the cluster ID.
   */
  async #join(via: string, readmission: boolean): Promise<void> {
    this.#joining = true;
    try {
      const reply = (await this.#o.node.call(
        via,
        'cluster.join',
        { id: this.#o.node.peerId },
        { timeoutMs: 5000 },
      )) as { clusterId: string };
      if (reply?.clusterId) await this.#setClusterId(reply.clusterId);
      if (readmission) this.#o.log.info({ via }, 'asked the leader to admit this node again');
      else this.#o.log.info({ via }, 'joined the cluster as a learner');
    } catch (err) {
      this.#o.log.debug({ via, err: (err as Error).message }, 'join attempt failed');
    } finally {
      this.#joining = false;
    }
  }

  /**
   * The leader to ask for readmission, or null. A node removed while it was away (stopped, asleep, cut off)
   * never receives the entry that removes it: its own configuration still lists it, it hears from no leader
   * and its proposals fail with "no leader known" for good. So a member that has known no leader for
   * REJOIN_AFTER_LEADERLESS_MS while a connected peer of its cluster names one asks that leader to admit it;
   * a member is only told so, a removed node comes back as a learner and catches up (including its removal).
   */
  #leaderToAskForReadmission(lead: string | null): string | null {
    const now = Date.now();
    if (lead) {
      this.#leaderlessSince = 0;
      return null;
    }
    if (this.#leaderlessSince === 0) this.#leaderlessSince = now;
    if (now - this.#leaderlessSince < REJOIN_AFTER_LEADERLESS_MS) return null;
    if (now - this.#lastRejoinAt < REJOIN_AFTER_LEADERLESS_MS) return null;
    const self = this.#o.node.peerId;
    const named = this.#o.node
      .nodes()
      .find(
        (n) =>
          !n.self &&
          n.connected &&
          n.cluster?.id === this.#clusterId &&
          n.cluster?.leader &&
          n.cluster.leader !== self,
      );
    if (!named?.cluster?.leader) return null;
    this.#lastRejoinAt = now;
    return named.cluster.leader;
  }

  // ---- autopilot ---------------------------------------------------------------------------------------

  async #autopilotStep(): Promise<void> {
    if (this.#stopped || !this.#o.driver.hasState()) return;
    const s = this.#o.driver.status();
    if (s.state !== 'leader') return;
    const connected = new Set(this.#o.node.peers().map((p) => p.peerId));
    connected.add(s.id);
    const heard = this.#o.driver.heardWithin(RAFT_CONTACT_MS);
    const health = new Map<string, { alive: boolean; lastContactTicks: number; matchIndex: number }>();
    const now = Date.now();
    for (const [id, p] of Object.entries(s.progress)) {
      const reachable = id === s.id || (connected.has(id) && heard.has(id));
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

  async propose(cmd: JobCommandInput, opts: ProposeOptions = {}): Promise<ApplyResult> {
    if (!this.#o.driver.hasState())
      throw new RpcFailure(RPC_ERRORS.unavailable, 'this node has not joined a cluster yet');
    if (!opts.signed && !opts.local && BATCHABLE_COMMANDS.has(cmd.type)) return this.#batcher.submit(cmd);
    const entry = opts.signed
      ? { cmd, signed: opts.signed }
      : opts.local
        ? { cmd, local: this.#o.node.peerId }
        : cmd;
    const { result } = await this.#o.driver.propose(encode(entry), { timeoutMs: opts.timeoutMs ?? 10_000 });
    return result as ApplyResult;
  }

  /**
   * Who is asking, at the front door (the log re-checks signed requests when it applies them): the machine's
   * owner through the local API is admin; a signed request acts as its key (if trusted); an unsigned request from
   * a peer is accepted only while the cluster trusts no key yet.
   */
  authorize(
    method: string,
    rawParams: unknown,
    ctx: RpcContext,
    roles: ('submit' | 'admin')[] = ['submit', 'admin'],
  ): Principal {
    const sm = this.#o.stateMachine;
    const params = canonicalParams(rawParams);
    if (ctx.via === 'local')
      return { submitter: `local:${this.#o.node.peerId}`, admin: true, origin: { local: true } };
    if (ctx.auth !== undefined && ctx.auth !== null) {
      const auth = RequestAuthSchema.safeParse(ctx.auth);
      if (!auth.success) throw new RpcFailure(RPC_ERRORS.forbidden, 'malformed request signature');
      const bad = verifyRequest(auth.data, method, params, Date.now());
      if (bad) throw new RpcFailure(RPC_ERRORS.forbidden, bad);
      const problem = sm.keyProblem(auth.data.key, roles);
      if (problem) throw new RpcFailure(RPC_ERRORS.forbidden, problem);
      return {
        submitter: sm.submitterOf(auth.data.key),
        admin: sm.trust.get(auth.data.key)?.role === 'admin',
        origin: { signed: { method, params, auth: auth.data } },
      };
    }
    if (sm.secured) {
      throw new RpcFailure(
        RPC_ERRORS.forbidden,
        'this cluster requires a submitter key: pass --key FILE (make one with `meshrun keys new FILE` and ask an admin to add it)',
      );
    }
    // Open cluster (no key trusted yet): holding the cluster key is enough, as before keys existed.
    return { submitter: `peer:${ctx.remotePeer ?? 'unknown'}`, admin: true, origin: {} };
  }

  /** Adds or revokes a trusted submitter key (signed by an admin key, or by the local owner). */
  async changeTrust(
    entry: { trust: 'add' | 'revoke'; key: string; role?: string; name?: string },
    origin: ProposeOptions,
  ): Promise<void> {
    if (!this.#o.driver.hasState())
      throw new RpcFailure(RPC_ERRORS.unavailable, 'this node has not joined a cluster yet');
    const body = {
      ...entry,
      at: Date.now(),
      ...(origin.signed ? { signed: origin.signed } : { local: this.#o.node.peerId }),
    };
    const { result } = await this.#o.driver.propose(encode(body), { timeoutMs: 10_000 });
    const r = result as { ok: boolean; error?: string };
    if (!r.ok) throw new RpcFailure(RPC_ERRORS.forbidden, r.error ?? 'refused');
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

  activeMembers(): string[] {
    if (!this.isLeader()) return [];
    const { progress, id } = this.#o.driver.status();
    const heard = this.#o.driver.heardWithin(RAFT_CONTACT_MS);
    return Object.keys(progress).filter((peer) => peer !== id && heard.has(peer));
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
    rpc.register(
      'keys.add',
      z
        .object({
          key: z.string().min(1).max(128),
          role: z.enum(['submit', 'admin']),
          name: z.string().min(1).max(64),
        })
        .strict(),
      async (p, ctx) => {
        const who = this.authorize('keys.add', p, ctx, ['admin']);
        try {
          peerIdFromString(p.key);
        } catch {
          throw new RpcFailure(
            RPC_ERRORS.badRequest,
            `"${p.key}" is not a key ID (meshrun keys new prints it)`,
          );
        }
        await this.changeTrust({ trust: 'add', ...p }, who.origin);
        return { key: p.key, role: p.role, name: p.name };
      },
    );
    rpc.register('keys.revoke', z.object({ key: z.string().min(1).max(128) }).strict(), async (p, ctx) => {
      const who = this.authorize('keys.revoke', p, ctx, ['admin']);
      await this.changeTrust({ trust: 'revoke', key: p.key }, who.origin);
      return { key: p.key, revoked: true };
    });
    rpc.register('keys.list', z.object({}).strict(), async () => {
      await this.readBarrier().catch(() => {});
      return [...this.#o.stateMachine.trust.entries()].map(([key, k]) => ({ key, ...k }));
    });
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
