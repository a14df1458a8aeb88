/**
 * Wire schema of Raft messages (`/meshrun/raft/1.0.0`), mirroring core/src/raft/types.ts. Every inbound frame
 * is checked against it before the Raft core sees it; sizes are bounded so one peer cannot make another
 * buffer without limit.
 */
import { z } from 'zod';
import { bytesSchema } from './codec.ts';

export const RAFT_LIMITS = {
  maxNodeIdLength: 128,
  maxEntriesPerMessage: 10_000,
  maxEntryBytes: 2 * 1024 * 1024,
  maxCtxBytes: 256,
  maxMembers: 10_000,
  /** A snapshot larger than one frame travels in chunks of at most `chunkBytes`, reassembled up to this size. */
  maxSnapshotBytes: 512 * 1024 * 1024,
  chunkBytes: 1024 * 1024,
} as const;

const id = z.string().min(1).max(RAFT_LIMITS.maxNodeIdLength);
const idx = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const ctx = bytesSchema(RAFT_LIMITS.maxCtxBytes, 'ctx');

export const RaftEntrySchema = z.object({
  term: idx,
  index: idx,
  type: z.enum(['normal', 'conf']),
  data: bytesSchema(RAFT_LIMITS.maxEntryBytes, 'entry data'),
});

export const ConfStateSchema = z.object({
  voters: z.array(id).max(RAFT_LIMITS.maxMembers),
  learners: z.array(id).max(RAFT_LIMITS.maxMembers),
});

const base = { from: id, to: id, term: idx };
const entries = z.array(RaftEntrySchema).max(RAFT_LIMITS.maxEntriesPerMessage);

export const RaftMessageSchema = z.discriminatedUnion('type', [
  z.object({ ...base, type: z.literal('app'), index: idx, logTerm: idx, entries, commit: idx }),
  z.object({
    ...base,
    type: z.literal('appResp'),
    index: idx,
    reject: z.boolean(),
    rejectHint: idx,
    logTerm: idx,
  }),
  z.object({ ...base, type: z.literal('vote'), index: idx, logTerm: idx, transfer: z.boolean() }),
  z.object({ ...base, type: z.literal('preVote'), index: idx, logTerm: idx, transfer: z.boolean() }),
  z.object({ ...base, type: z.literal('voteResp'), reject: z.boolean() }),
  z.object({ ...base, type: z.literal('preVoteResp'), reject: z.boolean() }),
  z.object({ ...base, type: z.literal('heartbeat'), commit: idx, ctx }),
  z.object({ ...base, type: z.literal('heartbeatResp'), ctx }),
  z.object({
    ...base,
    type: z.literal('snapshot'),
    snapshot: z.object({
      index: idx,
      term: idx,
      conf: ConfStateSchema,
      data: bytesSchema(RAFT_LIMITS.maxSnapshotBytes, 'snapshot'),
    }),
  }),
  z.object({ ...base, type: z.literal('timeoutNow') }),
  z.object({ ...base, type: z.literal('transferLeader'), transferee: id }),
  z.object({ ...base, type: z.literal('readIndex'), ctx }),
  z.object({ ...base, type: z.literal('readIndexResp'), ctx, index: idx }),
  z.object({ ...base, type: z.literal('prop'), entries }),
]);
export type RaftWireMessage = z.infer<typeof RaftMessageSchema>;

/**
 * One piece of a message too large for a frame (a big snapshot). Pieces of one message travel in order on
 * the sender's stream; the receiver reassembles them (bounded by `maxSnapshotBytes`) and decodes the whole.
 */
export const RaftChunkSchema = z.object({
  chunk: z.object({
    id: z.number().int().nonnegative(),
    seq: z.number().int().nonnegative(),
    total: z
      .number()
      .int()
      .positive()
      .max(Math.ceil(RAFT_LIMITS.maxSnapshotBytes / RAFT_LIMITS.chunkBytes)),
    data: bytesSchema(RAFT_LIMITS.chunkBytes, 'chunk'),
  }),
});
export const RaftFrameSchema = z.union([RaftChunkSchema, RaftMessageSchema]);

export const MAX_RAFT_ENTRIES_PER_MESSAGE = RAFT_LIMITS.maxEntriesPerMessage;
export const MAX_RAFT_NODE_ID_LENGTH = RAFT_LIMITS.maxNodeIdLength;
