/**
 * The one interface every task executor implements. The job layer validates a TaskSpec's shape before it gets
 * here; executors still enforce the node's policy (`checkPolicy`) because the spec comes from another peer.
 */

export type ExecutorKind = 'docker' | 'wasm';
export type GpuVendor = 'nvidia' | 'amd' | 'intel';

export interface TaskResources {
  /** CPU share as a number of CPUs; fractions allowed (0.5 = half a core). */
  cpus: number;
  memoryBytes: number;
  /** Max processes/threads inside the task; the policy's maxPids when absent. */
  pids?: number;
  /** Scratch space the task needs; must fit in the policy's scratchBytes. */
  diskBytes?: number;
  gpus?: { count: number; vendor?: GpuVendor };
}

export interface TaskFile {
  /** Relative to the scratch dir; no `..`, no absolute paths. */
  path: string;
  content: Uint8Array;
}

export interface TaskSpec {
  taskId: string;
  jobId: string;
  attempt: number;
  executor: ExecutorKind;
  /** docker: tag or digest (name@sha256:...). */
  image?: string;
  entrypoint?: string[];
  command?: string[];
  env?: Record<string, string>;
  /** docker: working directory inside the container; defaults to /scratch. */
  workdir?: string;
  resources: TaskResources;
  /** Wall-clock limit from the moment the task starts (image pulls never count). */
  timeoutMs: number;
  network?: boolean;
  /** Placed in the scratch dir before the task starts. */
  inputs?: TaskFile[];
  /** Paths relative to scratch, collected after the task ends (missing ones are skipped). */
  outputs?: string[];
  wasm?: { module: Uint8Array };
  /** wasm: argv after argv[0]. */
  args?: string[];
  /** wasm: the task's whole stdin. */
  stdin?: Uint8Array;
}

export interface NodePolicy {
  allowNetwork: boolean;
  allowGpu: boolean;
  allowedExecutors: ExecutorKind[];
  maxMemoryBytes: number;
  maxCpus: number;
  maxPids: number;
  /** Size of each task's writable scratch (tmpfs for docker, quota-polled temp dir for wasm). */
  scratchBytes: number;
  /** docker CpuShares; defaults to 2 (the lowest) so the machine owner's programs win. */
  cpuShares?: number;
}

/** What this node can actually provide; input to the pure policy check. */
export interface ExecutorCaps {
  /** Executors that reported available() ok on this node. */
  executors: ExecutorKind[];
  /** Number of GPUs per vendor usable by tasks. */
  gpus: Partial<Record<GpuVendor, number>>;
  /** docker: whether the engine has the nvidia runtime (docker info Runtimes). */
  nvidiaRuntime: boolean;
}

export type TaskEvent =
  | { type: 'pull'; layer?: string; status: string; currentBytes?: number; totalBytes?: number }
  | { type: 'started'; at: number }
  | { type: 'output'; stream: 'stdout' | 'stderr'; data: Uint8Array; at: number };

export type TaskOutcome =
  | 'exited'
  | 'timeout'
  | 'oom'
  | 'cancelled'
  | 'signaled'
  | 'refused'
  | 'pull-failed'
  | 'error';

export interface TaskResult {
  outcome: TaskOutcome;
  /** The process's exit code when it exited by itself (also set for 'signaled': 128+signal). */
  exitCode: number | null;
  signal?: string;
  reason: string;
  startedAt?: number;
  endedAt: number;
  usage: { cpuMs: number; peakMemoryBytes: number };
  outputs?: TaskFile[];
}

export interface RunOptions {
  policy: NodePolicy;
  onEvent: (e: TaskEvent) => void;
  /** Abort = cancel: docker stops with a grace period then kills; wasm terminates the worker. */
  signal?: AbortSignal;
}

export interface Executor {
  readonly kind: ExecutorKind;
  available(): Promise<{ ok: boolean; reason?: string; version?: string }>;
  /** Never throws for task-level problems: they come back as a TaskResult outcome. */
  run(spec: TaskSpec, opts: RunOptions): Promise<TaskResult>;
  /** Removes everything this executor (on this node) left behind, e.g. after a crash. Returns how many. */
  cleanupLeftovers(): Promise<number>;
}
