/**
 * What the WASM executor (wasm.ts) and its worker threads (wasm-worker.js) say to each other. The worker is
 * plain JavaScript (see its header for why), so these types are checked on the executor's side only; the
 * worker names them in JSDoc.
 */

/** Handed to every worker once, at its start (`workerData`). Each buffer holds one Int32. */
export interface WasmWorkerData {
  /**
   * This worker's: 0 while its current task has made only calls that cannot leave a trace (CLEAN_CALLS in
   * wasm-worker.js); the worker stores 1 at the first other one. The executor sets it before each task (1 when
   * the task has inputs) and reads it to decide whether the scratch dir needs walking (quota) or recreating.
   */
  touched: SharedArrayBuffer;
  /** This worker's: the id of the task it runs now, 0 between tasks. */
  running: SharedArrayBuffer;
  /** This worker's: how many tasks it has ended. With `running`, what tells the pool a worker is stalled. */
  ended: SharedArrayBuffer;
}

export interface WasmWorkerInput {
  /**
   * The compiled module's cache key (content hash and memory cap), or null for a module too big to cache. The
   * worker keeps the modules it was sent by key; `module` is left out when it holds this one already.
   */
  moduleKey: string | null;
  /** A compiled WebAssembly.Module (structured-cloned from the parent: no second compile). */
  module?: object;
  /** A key the worker should forget (the executor keeps each worker's set small). */
  dropModule?: string;
  args: string[];
  env: Record<string, string>;
  scratchDir: string;
  stdinFd: number;
  nullFd: number;
  maxOutputBytes: number;
}

export interface WasmWorkerRequest {
  type: 'run';
  /** Tags every answer, so a late message of one task can never be taken for the next one's. */
  id: number;
  input: WasmWorkerInput;
}

/** Whether a task `touched` its scratch is not in these messages: it is the `touched` flag of WasmWorkerData. */
export type WasmWorkerMessage = { id: number } & (
  | { type: 'started' }
  | { type: 'output'; fd: 1 | 2; data: Uint8Array; memoryBytes: number }
  | { type: 'output-limit' }
  | { type: 'exit'; code: number; memoryBytes: number; cpuMs: number }
  | { type: 'trap'; message: string; memoryBytes: number; cpuMs: number }
  /** Could not start (e.g. a link error: the module imports something WASI does not provide). */
  | { type: 'failed'; message: string; cpuMs: number }
);
