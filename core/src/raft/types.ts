/**
 * Data types of the Raft core. Everything here is plain data (no classes) so it can cross the wire
 * (see protocol/src/raft.ts for the validated wire schema) and be persisted as-is.
 */

/** A Raft member's id: the libp2p peer ID string of the node. */
export type NodeId = string;

export type EntryType = 'normal' | 'conf';

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Application payload (normal) or an encoded ConfChange (conf, see encodeConfChange). */
  data: Uint8Array;
}

/** What must be durable before any message that depends on it is sent. */
export interface HardState {
  term: number;
  vote: NodeId | null;
  commit: number;
}

export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export interface Snapshot {
  /** Index and term of the last entry the snapshot covers. index 0 means "no snapshot". */
  index: number;
  term: number;
  conf: ConfState;
  data: Uint8Array;
}

export type ConfChangeType = 'addVoter' | 'addLearner' | 'removeNode';

/** A single-server membership change (one at a time; see README for why that is safe). */
export interface ConfChange {
  type: ConfChangeType;
  node: NodeId;
}

export type StateType = 'follower' | 'preCandidate' | 'candidate' | 'leader';

interface MessageBase {
  from: NodeId;
  to: NodeId;
  /** Sender's term (for preVote: the term the sender would campaign in). */
  term: number;
}

/** Leader -> follower: entries following (index, logTerm), plus the leader's commit index. */
export interface AppMessage extends MessageBase {
  type: 'app';
  index: number;
  logTerm: number;
  entries: Entry[];
  commit: number;
}

/**
 * Follower -> leader. Accept: `index` is the follower's last matching index. Reject: `index` is the
 * rejected prevIndex and (rejectHint, logTerm) point at where the follower's log may match (fast backtracking).
 */
export interface AppRespMessage extends MessageBase {
  type: 'appResp';
  index: number;
  reject: boolean;
  rejectHint: number;
  logTerm: number;
}

export interface VoteMessage extends MessageBase {
  type: 'vote' | 'preVote';
  /** Candidate's last log index and term (§5.4.1 up-to-date check). */
  index: number;
  logTerm: number;
  /** Set when the election was triggered by a leadership transfer: voters ignore their leader lease. */
  transfer: boolean;
}

export interface VoteRespMessage extends MessageBase {
  type: 'voteResp' | 'preVoteResp';
  reject: boolean;
}

export interface HeartbeatMessage extends MessageBase {
  type: 'heartbeat';
  commit: number;
  /** ReadIndex context being confirmed by this heartbeat round (empty when none). */
  ctx: Uint8Array;
}

export interface HeartbeatRespMessage extends MessageBase {
  type: 'heartbeatResp';
  ctx: Uint8Array;
}

export interface SnapshotMessage extends MessageBase {
  type: 'snapshot';
  snapshot: Snapshot;
}

/** Leader -> transfer target: campaign now, ignoring the election timer. */
export interface TimeoutNowMessage extends MessageBase {
  type: 'timeoutNow';
}

/** Follower -> leader: please start a leadership transfer to `transferee`. */
export interface TransferLeaderMessage extends MessageBase {
  type: 'transferLeader';
  transferee: NodeId;
}

/** Follower -> leader: request a read index for `ctx`. */
export interface ReadIndexMessage extends MessageBase {
  type: 'readIndex';
  ctx: Uint8Array;
}

export interface ReadIndexRespMessage extends MessageBase {
  type: 'readIndexResp';
  ctx: Uint8Array;
  index: number;
}

/** Follower -> leader: forwarded proposal (entries carry no term/index yet: both are 0). */
export interface PropMessage extends MessageBase {
  type: 'prop';
  entries: Entry[];
}

export type Message =
  | AppMessage
  | AppRespMessage
  | VoteMessage
  | VoteRespMessage
  | HeartbeatMessage
  | HeartbeatRespMessage
  | SnapshotMessage
  | TimeoutNowMessage
  | TransferLeaderMessage
  | ReadIndexMessage
  | ReadIndexRespMessage
  | PropMessage;

export type MessageType = Message['type'];

/** Volatile state worth showing (changes rarely; never persisted). */
export interface SoftState {
  lead: NodeId | null;
  state: StateType;
}

/** A ReadIndex answer: once applied >= index, a read of the state machine is linearizable for ctx. */
export interface ReadState {
  index: number;
  ctx: Uint8Array;
}

/**
 * One batch of work for the application, in this order:
 * 1. persist `hardState`, `entries` and `snapshot` (synced),
 * 2. send `messages`,
 * 3. restore `snapshot` into the state machine if present, then apply `committedEntries`,
 * 4. call `advance(ready)`.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
}

export type ProgressStateType = 'probe' | 'replicate' | 'snapshot';

export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressStateType;
  recentActive: boolean;
  isLearner: boolean;
}

export interface Status {
  id: NodeId;
  term: number;
  vote: NodeId | null;
  commit: number;
  applied: number;
  lead: NodeId | null;
  state: StateType;
  conf: ConfState;
  /** Only on the leader: replication progress per member (self included). */
  progress: Record<NodeId, ProgressStatus>;
  leadTransferee: NodeId | null;
}

export const EMPTY_HARD_STATE: HardState = Object.freeze({ term: 0, vote: null, commit: 0 }) as HardState;

export function isEmptyHardState(hs: HardState): boolean {
  return hs.term === 0 && hs.vote === null && hs.commit === 0;
}

export function hardStateEqual(a: HardState, b: HardState): boolean {
  return sameTermAndVote(a, b) && a.commit === b.commit;
}

/** True when `a` differs from `b` at most in the commit index (the part that needs no fsync). */
export function sameTermAndVote(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote;
}

export function isEmptySnapshot(s: Snapshot | undefined): boolean {
  return s === undefined || s.index === 0;
}

export function emptySnapshot(): Snapshot {
  return { index: 0, term: 0, conf: { voters: [], learners: [] }, data: new Uint8Array(0) };
}

/** Errors the core signals to its caller. `code` is stable. */
export class RaftError extends Error {
  readonly code:
    | 'PROPOSAL_DROPPED'
    | 'READ_DROPPED'
    | 'INVALID_CONF_CHANGE'
    | 'BAD_CONFIG'
    | 'INVALID_ARGUMENT';
  constructor(code: RaftError['code'], message: string) {
    super(message);
    this.name = 'RaftError';
    this.code = code;
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** ConfChange entry payload: small JSON, so it is readable in a hex dump and stable across versions. */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  return textEncoder.encode(JSON.stringify({ type: cc.type, node: cc.node }));
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  const raw = JSON.parse(textDecoder.decode(data)) as { type?: unknown; node?: unknown };
  if (
    (raw.type !== 'addVoter' && raw.type !== 'addLearner' && raw.type !== 'removeNode') ||
    typeof raw.node !== 'string' ||
    raw.node.length === 0
  ) {
    throw new RaftError('INVALID_CONF_CHANGE', 'malformed conf change entry');
  }
  return { type: raw.type, node: raw.node };
}

/** Byte size used for batching limits (payload plus a small fixed overhead per entry). */
export function entrySize(e: Entry): number {
  return e.data.byteLength + 24;
}
