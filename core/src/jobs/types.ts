/**
 * Types shared by the job state machine and the scheduler. The scheduler only sees these plain shapes, so
 * it can be fed by the state machine in production and by generated data in tests and benchmarks.
 */
import type { Constraints, Executor, NodeMode, Resources } from '../../../protocol/src/job.ts';

export type { Constraints, Executor, NodeMode, Resources };

export interface NodeGpu {
  /** 'nvidia' | 'amd' | 'intel' | ... (compared case-insensitively). */
  vendor: string;
  model: string;
  vramBytes: number;
}

/** What a node offers to the cluster (after its owner's policy caps), plus liveness and mode. */
export interface SchedulerNode {
  id: string;
  /** Reachable and heartbeating, as the leader's failure detector sees it. */
  up: boolean;
  mode: NodeMode;
  capacity: {
    cpus: number;
    memoryBytes: number;
    diskBytes: number;
    /** Position in this array is the GPU index an assignment reserves. */
    gpus: NodeGpu[];
  };
  /** Most tasks that may be assigned or running on this node at once. */
  maxConcurrent: number;
  arch: string;
  os: string;
  labels: Record<string, string>;
  docker: boolean;
  executors: Executor[];
  /** The owner runs only jobs of these submitters (key name, key ID or full submitter); absent = anyone. */
  allowedSubmitters?: string[];
}

/** A task waiting to be placed, with what the scheduler needs from its job. */
export interface QueuedTask {
  taskId: string;
  jobId: string;
  submitter: string;
  /** Job priority: higher is placed first. */
  priority: number;
  executor: Executor;
  resources: Resources;
  constraints: Constraints;
  /** Earliest time (ms) this task may be assigned (retry backoff); 0 when it may go now. */
  notBefore: number;
  /** The attempt number the next assign command must carry. */
  nextAttempt: number;
}

/** A task already assigned or running: it holds part of its node's capacity. */
export interface RunningTask {
  nodeId: string;
  resources: Resources;
  /** GPU indices it holds on that node, when known (the assign command records them). */
  gpus?: number[];
  /** Used for fairness: submitters with fewer running tasks get the next slot. */
  submitter?: string;
}

export interface ScheduleInput {
  now: number;
  nodes: SchedulerNode[];
  tasks: QueuedTask[];
  running: RunningTask[];
}

export interface Assignment {
  taskId: string;
  nodeId: string;
  /** GPU indices on the node reserved for this task (absent for tasks without GPUs). */
  gpus?: number[];
}

export interface Unplaced {
  taskId: string;
  reason: string;
}

export interface ScheduleResult {
  assignments: Assignment[];
  unplaced: Unplaced[];
}

export interface ScheduleOptions {
  /** Stop after this many assignments in one round (the leader proposes them in batches). Default: no cap. */
  maxAssignments?: number;
}
