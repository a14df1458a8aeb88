/**
 * The leader's view of each member's replication progress (after etcd's tracker package).
 *
 * - probe: we do not know where the follower's log ends; send one append per heartbeat interval and wait.
 * - replicate: the follower is caught up to `match`; stream appends optimistically (`next` runs ahead of
 *   `match`), limited by the inflight window.
 * - snapshot: a snapshot is on its way; send nothing until it is acknowledged or times out.
 */
import type { ConfState, NodeId, ProgressStateType } from './types.ts';

/** A ring buffer of the last index of each append in flight, bounded by `capacity` messages and bytes. */
export class Inflights {
  readonly capacity: number;
  readonly maxBytes: number;
  private indexes: number[] = [];
  private sizes: number[] = [];
  private bytes = 0;

  constructor(capacity: number, maxBytes: number) {
    this.capacity = capacity;
    this.maxBytes = maxBytes;
  }

  add(lastIndex: number, bytes: number): void {
    this.indexes.push(lastIndex);
    this.sizes.push(bytes);
    this.bytes += bytes;
  }

  /** Frees all inflights with last index <= `to` (they were acknowledged). */
  freeLE(to: number): void {
    let n = 0;
    while (n < this.indexes.length && this.indexes[n] <= to) {
      this.bytes -= this.sizes[n];
      n++;
    }
    if (n > 0) {
      this.indexes.splice(0, n);
      this.sizes.splice(0, n);
    }
  }

  freeFirstOne(): void {
    if (this.indexes.length > 0) this.freeLE(this.indexes[0]);
  }

  full(): boolean {
    return this.indexes.length >= this.capacity || (this.maxBytes > 0 && this.bytes >= this.maxBytes);
  }

  count(): number {
    return this.indexes.length;
  }

  reset(): void {
    this.indexes = [];
    this.sizes = [];
    this.bytes = 0;
  }
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressStateType = 'probe';
  /** In probe state: an append was sent and we wait for an answer (or the next heartbeat) before another. */
  msgAppFlowPaused = false;
  /** In snapshot state: index of the snapshot in flight. */
  pendingSnapshot = 0;
  /** Ticks spent in snapshot state; the leader falls back to probe after a bound (lost snapshot). */
  snapshotTicks = 0;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  isLearner: boolean;
  readonly inflights: Inflights;

  constructor(next: number, isLearner: boolean, maxInflight: number, maxInflightBytes: number) {
    this.next = next;
    this.isLearner = isLearner;
    this.inflights = new Inflights(maxInflight, maxInflightBytes);
  }

  private resetState(state: ProgressStateType): void {
    this.msgAppFlowPaused = false;
    this.pendingSnapshot = 0;
    this.snapshotTicks = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    if (this.state === 'snapshot') {
      const pending = this.pendingSnapshot;
      this.resetState('probe');
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState('probe');
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState('replicate');
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState('snapshot');
    this.pendingSnapshot = snapshotIndex;
  }

  /** Bookkeeping after sending an append with `entries` entries ending at `lastIndex`. */
  sentEntries(entries: number, lastIndex: number, bytes: number): void {
    if (this.state === 'replicate') {
      if (entries > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex, bytes);
      }
    } else if (this.state === 'probe') {
      // Every append in probe state is a probe: wait for its answer before sending the next one.
      this.msgAppFlowPaused = true;
    }
  }

  /** The follower acknowledged `n`. Returns false if that was stale news. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.msgAppFlowPaused = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /**
   * The follower rejected an append at prevIndex `rejected`; `matchHint` is where its log may match.
   * Returns false if the rejection is stale (answers an older append).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.msgAppFlowPaused = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.msgAppFlowPaused;
      case 'replicate':
        return this.inflights.full();
      case 'snapshot':
        return true;
    }
  }
}

/** Configuration plus per-member progress. */
export class ProgressTracker {
  voters: NodeId[] = [];
  learners: NodeId[] = [];
  progress = new Map<NodeId, Progress>();
  votes = new Map<NodeId, boolean>();
  readonly maxInflight: number;
  readonly maxInflightBytes: number;

  constructor(maxInflight: number, maxInflightBytes: number) {
    this.maxInflight = maxInflight;
    this.maxInflightBytes = maxInflightBytes;
  }

  confState(): ConfState {
    return { voters: [...this.voters].sort(), learners: [...this.learners].sort() };
  }

  isVoter(id: NodeId): boolean {
    return this.voters.includes(id);
  }

  isMember(id: NodeId): boolean {
    return this.progress.has(id);
  }

  /** Replaces the configuration wholesale (snapshot restore / restart). Progress is reset. */
  resetConf(conf: ConfState, nextIndex: number): void {
    this.voters = [...conf.voters].sort();
    this.learners = [...conf.learners].filter((l) => !conf.voters.includes(l)).sort();
    this.progress = new Map();
    for (const id of this.voters) this.progress.set(id, this.newProgress(nextIndex, false));
    for (const id of this.learners) this.progress.set(id, this.newProgress(nextIndex, true));
  }

  newProgress(next: number, isLearner: boolean): Progress {
    return new Progress(next, isLearner, this.maxInflight, this.maxInflightBytes);
  }

  /** True when a quorum of voters (self counted by the caller setting its own flag) was recently active. */
  quorumActive(): boolean {
    let active = 0;
    for (const id of this.voters) if (this.progress.get(id)?.recentActive) active++;
    return active >= Math.floor(this.voters.length / 2) + 1;
  }

  resetVotes(): void {
    this.votes = new Map();
  }
}
