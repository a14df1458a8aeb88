/**
 * The seam between the job layer and consensus: a replicated log of job commands. The Raft-backed
 * implementation proposes through the node's Raft driver (followers forward to the leader) and resolves once
 * the command is applied locally, with the state machine's answer.
 */

import type { JobCommandInput } from '@meshrun/protocol';
import type { ApplyResult } from '../jobs/state-machine.ts';

export interface CommandLog {
  /** Replicates `cmd`; resolves with the result of applying it (on this node) once committed. */
  propose(cmd: JobCommandInput, opts?: { timeoutMs?: number }): Promise<ApplyResult>;
  /** Linearizable read barrier: after it resolves, local state reflects every write acknowledged before. */
  readBarrier(): Promise<void>;
  isLeader(): boolean;
  leaderId(): string | null;
}
