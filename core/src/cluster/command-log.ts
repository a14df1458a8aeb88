/**
 * The seam between the job layer and consensus: a replicated log of job commands. The Raft-backed
 * implementation proposes through the node's Raft driver (followers forward to the leader) and resolves once
 * the command is applied locally, with the state machine's answer.
 */

import type { JobCommandInput } from '@meshrun/protocol';
import type { ApplyResult } from '../jobs/state-machine.ts';
import type { RpcContext } from '../node/rpc-registry.ts';

/** Who asked: a signed request travels into the log so every node re-checks it; `local` is the machine's owner. */
export interface ProposeOptions {
  timeoutMs?: number;
  signed?: {
    method: string;
    params: unknown;
    auth: { key: string; at: number; nonce: string; sig: Uint8Array };
  };
  local?: boolean;
}

export interface CommandLog {
  /** Replicates `cmd`; resolves with the result of applying it (on this node) once committed. */
  propose(cmd: JobCommandInput, opts?: ProposeOptions): Promise<ApplyResult>;
  /** Linearizable read barrier: after it resolves, local state reflects every write acknowledged before. */
  readBarrier(): Promise<void>;
  /** Who is asking (throws RpcFailure when refused); see ClusterService.authorize. */
  authorize(
    method: string,
    params: unknown,
    ctx: RpcContext,
    roles?: ('submit' | 'admin')[],
  ): { submitter: string; admin: boolean; origin: ProposeOptions };
  isLeader(): boolean;
  leaderId(): string | null;
  /** On the leader: members the log has heard from within the last election timeout (proof of life). */
  activeMembers(): string[];
}
