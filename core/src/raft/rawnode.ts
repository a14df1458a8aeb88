/**
 * RawNode: the application-facing wrapper around the pure Raft state machine. It batches the state
 * machine's outputs into `Ready` structs and takes them back with `advance()`.
 *
 * Contract for each Ready (see README): persist hardState/entries/snapshot durably, THEN send messages,
 * then apply the snapshot and committedEntries, then call advance(ready). Do not call ready() again before
 * advance(). step()/tick()/propose() may be called at any time in between.
 */
import type { RaftConfig } from './raft.ts';
import { Raft } from './raft.ts';
import type {
  ConfChange,
  ConfState,
  Entry,
  HardState,
  Message,
  NodeId,
  ProgressStatus,
  Ready,
  SoftState,
  Status,
} from './types.ts';
import { encodeConfChange, hardStateEqual, isEmptyHardState, RaftError } from './types.ts';

/** The same settings as the core's (see RaftConfig for what each means). */
export type RawNodeConfig = RaftConfig;

export class RawNode {
  readonly raft: Raft;
  private prevSoftState: SoftState;
  private prevHardState: HardState;
  private readyPending = false;

  constructor(config: RawNodeConfig) {
    this.raft = new Raft({ ...config });
    this.prevSoftState = this.raft.softState();
    this.prevHardState = this.raft.hardState();
  }

  get id(): NodeId {
    return this.raft.id;
  }

  /**
   * Initializes a brand-new node as a member of a new cluster with the given configuration. Every
   * bootstrapping member must be given the same conf (voters are sorted, so order does not matter).
   * Writes one conf entry per voter/learner at term 1, all committed.
   */
  bootstrap(conf: ConfState): void {
    const r = this.raft;
    if (r.log.lastIndex() !== 0 || r.term !== 0) {
      throw new RaftError('BAD_CONFIG', 'bootstrap on a node that already has state');
    }
    const voters = [...new Set(conf.voters)].sort();
    const learners = [...new Set(conf.learners)].filter((l) => !voters.includes(l)).sort();
    if (voters.length === 0) throw new RaftError('BAD_CONFIG', 'bootstrap needs at least one voter');
    const changes: ConfChange[] = [
      ...voters.map((node): ConfChange => ({ type: 'addVoter', node })),
      ...learners.map((node): ConfChange => ({ type: 'addLearner', node })),
    ];
    const ents: Entry[] = changes.map((cc, i) => ({
      term: 1,
      index: i + 1,
      type: 'conf',
      data: encodeConfChange(cc),
    }));
    r.becomeFollower(1, null);
    r.log.append(ents);
    r.log.committed = ents.length;
    // Apply the configuration now; re-applying the entries later (they are committed) is a no-op.
    for (const cc of changes) r.applyConfChange(cc);
  }

  tick(): void {
    this.raft.tick();
  }

  /** Campaign now (skips the election timer; still runs pre-vote). */
  campaign(): void {
    this.raft.hup(false);
  }

  /** Proposes data to be appended; throws RaftError('PROPOSAL_DROPPED') when it cannot be (no leader, ...). */
  propose(data: Uint8Array): void {
    const err = this.raft.propose([{ term: 0, index: 0, type: 'normal', data }]);
    if (err) throw err;
  }

  /** Proposes a single membership change. It takes effect when the app applies it via applyConfChange(). */
  proposeConfChange(cc: ConfChange): void {
    const err = this.raft.propose([{ term: 0, index: 0, type: 'conf', data: encodeConfChange(cc) }]);
    if (err) throw err;
  }

  applyConfChange(cc: ConfChange): ConfState {
    return this.raft.applyConfChange(cc);
  }

  /**
   * Steps a message received from a peer. Messages from unknown senders are still processed (votes).
   * Structurally inconsistent messages (which the wire schema cannot rule out) throw RaftError INVALID_ARGUMENT.
   */
  step(m: Message): void {
    if (m.to !== this.raft.id) return;
    const problem = checkMessage(m);
    if (problem) throw new RaftError('INVALID_ARGUMENT', `invalid ${m.type} from ${m.from}: ${problem}`);
    const err = this.raft.step(m);
    if (err) throw err;
  }

  transferLeadership(to: NodeId): void {
    this.raft.step({ type: 'transferLeader', from: this.raft.id, to: this.raft.id, term: 0, transferee: to });
  }

  /** Requests a linearizable read point for ctx; the answer arrives as a ReadState in a later Ready. */
  readIndex(ctx: Uint8Array): void {
    const err = this.raft.readIndex(ctx);
    if (err) throw err;
  }

  /** The transport could not reach `id`: stop optimistic streaming to it. */
  reportUnreachable(id: NodeId): void {
    const r = this.raft;
    if (r.state !== 'leader') return;
    const pr = r.trk.progress.get(id);
    if (pr && pr.state === 'replicate') pr.becomeProbe();
  }

  /** The transport finished (or failed) sending a snapshot to `id`. */
  reportSnapshot(id: NodeId, ok: boolean): void {
    const r = this.raft;
    if (r.state !== 'leader') return;
    const pr = r.trk.progress.get(id);
    if (pr?.state !== 'snapshot') return;
    if (!ok) pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the follower's answer (or the next heartbeat) before probing.
    pr.msgAppFlowPaused = true;
  }

  hasReady(): boolean {
    const r = this.raft;
    const ss = r.softState();
    if (ss.lead !== this.prevSoftState.lead || ss.state !== this.prevSoftState.state) return true;
    const hs = r.hardState();
    if (!isEmptyHardState(hs) && !hardStateEqual(hs, this.prevHardState)) return true;
    if (r.log.unstable.snapshot) return true;
    if (r.msgs.length > 0 || r.log.unstableEntries().length > 0 || r.log.hasNextCommittedEnts()) return true;
    return r.readStates.length > 0;
  }

  ready(): Ready {
    if (this.readyPending) throw new RaftError('INVALID_ARGUMENT', 'ready() called again before advance()');
    const r = this.raft;
    const rd: Ready = {
      entries: [...r.log.unstableEntries()],
      committedEntries: r.log.nextCommittedEnts(),
      messages: r.msgs,
      readStates: r.readStates,
    };
    r.msgs = [];
    r.readStates = [];
    const ss = r.softState();
    if (ss.lead !== this.prevSoftState.lead || ss.state !== this.prevSoftState.state) {
      rd.softState = ss;
      this.prevSoftState = ss;
    }
    const hs = r.hardState();
    if (!hardStateEqual(hs, this.prevHardState)) rd.hardState = hs;
    if (r.log.unstable.snapshot) rd.snapshot = r.log.unstable.snapshot;
    if (rd.committedEntries.length > 0) r.reduceUncommittedSize(rd.committedEntries);
    this.readyPending = true;
    return rd;
  }

  advance(rd: Ready): void {
    const r = this.raft;
    this.readyPending = false;
    if (rd.hardState) this.prevHardState = rd.hardState;
    if (rd.committedEntries.length > 0)
      r.log.appliedTo(rd.committedEntries[rd.committedEntries.length - 1].index);
    else if (rd.snapshot) r.log.applied = Math.max(r.log.applied, rd.snapshot.index);
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      r.log.stableTo(last.index, last.term);
    }
    if (rd.snapshot) {
      r.log.stableSnapTo(rd.snapshot.index);
      if (r.log.applied < rd.snapshot.index) r.log.applied = rd.snapshot.index;
    }
  }

  status(): Status {
    const r = this.raft;
    const progress: Record<NodeId, ProgressStatus> = {};
    if (r.state === 'leader') {
      for (const [id, pr] of r.trk.progress) {
        progress[id] = {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          recentActive: pr.recentActive,
          isLearner: pr.isLearner,
        };
      }
    }
    return {
      id: r.id,
      term: r.term,
      vote: r.vote,
      commit: r.log.committed,
      applied: r.log.applied,
      lead: r.lead,
      state: r.state,
      conf: r.trk.confState(),
      progress,
      leadTransferee: r.leadTransferee,
    };
  }
}

/** Cross-field consistency the core relies on; returns a reason or null. */
export function checkMessage(m: Message): string | null {
  if (m.type === 'app') {
    let prevTerm = m.logTerm;
    for (let i = 0; i < m.entries.length; i++) {
      const e = m.entries[i];
      if (e.index !== m.index + 1 + i) return 'entries are not contiguous after index';
      if (e.term < prevTerm || e.term > m.term) return 'entry terms out of order';
      prevTerm = e.term;
    }
    if (m.logTerm > m.term) return 'logTerm beyond term';
  } else if (m.type === 'snapshot') {
    const s = m.snapshot;
    if (s.index === 0 || s.term > m.term) return 'bad snapshot index or term';
    if (s.conf.voters.length === 0) return 'snapshot without voters';
  } else if ((m.type === 'vote' || m.type === 'preVote') && m.logTerm > m.term) {
    return 'logTerm beyond term';
  }
  return null;
}
