/**
 * The Raft state machine (pure: no I/O, no timers, no global randomness). Driven by `tick()` and `step()`;
 * its outputs (messages to send, entries to persist, entries to apply) are collected by RawNode into a Ready.
 *
 * Follows the structure of etcd-io/raft: pre-vote, check-quorum with leader leases, fast log backtracking,
 * probe/replicate/snapshot flow control, ReadIndex (safe variant: one heartbeat round per batch), leadership
 * transfer, single-server membership changes with learners.
 */

import { RaftLog } from './log.ts';
import { type Progress, ProgressTracker } from './progress.ts';
import { committedIndex, voteResult } from './quorum.ts';
import type { RaftStorage } from './storage.ts';
import { CompactedError, SnapshotTemporarilyUnavailableError, UnavailableError } from './storage.ts';
import type {
  ConfChange,
  ConfState,
  Entry,
  HardState,
  HeartbeatRespMessage,
  Message,
  NodeId,
  ReadIndexMessage,
  ReadState,
  SoftState,
  StateType,
} from './types.ts';
import { decodeConfChange, entrySize, RaftError } from './types.ts';

export interface RaftConfig {
  id: NodeId;
  storage: RaftStorage;
  /** Ticks without hearing from a leader before a follower campaigns (randomized in [e, 2e)). */
  electionTick: number;
  /** Ticks between leader heartbeats; must be < electionTick. */
  heartbeatTick: number;
  /** Uniform random numbers in [0, 1) (a seeded PRNG in tests). */
  rand: () => number;
  preVote?: boolean;
  checkQuorum?: boolean;
  /** Max bytes of entries per append message (at least one entry is always sent). */
  maxSizePerMsg?: number;
  /** Max entries per append message; must not exceed the wire schema's RAFT_LIMITS.maxEntriesPerMessage. */
  maxEntriesPerMsg?: number;
  /** Max append messages in flight per follower in replicate state. */
  maxInflight?: number;
  /** Max bytes in flight per follower (0 = unbounded by bytes). */
  maxInflightBytes?: number;
  /** Max bytes of proposed-but-uncommitted entries on the leader; more proposals are dropped. */
  maxUncommittedSize?: number;
  /** Max bytes of committed entries handed out in one Ready. */
  maxCommittedSizePerReady?: number;
  /** Max ReadIndex requests waiting on the leader (pending first commit or heartbeat quorum). */
  maxPendingReads?: number;
  /** Ticks a follower may stay in snapshot state before the leader assumes the snapshot was lost. */
  snapshotTimeoutTicks?: number;
  /** Last applied index at restart (defaults to the snapshot index). */
  applied?: number;
}

export const DEFAULTS = {
  maxSizePerMsg: 1024 * 1024,
  maxEntriesPerMsg: 4096,
  maxInflight: 256,
  maxInflightBytes: 0,
  maxUncommittedSize: 64 * 1024 * 1024,
  maxCommittedSizePerReady: 16 * 1024 * 1024,
  maxPendingReads: 4096,
} as const;

interface ReadIndexRequest {
  index: number;
  from: NodeId;
  ctx: Uint8Array;
  acks: Set<NodeId>;
}

export function ctxKey(ctx: Uint8Array): string {
  return Buffer.from(ctx.buffer, ctx.byteOffset, ctx.byteLength).toString('hex');
}

/** Outcome of stepping a message: null, or an error the local caller should see. */
export type StepResult = RaftError | null;

export class Raft {
  readonly id: NodeId;
  term = 0;
  vote: NodeId | null = null;
  lead: NodeId | null = null;
  state: StateType = 'follower';
  readonly log: RaftLog;
  readonly trk: ProgressTracker;
  msgs: Message[] = [];
  readStates: ReadState[] = [];

  private readonly electionTimeout: number;
  private readonly heartbeatTimeout: number;
  private randomizedElectionTimeout = 0;
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private readonly rand: () => number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  private readonly maxSizePerMsg: number;
  private readonly maxEntriesPerMsg: number;
  private readonly maxUncommittedSize: number;
  private readonly maxPendingReads: number;
  private readonly snapshotTimeoutTicks: number;
  private uncommittedSize = 0;
  leadTransferee: NodeId | null = null;
  /** A conf change is pending until applied >= this index: no new one may be proposed before. */
  pendingConfIndex = 0;
  private readQueue: ReadIndexRequest[] = [];
  private readByCtx = new Map<string, ReadIndexRequest>();
  /** ReadIndex requests received before the leader committed an entry of its term. */
  private pendingReadIndexMessages: ReadIndexMessage[] = [];

  constructor(c: RaftConfig) {
    if (c.heartbeatTick <= 0 || c.electionTick <= c.heartbeatTick) {
      throw new RaftError('BAD_CONFIG', 'need 0 < heartbeatTick < electionTick');
    }
    if (!c.id) throw new RaftError('BAD_CONFIG', 'id must not be empty');
    this.id = c.id;
    this.electionTimeout = c.electionTick;
    this.heartbeatTimeout = c.heartbeatTick;
    this.rand = c.rand;
    this.preVote = c.preVote ?? true;
    this.checkQuorum = c.checkQuorum ?? true;
    this.maxSizePerMsg = c.maxSizePerMsg ?? DEFAULTS.maxSizePerMsg;
    this.maxEntriesPerMsg = c.maxEntriesPerMsg ?? DEFAULTS.maxEntriesPerMsg;
    this.maxUncommittedSize = c.maxUncommittedSize ?? DEFAULTS.maxUncommittedSize;
    this.maxPendingReads = c.maxPendingReads ?? DEFAULTS.maxPendingReads;
    this.snapshotTimeoutTicks = c.snapshotTimeoutTicks ?? c.electionTick * 5;
    this.log = new RaftLog(c.storage, c.maxCommittedSizePerReady ?? DEFAULTS.maxCommittedSizePerReady);
    this.trk = new ProgressTracker(
      c.maxInflight ?? DEFAULTS.maxInflight,
      c.maxInflightBytes ?? DEFAULTS.maxInflightBytes,
    );
    const { hardState, confState } = c.storage.initialState();
    this.trk.resetConf(confState, this.log.lastIndex() + 1);
    if (hardState.term !== 0 || hardState.vote !== null || hardState.commit !== 0) this.loadState(hardState);
    if (c.applied !== undefined && c.applied > 0) this.log.appliedTo(Math.min(c.applied, this.log.committed));
    this.becomeFollower(this.term, null);
  }

  private loadState(hs: HardState): void {
    if (hs.commit < this.log.committed || hs.commit > this.log.lastIndex()) {
      throw new Error(
        `raft: hardState commit ${hs.commit} is out of range [${this.log.committed}, ${this.log.lastIndex()}]`,
      );
    }
    this.log.committed = hs.commit;
    this.term = hs.term;
    this.vote = hs.vote;
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  softState(): SoftState {
    return { lead: this.lead, state: this.state };
  }

  /** A voter in the current configuration (learners and removed nodes never campaign). */
  promotable(): boolean {
    return this.trk.isVoter(this.id) && !this.log.unstable.snapshot;
  }

  private send(m: Message): void {
    this.msgs.push(m);
  }

  // ---- state transitions ----

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = null;
    }
    this.lead = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.abortLeaderTransfer();
    this.trk.resetVotes();
    const last = this.log.lastIndex();
    for (const [id, pr] of this.trk.progress) {
      const fresh = this.trk.newProgress(last + 1, pr.isLearner);
      if (id === this.id) fresh.match = last;
      this.trk.progress.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedSize = 0;
    this.readQueue = [];
    this.readByCtx = new Map();
    this.pendingReadIndexMessages = [];
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.electionTimeout + Math.floor(this.rand() * this.electionTimeout);
  }

  becomeFollower(term: number, lead: NodeId | null): void {
    this.reset(term);
    this.lead = lead;
    this.state = 'follower';
  }

  private becomePreCandidate(): void {
    if (this.state === 'leader') throw new Error('raft: invalid transition [leader -> pre-candidate]');
    // Pre-vote does not change term or vote, so a partitioned node cannot inflate terms.
    this.trk.resetVotes();
    this.lead = null;
    this.state = 'preCandidate';
  }

  private becomeCandidate(): void {
    if (this.state === 'leader') throw new Error('raft: invalid transition [leader -> candidate]');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.state = 'candidate';
  }

  private becomeLeader(): void {
    if (this.state === 'follower') throw new Error('raft: invalid transition [follower -> leader]');
    this.reset(this.term);
    this.lead = this.id;
    this.state = 'leader';
    const self = this.trk.progress.get(this.id);
    if (self) {
      self.becomeReplicate();
      self.recentActive = true;
    }
    // An empty entry of the new term: committing it commits everything before it (§5.4.2) and tells the
    // leader which entries are committed (needed before serving ReadIndex).
    this.appendEntry([{ term: 0, index: 0, type: 'normal', data: new Uint8Array(0) }]);
    // No conf change until the entry above is applied: the single-server change fix (Ongaro, raft-dev 2015).
    this.pendingConfIndex = this.log.lastIndex();
  }

  // ---- ticking ----

  tick(): void {
    if (this.state === 'leader') this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0;
      if (this.checkQuorum) {
        const self = this.trk.progress.get(this.id);
        if (self) self.recentActive = true;
        if (!this.trk.quorumActive()) {
          this.becomeFollower(this.term, null);
          return;
        }
        for (const [id, pr] of this.trk.progress) if (id !== this.id) pr.recentActive = false;
      }
      // A transfer that did not finish within an election timeout is abandoned.
      if (this.leadTransferee !== null) this.abortLeaderTransfer();
    }
    for (const [id, pr] of this.trk.progress) {
      if (id === this.id || pr.state !== 'snapshot') continue;
      pr.snapshotTicks++;
      if (pr.snapshotTicks >= this.snapshotTimeoutTicks) pr.becomeProbe();
    }
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  // ---- elections ----

  /** Starts an election (pre-vote first unless forced by a leadership transfer). */
  hup(transfer: boolean): void {
    if (this.state === 'leader') return;
    if (!this.promotable()) return;
    // Refuse while there are unapplied conf changes: we might campaign under a stale configuration.
    if (this.hasUnappliedConfChanges()) return;
    if (this.preVote && !transfer) this.campaign('preVote', false);
    else this.campaign('vote', transfer);
  }

  private hasUnappliedConfChanges(): boolean {
    if (this.log.applied >= this.log.committed) return false;
    let lo = this.log.applied + 1;
    const hi = this.log.committed + 1;
    // Bounded scan in pages of maxSizePerMsg.
    while (lo < hi) {
      let ents: Entry[];
      try {
        ents = this.log.slice(lo, hi, this.maxSizePerMsg);
      } catch {
        return true;
      }
      if (ents.length === 0) return false;
      if (ents.some((e) => e.type === 'conf')) return true;
      lo = ents[ents.length - 1].index + 1;
    }
    return false;
  }

  private campaign(kind: 'vote' | 'preVote', transfer: boolean): void {
    let term: number;
    if (kind === 'preVote') {
      this.becomePreCandidate();
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      term = this.term;
    }
    // Vote for ourselves (durably, via the hard state, for a real vote).
    if (this.poll(this.id, true) === 'won') {
      if (kind === 'preVote') this.campaign('vote', false);
      else this.becomeLeader();
      return;
    }
    for (const id of this.trk.voters) {
      if (id === this.id) continue;
      this.send({
        type: kind,
        from: this.id,
        to: id,
        term,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        transfer,
      });
    }
  }

  private poll(id: NodeId, granted: boolean): 'won' | 'lost' | 'pending' {
    if (!this.trk.votes.has(id)) this.trk.votes.set(id, granted);
    return voteResult(this.trk.voters, this.trk.votes);
  }

  // ---- stepping ----

  step(m: Message): StepResult {
    // prop, readIndex and transferLeader are requests forwarded to the leader: they carry no term (0) and
    // are handled like local requests, whatever the sender's term.
    const forwarded = m.type === 'prop' || m.type === 'readIndex' || m.type === 'transferLeader';
    // Term handling common to all states.
    if (forwarded) {
      // no term checks
    } else if (m.term > this.term) {
      if (m.type === 'vote' || m.type === 'preVote') {
        const inLease = this.checkQuorum && this.lead !== null && this.electionElapsed < this.electionTimeout;
        // Leader lease: while we hear from a leader, ignore campaigners (a partitioned node rejoining must not
        // disrupt the cluster), unless the election is a leadership transfer.
        if (!m.transfer && inLease) return null;
      }
      if (m.type === 'preVote') {
        // Never change our term in response to a pre-vote.
      } else if (m.type === 'preVoteResp' && !m.reject) {
        // Granted pre-votes carry the future term; we bump our term when we win the pre-vote.
      } else {
        const leaderMsg = m.type === 'app' || m.type === 'heartbeat' || m.type === 'snapshot';
        this.becomeFollower(m.term, leaderMsg ? m.from : null);
      }
    } else if (m.term < this.term) {
      if ((this.checkQuorum || this.preVote) && (m.type === 'heartbeat' || m.type === 'app')) {
        // A stale leader (e.g. after a partition): tell it our term so it steps down. Without this, a node
        // that bumped its term while partitioned could never rejoin while the old leader keeps sending.
        this.send({
          type: 'appResp',
          from: this.id,
          to: m.from,
          term: this.term,
          index: 0,
          reject: false,
          rejectHint: 0,
          logTerm: 0,
        });
      } else if (m.type === 'preVote') {
        this.send({ type: 'preVoteResp', from: this.id, to: m.from, term: this.term, reject: true });
      }
      return null;
    }

    switch (m.type) {
      case 'vote':
      case 'preVote': {
        const canVote =
          this.vote === m.from ||
          (this.vote === null && this.lead === null) ||
          (m.type === 'preVote' && m.term > this.term);
        const respType = m.type === 'vote' ? 'voteResp' : 'preVoteResp';
        if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
          // Granted pre-votes answer with the campaign's term so the pre-candidate does not drop them.
          this.send({ type: respType, from: this.id, to: m.from, term: m.term, reject: false });
          if (m.type === 'vote') {
            this.electionElapsed = 0;
            this.vote = m.from;
          }
        } else {
          this.send({ type: respType, from: this.id, to: m.from, term: this.term, reject: true });
        }
        return null;
      }
      default:
        break;
    }

    switch (this.state) {
      case 'leader':
        return this.stepLeader(m);
      case 'candidate':
      case 'preCandidate':
        return this.stepCandidate(m);
      case 'follower':
        return this.stepFollower(m);
    }
  }

  /** Local proposal (from the application). */
  propose(entries: Entry[]): StepResult {
    return this.handleProp({ type: 'prop', from: this.id, to: this.id, term: 0, entries });
  }

  private handleProp(m: {
    type: 'prop';
    from: NodeId;
    to: NodeId;
    term: number;
    entries: Entry[];
  }): StepResult {
    if (m.entries.length === 0) return new RaftError('INVALID_ARGUMENT', 'empty proposal');
    if (this.state === 'leader') {
      if (!this.trk.isMember(this.id))
        return new RaftError('PROPOSAL_DROPPED', 'leader was removed from the cluster');
      if (this.leadTransferee !== null) {
        return new RaftError('PROPOSAL_DROPPED', `leadership transfer to ${this.leadTransferee} in progress`);
      }
      const ents: Entry[] = [];
      for (const e of m.entries) {
        if (e.type === 'conf') {
          if (this.pendingConfIndex > this.log.applied) {
            return new RaftError('PROPOSAL_DROPPED', 'another membership change is pending');
          }
          const err = this.validateConfChange(e.data);
          if (err) return err;
          this.pendingConfIndex = this.log.lastIndex() + ents.length + 1;
        }
        ents.push({ term: 0, index: 0, type: e.type, data: e.data });
      }
      if (!this.appendEntry(ents))
        return new RaftError('PROPOSAL_DROPPED', 'too many uncommitted bytes on the leader');
      this.bcastAppend();
      return null;
    }
    if (this.state === 'follower' && this.lead !== null) {
      this.send({ type: 'prop', from: this.id, to: this.lead, term: 0, entries: m.entries });
      return null;
    }
    return new RaftError('PROPOSAL_DROPPED', `no leader known at term ${this.term}`);
  }

  private validateConfChange(data: Uint8Array): StepResult {
    let cc: ConfChange;
    try {
      cc = decodeConfChange(data);
    } catch (err) {
      return err as RaftError;
    }
    const voters = this.trk.voters;
    if (
      (cc.type === 'removeNode' || cc.type === 'addLearner') &&
      voters.includes(cc.node) &&
      voters.length === 1
    ) {
      return new RaftError('INVALID_CONF_CHANGE', 'cannot remove or demote the last voter');
    }
    return null;
  }

  private appendEntry(es: Entry[]): boolean {
    const size = RaftLog.sizeOf(es);
    if (this.uncommittedSize > 0 && size > 0 && this.uncommittedSize + size > this.maxUncommittedSize)
      return false;
    this.uncommittedSize += size;
    let li = this.log.lastIndex();
    const stamped = es.map((e) => ({ term: this.term, index: ++li, type: e.type, data: e.data }));
    li = this.log.append(stamped);
    // The leader's own log counts toward the quorum; the application persists it before sending anything.
    this.trk.progress.get(this.id)?.maybeUpdate(li);
    this.maybeCommit();
    return true;
  }

  /** Called by RawNode when committed entries are handed to the application. */
  reduceUncommittedSize(ents: Entry[]): void {
    if (this.state !== 'leader') return;
    this.uncommittedSize = Math.max(0, this.uncommittedSize - RaftLog.sizeOf(ents));
  }

  private maybeCommit(): boolean {
    const mci = committedIndex(this.trk.voters, (id) => this.trk.progress.get(id)?.match ?? 0);
    return this.log.maybeCommit(mci, this.term);
  }

  // ---- leader ----

  private stepLeader(m: Message): StepResult {
    switch (m.type) {
      case 'prop':
        // Forwarded proposals that fail are dropped silently: the proposer times out.
        this.handleProp(m);
        return null;
      case 'readIndex':
        this.handleReadIndex(m);
        return null;
      case 'transferLeader':
        this.handleTransferLeader(m.transferee);
        return null;
      default:
        break;
    }
    const pr = this.trk.progress.get(m.from);
    if (!pr) return null;
    switch (m.type) {
      case 'appResp': {
        pr.recentActive = true;
        if (m.reject) {
          let nextProbeIdx = m.rejectHint;
          if (m.logTerm > 0) nextProbeIdx = this.log.findConflictByTerm(m.rejectHint, m.logTerm)[0];
          if (pr.maybeDecrTo(m.index, nextProbeIdx)) {
            if (pr.state === 'replicate') pr.becomeProbe();
            this.sendAppend(m.from);
          }
        } else {
          const oldPaused = pr.isPaused();
          if (pr.maybeUpdate(m.index)) {
            if (pr.state === 'probe') pr.becomeReplicate();
            else if (pr.state === 'snapshot' && pr.match + 1 >= this.log.firstIndex()) {
              pr.becomeProbe();
              pr.becomeReplicate();
            } else if (pr.state === 'replicate') pr.inflights.freeLE(m.index);
            if (this.maybeCommit()) {
              this.releasePendingReadIndexMessages();
              this.bcastAppend();
            } else if (oldPaused) {
              this.sendAppend(m.from);
            }
            // Stream as much as the flow control allows.
            let bound = this.trk.maxInflight;
            while (bound-- > 0 && this.maybeSendAppend(m.from, false)) {}
            if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
              this.sendTimeoutNow(m.from);
            }
          }
        }
        return null;
      }
      case 'heartbeatResp': {
        pr.recentActive = true;
        pr.msgAppFlowPaused = false;
        if (pr.match < this.log.lastIndex()) {
          // A lost append at the end of the window would otherwise stall replication forever.
          if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirstOne();
          this.sendAppend(m.from);
        }
        if (m.ctx.byteLength > 0) this.recvReadAck(m);
        return null;
      }
      default:
        return null;
    }
  }

  private handleTransferLeader(transferee: NodeId): void {
    const pr = this.trk.progress.get(transferee);
    if (!pr || pr.isLearner) return;
    if (this.leadTransferee !== null) {
      if (this.leadTransferee === transferee) return;
      this.abortLeaderTransfer();
    }
    if (transferee === this.id) return;
    this.electionElapsed = 0;
    this.leadTransferee = transferee;
    if (pr.match === this.log.lastIndex()) this.sendTimeoutNow(transferee);
    else this.sendAppend(transferee);
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send({ type: 'timeoutNow', from: this.id, to, term: this.term });
  }

  abortLeaderTransfer(): void {
    this.leadTransferee = null;
  }

  private bcastAppend(): void {
    for (const id of this.trk.progress.keys()) if (id !== this.id) this.sendAppend(id);
  }

  private bcastHeartbeat(): void {
    const last = this.readQueue[this.readQueue.length - 1];
    this.bcastHeartbeatWithCtx(last ? last.ctx : new Uint8Array(0));
  }

  private bcastHeartbeatWithCtx(ctx: Uint8Array): void {
    for (const [id, pr] of this.trk.progress) {
      if (id === this.id) continue;
      // Never tell a follower to commit beyond what it is known to have.
      const commit = Math.min(pr.match, this.log.committed);
      this.send({ type: 'heartbeat', from: this.id, to: id, term: this.term, commit, ctx });
    }
  }

  sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  /** Sends entries (or a snapshot) to `to` if flow control allows. Returns whether a message was sent. */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.trk.progress.get(to);
    if (!pr || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    let prevTerm: number;
    let ents: Entry[];
    try {
      prevTerm = this.log.term(prevIndex);
      ents = this.log.entries(pr.next, this.maxSizePerMsg);
      if (ents.length > this.maxEntriesPerMsg) ents = ents.slice(0, this.maxEntriesPerMsg);
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError)
        return this.maybeSendSnapshot(to, pr);
      throw err;
    }
    if (ents.length === 0 && !sendIfEmpty) return false;
    let bytes = 0;
    for (const e of ents) bytes += entrySize(e);
    this.send({
      type: 'app',
      from: this.id,
      to,
      term: this.term,
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed,
    });
    pr.sentEntries(ents.length, ents.length > 0 ? ents[ents.length - 1].index : prevIndex, bytes);
    return true;
  }

  private maybeSendSnapshot(to: NodeId, pr: Progress): boolean {
    // Snapshots are big: only send to a follower that is known to be reachable.
    if (!pr.recentActive) return false;
    let snap: ReturnType<RaftLog['snapshot']>;
    try {
      snap = this.log.snapshot();
    } catch (err) {
      if (err instanceof SnapshotTemporarilyUnavailableError) return false;
      throw err;
    }
    if (snap.index === 0) return false;
    this.send({ type: 'snapshot', from: this.id, to, term: this.term, snapshot: snap });
    pr.becomeSnapshot(snap.index);
    return true;
  }

  // ---- ReadIndex ----

  /** Local ReadIndex request. */
  readIndex(ctx: Uint8Array): StepResult {
    if (this.state === 'leader') {
      this.handleReadIndex({ type: 'readIndex', from: this.id, to: this.id, term: this.term, ctx });
      return null;
    }
    if (this.state === 'follower' && this.lead !== null) {
      this.send({ type: 'readIndex', from: this.id, to: this.lead, term: 0, ctx });
      return null;
    }
    return new RaftError('READ_DROPPED', `no leader known at term ${this.term}`);
  }

  private handleReadIndex(m: ReadIndexMessage): void {
    if (this.trk.voters.length === 1 && this.trk.isVoter(this.id)) {
      // Single voter: our commit index is authoritative as long as we are the leader.
      this.answerRead(m.from, m.ctx, this.log.committed);
      return;
    }
    // Until an entry of our term is committed we do not know the commit index (§6.4, step 1).
    if (!this.committedEntryInCurrentTerm()) {
      if (this.pendingReadIndexMessages.length < this.maxPendingReads) this.pendingReadIndexMessages.push(m);
      return;
    }
    if (this.readQueue.length >= this.maxPendingReads) return;
    const key = ctxKey(m.ctx);
    if (this.readByCtx.has(key)) return;
    const req: ReadIndexRequest = {
      index: this.log.committed,
      from: m.from,
      ctx: m.ctx,
      acks: new Set([this.id]),
    };
    this.readByCtx.set(key, req);
    this.readQueue.push(req);
    // Confirm leadership with one heartbeat round carrying ctx (§6.4, step 3).
    this.bcastHeartbeatWithCtx(m.ctx);
  }

  private committedEntryInCurrentTerm(): boolean {
    return this.log.termOrUndefined(this.log.committed) === this.term;
  }

  private releasePendingReadIndexMessages(): void {
    if (this.pendingReadIndexMessages.length === 0 || !this.committedEntryInCurrentTerm()) return;
    const pending = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of pending) this.handleReadIndex(m);
  }

  private recvReadAck(m: HeartbeatRespMessage): void {
    const req = this.readByCtx.get(ctxKey(m.ctx));
    if (!req) return;
    req.acks.add(m.from);
    let granted = 0;
    for (const id of this.trk.voters) if (req.acks.has(id)) granted++;
    if (granted < Math.floor(this.trk.voters.length / 2) + 1) return;
    // Acknowledging a later request confirms every earlier one too (heartbeats are ordered per leader term).
    const pos = this.readQueue.indexOf(req);
    const done = this.readQueue.splice(0, pos + 1);
    for (const r of done) {
      this.readByCtx.delete(ctxKey(r.ctx));
      this.answerRead(r.from, r.ctx, r.index);
    }
  }

  private answerRead(from: NodeId, ctx: Uint8Array, index: number): void {
    if (from === this.id) this.readStates.push({ index, ctx });
    else this.send({ type: 'readIndexResp', from: this.id, to: from, term: this.term, ctx, index });
  }

  // ---- candidate ----

  private stepCandidate(m: Message): StepResult {
    const myRespType = this.state === 'preCandidate' ? 'preVoteResp' : 'voteResp';
    switch (m.type) {
      case 'prop':
        return null;
      case 'app':
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        return null;
      case 'heartbeat':
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return null;
      case 'snapshot':
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return null;
      case 'preVoteResp':
      case 'voteResp': {
        if (m.type !== myRespType) return null;
        const res = this.poll(m.from, !m.reject);
        if (res === 'won') {
          if (this.state === 'preCandidate') this.campaign('vote', false);
          else {
            this.becomeLeader();
            this.bcastAppend();
          }
        } else if (res === 'lost') {
          this.becomeFollower(this.term, null);
        }
        return null;
      }
      default:
        return null;
    }
  }

  // ---- follower ----

  private stepFollower(m: Message): StepResult {
    switch (m.type) {
      case 'prop':
        if (this.lead === null) return null;
        this.send({ ...m, to: this.lead, from: this.id });
        return null;
      case 'app':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppendEntries(m);
        return null;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return null;
      case 'snapshot':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return null;
      case 'transferLeader':
        if (this.lead !== null) this.send({ ...m, from: this.id, to: this.lead, term: 0 });
        return null;
      case 'timeoutNow':
        // Leadership transfer: campaign at once, skipping pre-vote (the leader agreed).
        this.hup(true);
        return null;
      case 'readIndex':
        if (this.lead !== null) this.send({ ...m, from: m.from, to: this.lead });
        return null;
      case 'readIndexResp':
        this.readStates.push({ index: m.index, ctx: m.ctx });
        return null;
      default:
        return null;
    }
  }

  private handleAppendEntries(m: Extract<Message, { type: 'app' }>): void {
    if (m.index < this.log.committed) {
      this.send({
        type: 'appResp',
        from: this.id,
        to: m.from,
        term: this.term,
        index: this.log.committed,
        reject: false,
        rejectHint: 0,
        logTerm: 0,
      });
      return;
    }
    const lastNew = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.send({
        type: 'appResp',
        from: this.id,
        to: m.from,
        term: this.term,
        index: lastNew,
        reject: false,
        rejectHint: 0,
        logTerm: 0,
      });
      return;
    }
    const [hintIndex, hintTerm] = this.log.findConflictByTerm(
      Math.min(m.index, this.log.lastIndex()),
      m.logTerm,
    );
    this.send({
      type: 'appResp',
      from: this.id,
      to: m.from,
      term: this.term,
      index: m.index,
      reject: true,
      rejectHint: hintIndex,
      logTerm: hintTerm,
    });
  }

  private handleHeartbeat(m: Extract<Message, { type: 'heartbeat' }>): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    this.send({ type: 'heartbeatResp', from: this.id, to: m.from, term: this.term, ctx: m.ctx });
  }

  private handleSnapshot(m: Extract<Message, { type: 'snapshot' }>): void {
    const s = m.snapshot;
    if (this.restore(s)) {
      this.send({
        type: 'appResp',
        from: this.id,
        to: m.from,
        term: this.term,
        index: this.log.lastIndex(),
        reject: false,
        rejectHint: 0,
        logTerm: 0,
      });
    } else {
      this.send({
        type: 'appResp',
        from: this.id,
        to: m.from,
        term: this.term,
        index: this.log.committed,
        reject: false,
        rejectHint: 0,
        logTerm: 0,
      });
    }
  }

  /** Installs a snapshot from the leader. Returns false if it was not needed. */
  private restore(s: Extract<Message, { type: 'snapshot' }>['snapshot']): boolean {
    if (s.index <= this.log.committed) return false;
    // Only followers install snapshots (candidates became followers before getting here).
    if (this.state !== 'follower') return false;
    if (this.log.matchTerm(s.index, s.term)) {
      // We already have the entries: just fast-forward the commit index.
      this.log.commitTo(s.index);
      return false;
    }
    this.log.restore(s);
    this.trk.resetConf(s.conf, this.log.lastIndex() + 1);
    const self = this.trk.progress.get(this.id);
    if (self) self.match = this.log.lastIndex();
    return true;
  }

  // ---- membership ----

  /** Applies a committed conf change (the application calls this when it applies the entry). */
  applyConfChange(cc: ConfChange): ConfState {
    const t = this.trk;
    const last = this.log.lastIndex();
    switch (cc.type) {
      case 'addVoter': {
        if (t.isVoter(cc.node)) break;
        const pr = t.progress.get(cc.node);
        t.learners = t.learners.filter((l) => l !== cc.node);
        t.voters = [...t.voters, cc.node].sort();
        if (pr) pr.isLearner = false;
        else {
          const fresh = t.newProgress(last + 1, false);
          fresh.recentActive = true;
          t.progress.set(cc.node, fresh);
        }
        break;
      }
      case 'addLearner': {
        if (t.learners.includes(cc.node)) break;
        if (t.isVoter(cc.node) && t.voters.length === 1) break; // never demote the last voter
        t.voters = t.voters.filter((v) => v !== cc.node);
        t.learners = [...t.learners, cc.node].sort();
        const pr = t.progress.get(cc.node);
        if (pr) pr.isLearner = true;
        else {
          const fresh = t.newProgress(last + 1, true);
          fresh.recentActive = true;
          t.progress.set(cc.node, fresh);
        }
        break;
      }
      case 'removeNode': {
        if (!t.isMember(cc.node)) break;
        if (t.isVoter(cc.node) && t.voters.length === 1) break; // never remove the last voter
        t.voters = t.voters.filter((v) => v !== cc.node);
        t.learners = t.learners.filter((l) => l !== cc.node);
        t.progress.delete(cc.node);
        break;
      }
    }
    if (this.state === 'leader') {
      if (!t.isVoter(this.id)) {
        // Removed or demoted leader steps down; the rest elects a new one.
        this.becomeFollower(this.term, null);
      } else {
        if (this.leadTransferee !== null && !t.isVoter(this.leadTransferee)) this.abortLeaderTransfer();
        // The quorum changed: something may be committed now.
        if (this.maybeCommit()) this.bcastAppend();
        else for (const id of t.progress.keys()) if (id !== this.id) this.maybeSendAppend(id, false);
      }
    }
    return t.confState();
  }
}
