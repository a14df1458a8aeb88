/** Task executors: the shared interface, the pure policy check, Docker and WASM executors, the task log store. */
export {
  DockerExecutor,
  type DockerExecutorOptions,
  LABEL_MANAGED,
  LABEL_NODE,
  LABEL_ROLE,
  LABEL_TASK,
} from './docker.ts';
export {
  type LevelLike,
  type LogEntry,
  type TaskLogMeta,
  TaskLogStore,
  type TaskLogStoreOptions,
} from './log-store.ts';
export { checkPolicy, SPEC_LIMITS, safeRelativePath } from './policy.ts';
export type {
  Executor,
  ExecutorCaps,
  ExecutorKind,
  GpuVendor,
  NodePolicy,
  RunOptions,
  TaskEvent,
  TaskFile,
  TaskOutcome,
  TaskResources,
  TaskResult,
  TaskSpec,
} from './types.ts';
export { WasmExecutor, type WasmExecutorOptions } from './wasm.ts';
