/**
 * The read interface the Raft core needs from stable storage, and an in-memory implementation.
 *
 * Layout (as in etcd): the storage holds a dummy entry at `firstIndex() - 1` carrying the index and term of
 * the last compacted entry (or the snapshot), followed by the stable log.
 */
import type { ConfState, Entry, HardState, Snapshot } from './types.ts';
import { emptySnapshot, entrySize } from './types.ts';

/** The requested index was compacted away (use the snapshot instead). */
export class CompactedError extends Error {
  constructor(index: number) {
    super(`raft: index ${index} is compacted`);
    this.name = 'CompactedError';
  }
}

/** The requested index is beyond the end of the stable log. */
export class UnavailableError extends Error {
  constructor(index: number) {
    super(`raft: index ${index} is unavailable`);
    this.name = 'UnavailableError';
  }
}

/** The snapshot is being produced; try later. */
export class SnapshotTemporarilyUnavailableError extends Error {
  constructor() {
    super('raft: snapshot is temporarily unavailable');
    this.name = 'SnapshotTemporarilyUnavailableError';
  }
}

export interface InitialState {
  hardState: HardState;
  confState: ConfState;
}

/** Read side used by the core. All calls are synchronous (implementations keep an in-memory view). */
export interface RaftStorage {
  initialState(): InitialState;
  /** Entries [lo, hi), at least one if any, stopping before the total size exceeds maxSize. */
  entries(lo: number, hi: number, maxSize: number): Entry[];
  term(index: number): number;
  firstIndex(): number;
  lastIndex(): number;
  snapshot(): Snapshot;
}

/** Applies a size limit but always keeps at least one entry (so progress is always possible). */
export function limitSize(ents: Entry[], maxSize: number): Entry[] {
  if (ents.length === 0) return ents;
  let size = entrySize(ents[0]);
  let n = 1;
  for (; n < ents.length; n++) {
    size += entrySize(ents[n]);
    if (size > maxSize) break;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

export class MemoryStorage implements RaftStorage {
  private hardState: HardState = { term: 0, vote: null, commit: 0 };
  private snap: Snapshot = emptySnapshot();
  /** ents[0] is the dummy entry for the snapshot / compaction point. */
  private ents: Entry[] = [{ term: 0, index: 0, type: 'normal', data: new Uint8Array(0) }];

  initialState(): InitialState {
    return {
      hardState: { ...this.hardState },
      confState: { voters: [...this.snap.conf.voters], learners: [...this.snap.conf.learners] },
    };
  }

  setHardState(hs: HardState): void {
    this.hardState = { ...hs };
  }

  hardStateNow(): HardState {
    return { ...this.hardState };
  }

  private offset(): number {
    return this.ents[0].index;
  }

  entries(lo: number, hi: number, maxSize: number): Entry[] {
    const offset = this.offset();
    if (lo <= offset) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1);
    if (this.ents.length === 1) throw new UnavailableError(lo);
    return limitSize(this.ents.slice(lo - offset, hi - offset), maxSize);
  }

  term(index: number): number {
    const offset = this.offset();
    if (index < offset) throw new CompactedError(index);
    if (index - offset >= this.ents.length) throw new UnavailableError(index);
    return this.ents[index - offset].term;
  }

  firstIndex(): number {
    return this.offset() + 1;
  }

  lastIndex(): number {
    return this.offset() + this.ents.length - 1;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /**
   * Loads persisted state wholesale (used when opening durable storage): the log starts after
   * (compactIndex, compactTerm), which may be before the snapshot index (a local snapshot keeps some
   * entries for slow followers).
   */
  load(snap: Snapshot, compactIndex: number, compactTerm: number, ents: Entry[]): void {
    this.snap = snap;
    this.ents = [
      { term: compactTerm, index: compactIndex, type: 'normal', data: new Uint8Array(0) },
      ...ents,
    ];
  }

  /** Replaces the whole log with a snapshot received from the leader. Older snapshots are ignored. */
  applySnapshot(snap: Snapshot): void {
    if (snap.index <= this.snap.index) return;
    this.snap = snap;
    this.ents = [{ term: snap.term, index: snap.index, type: 'normal', data: new Uint8Array(0) }];
  }

  /** Records a snapshot of the state machine at `index` (which must be applied, so it is in the log). */
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.snap.index) return this.snap;
    if (index > this.lastIndex()) throw new UnavailableError(index);
    const term = this.term(index);
    this.snap = { index, term, conf: { voters: [...conf.voters], learners: [...conf.learners] }, data };
    return this.snap;
  }

  /** Discards entries up to and including `index` (which must be covered by a snapshot or applied). */
  compact(index: number): void {
    const offset = this.offset();
    if (index <= offset) return;
    if (index > this.lastIndex()) throw new UnavailableError(index);
    const i = index - offset;
    this.ents = [
      { term: this.ents[i].term, index, type: 'normal', data: new Uint8Array(0) },
      ...this.ents.slice(i + 1),
    ];
  }

  /** Appends entries, truncating any conflicting suffix. Entries already compacted are skipped. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    let ents = entries;
    if (ents[ents.length - 1].index < first) return;
    if (ents[0].index < first) ents = ents.slice(first - ents[0].index);
    const offset = ents[0].index - this.offset();
    if (offset > this.ents.length) {
      throw new Error(`raft: missing log entry [last: ${this.lastIndex()}, append at: ${ents[0].index}]`);
    }
    this.ents.length = offset;
    for (const e of ents) this.ents.push(e);
  }
}
