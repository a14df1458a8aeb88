/**
 * Worker-thread side of the WASM executor. One worker runs many tasks, one at a time: the parent posts
 * `{ type: 'run', id, input }` and the worker answers with messages tagged with that id (started, output*,
 * then exactly one of exit / trap / failed). Every task gets a fresh WASI object (its own args, env, stdio
 * and /scratch preopen) and a fresh instance of the (already compiled) module, so linear memory, globals and
 * tables start from the module's initial state; when the task ends the worker closes every file descriptor
 * the task's WASI held and keeps no per-task state. stdout/stderr writes (fd 1/2) are intercepted and posted
 * as they happen, so output streams live; everything else is Node's WASI. The parent terminates this thread
 * (and never reuses it) on timeout, cancel, scratch quota or output limit.
 *
 * The worker's /scratch dir is reused by its next task when this one left it as it found it (empty): the
 * worker stores 1 in its shared `touched` flag at the first call that could leave a trace. Deny by default:
 * any WASI call outside CLEAN_CALLS (and a path_open that may create or truncate) counts, whether it
 * succeeded or not. The parent reads the flag after the task, and while it runs (its quota poll walks the
 * scratch dir only once the flag is set). The `running` and `ended` slots say which task runs and how many
 * have ended, for the pool's check of whether waiting tasks need more workers (see WorkerPool in wasm.ts).
 *
 * What a no-op task costs here is mostly fixed per-task work, so it is kept small: the import object (thin
 * wrappers that act on the current task's WASI object, and the touched / stdio / output rules) is made once
 * per worker, not per task; a compiled module is received once and then named by its key; instantiation is
 * synchronous.
 *
 * Plain JavaScript with no imports but Node's own, on purpose: a TypeScript entry makes Node load its type
 * stripper in every worker thread, which made a worker's boot cost ~110 ms of CPU instead of ~35. The
 * messages' types are in wasm-worker-protocol.ts; `npm run typecheck` checks this file against them through
 * its JSDoc (checkJs).
 */
import { WASI } from 'node:wasi';
import { parentPort, workerData } from 'node:worker_threads';

/**
 * @import { WasmWorkerData, WasmWorkerInput, WasmWorkerMessage, WasmWorkerRequest } from './wasm-worker-protocol.ts'
 * @typedef {(...a: any[]) => number} WasiFn
 * @typedef {{ buffer: ArrayBuffer }} WasmMemory
 */

const ERRNO_SUCCESS = 0;
const ERRNO_FBIG = 22;
const ERRNO_NOTSUP = 58;
const ERRNO_NOTCAPABLE = 76;
const OFLAGS_CREAT = 1;
const OFLAGS_TRUNC = 8;
/** The one preopen (/scratch) is guest fd 3; files the task opens come after it. */
const FIRST_TASK_FD = 3;
/** path_open's arguments: oflags, and where it writes the new fd. */
const PATH_OPEN_OFLAGS = 4;
const PATH_OPEN_FD_PTR = 8;

/**
 * WASI calls that cannot leave anything behind for a later task when /scratch is empty at the start (the
 * parent guarantees that for every task it does not wipe after: no inputs, nothing touched before): they read
 * (never a directory listing, which would update the dir's atime), report, or act on this task's own fd table.
 * Every other call (creating, removing, renaming, linking, writing through an opened file, setting times,
 * sizes or fd flags, sockets, anything unknown) marks the task as having touched its scratch.
 */
const CLEAN_CALLS = new Set([
  'args_get',
  'args_sizes_get',
  'environ_get',
  'environ_sizes_get',
  'clock_res_get',
  'clock_time_get',
  'random_get',
  'sched_yield',
  'poll_oneoff',
  'proc_exit',
  'fd_advise',
  'fd_close',
  'fd_datasync',
  'fd_sync',
  'fd_fdstat_get',
  'fd_fdstat_set_rights',
  'fd_filestat_get',
  'fd_prestat_get',
  'fd_prestat_dir_name',
  'fd_read',
  'fd_pread',
  'fd_seek',
  'fd_tell',
  'fd_write',
  'fd_renumber',
  'path_filestat_get',
  'path_readlink',
  'path_open', // only when it may create or truncate: checked in its wrapper
]);
/** Calls that would change the parent's descriptors behind fds 0-2 (/dev/null, the stdin file): refused. */
const NOT_ON_STDIO = ['fd_filestat_set_times', 'fd_filestat_set_size', 'fd_allocate'];

/**
 * The slice of the WebAssembly API used here (the project's lib settings carry no WebAssembly types).
 * @typedef {{
 *   Memory: new (descriptor: { initial: number }) => WasmMemory,
 *   Instance: new (module: object, imports: object) => { exports: Record<string, unknown> },
 * }} WasmApi
 */
const WebAssembly = /** @type {{ WebAssembly: WasmApi }} */ (/** @type {unknown} */ (globalThis)).WebAssembly;
const placeholderMemory = new WebAssembly.Memory({ initial: 0 });
const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);
const shared = /** @type {WasmWorkerData} */ (workerData);
const touchedFlag = new Int32Array(shared.touched);
const runningTask = new Int32Array(shared.running);
const endedTasks = new Int32Array(shared.ended);
/** Tells the pool (which reads it without waiting for this thread's messages) that the task has ended. */
const noteEnded = () => {
  Atomics.store(runningTask, 0, 0);
  Atomics.add(endedTasks, 0, 1);
};
const threadCpuMicros = () => {
  const u = process.threadCpuUsage();
  return u.user + u.system;
};
const markTouched = () => {
  Atomics.store(touchedFlag, 0, 1);
};

/** Compiled modules this worker was sent, by cache key; the parent mirrors the set and says what to drop. */
const modules = new Map();

// The running task's state, read by the shared import wrappers. Reset when the task ends, so an idle worker
// holds nothing of it (its WASI object, its linear memory).
/** @type {Record<string, WasiFn>} */
const NO_TASK = {};
/** The current task's own WASI functions (its WASI object's wasiImport). */
let wasi = NO_TASK;
let taskId = 0;
/** @type {WasmMemory | null} */
let memory = null;
let outputBytes = 0;
let maxOutputBytes = 0;
/** Highest guest fd the task could hold (uvwasi hands out the lowest free slot): closed one by one at the end. */
let maxFd = FIRST_TASK_FD;

const memoryBytes = () => memory?.buffer.byteLength ?? 0;
/** @param {WasmWorkerMessage} m */
const post = (m) => port.postMessage(m);

/** @type {{ wasi_snapshot_preview1: Record<string, WasiFn> } | null} */
let imports = null;

/**
 * The import object every task of this worker is instantiated with: each function forwards to the current
 * task's WASI object, marking the task touched unless the call is clean.
 * @param {string[]} names the functions Node's WASI provides
 */
function makeImports(names) {
  /** @type {Record<string, WasiFn>} */
  const fns = {};
  for (const name of names) {
    fns[name] = CLEAN_CALLS.has(name)
      ? (...a) => wasi[name](...a)
      : (...a) => {
          markTouched();
          return wasi[name](...a);
        };
  }
  for (const name of NOT_ON_STDIO) {
    fns[name] = (fd, ...a) => {
      if (fd <= 2) return ERRNO_NOTCAPABLE;
      markTouched();
      return wasi[name](fd, ...a);
    };
  }
  /** @type {(fd: number, iovs: number, iovsLen: number, nwrittenPtr: number) => number} */
  fns.fd_write = (fd, iovs, iovsLen, nwrittenPtr) => {
    if ((fd !== 1 && fd !== 2) || !memory) return wasi.fd_write(fd, iovs, iovsLen, nwrittenPtr);
    const view = new DataView(memory.buffer);
    /** @type {Uint8Array[]} */
    const parts = [];
    let total = 0;
    for (let i = 0; i < iovsLen; i++) {
      const ptr = view.getUint32(iovs + i * 8, true);
      const len = view.getUint32(iovs + i * 8 + 4, true);
      parts.push(new Uint8Array(memory.buffer, ptr, len).slice());
      total += len;
    }
    outputBytes += total;
    if (outputBytes > maxOutputBytes) {
      post({ id: taskId, type: 'output-limit' });
      return ERRNO_FBIG;
    }
    const data = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    if (data.byteLength > 0) post({ id: taskId, type: 'output', fd, data, memoryBytes: memoryBytes() });
    view.setUint32(nwrittenPtr, total, true);
    return ERRNO_SUCCESS;
  };
  // fds 0-2 are the parent's descriptors (stdin file, /dev/null), closed by the parent after the task: the
  // guest may "close" them (a no-op), never really close or replace them.
  /** @type {(fd: number) => number} */
  fns.fd_close = (fd) => (fd <= 2 ? ERRNO_SUCCESS : wasi.fd_close(fd));
  /** @type {(from: number, to: number) => number} */
  fns.fd_renumber = (from, to) => (from <= 2 || to <= 2 ? ERRNO_NOTSUP : wasi.fd_renumber(from, to));
  fns.path_open = (...a) => {
    if (a[PATH_OPEN_OFLAGS] & (OFLAGS_CREAT | OFLAGS_TRUNC)) markTouched();
    const errno = wasi.path_open(...a);
    if (errno === ERRNO_SUCCESS && memory) {
      const fd = new DataView(memory.buffer).getUint32(a[PATH_OPEN_FD_PTR], true);
      if (fd > maxFd) maxFd = fd;
    }
    return errno;
  };
  return { wasi_snapshot_preview1: fns };
}

/**
 * The task's compiled module: sent with it, or sent before under the same key.
 * @param {WasmWorkerInput} input
 */
function moduleOf(input) {
  if (input.dropModule !== undefined) modules.delete(input.dropModule);
  if (input.module) {
    if (input.moduleKey !== null) modules.set(input.moduleKey, input.module);
    return input.module;
  }
  const module = modules.get(input.moduleKey);
  if (!module) throw new Error(`compiled module ${input.moduleKey} was never sent to this worker`);
  return module;
}

/**
 * Runs one task to its end (synchronously) and posts its result. Throws only before anything ran: when the
 * module is unknown or new WASI() cannot open the preopen.
 * @param {number} id
 * @param {WasmWorkerInput} input
 */
function runTask(id, input) {
  Atomics.store(runningTask, 0, id);
  const cpuAtStart = threadCpuMicros();
  const cpuMs = () => Math.round((threadCpuMicros() - cpuAtStart) / 1000);
  const module = moduleOf(input);
  const taskWasi = new WASI({
    version: 'preview1',
    args: input.args,
    env: input.env,
    preopens: { '/scratch': input.scratchDir },
    stdin: input.stdinFd,
    stdout: input.nullFd,
    stderr: input.nullFd,
    returnOnExit: true,
  });
  wasi = /** @type {Record<string, WasiFn>} */ (taskWasi.wasiImport);
  imports ??= makeImports(Object.keys(wasi));
  taskId = id;
  memory = null;
  outputBytes = 0;
  maxOutputBytes = input.maxOutputBytes;
  maxFd = FIRST_TASK_FD;

  /** @type {WasmWorkerMessage} */
  let final;
  try {
    // (a module's start function runs during instantiation, through the same imports)
    const instance = new WebAssembly.Instance(module, imports);
    memory = /** @type {WasmMemory | undefined} */ (instance.exports.memory) ?? null;
    post({ id, type: 'started' });
    try {
      const code = taskWasi.start(instance);
      final = { id, type: 'exit', code, memoryBytes: memoryBytes(), cpuMs: cpuMs() };
    } catch (e) {
      const message = String(/** @type {Error} */ (e)?.message ?? e);
      final = { id, type: 'trap', message, memoryBytes: memoryBytes(), cpuMs: cpuMs() };
    }
  } catch (e) {
    final = { id, type: 'failed', message: String(/** @type {Error} */ (e)?.message ?? e), cpuMs: cpuMs() };
  }
  // node:wasi never closes what its WASI object opened (the preopen, files the task left open): close them
  // here, or every task would leak descriptors into the process. fd_close needs a started WASI object, so
  // one that never got that far (link error, no memory export) is started on an empty stand-in first.
  const closeTaskFds = () => {
    for (let fd = FIRST_TASK_FD; fd <= maxFd; fd++) wasi.fd_close(fd);
  };
  try {
    closeTaskFds();
  } catch {
    try {
      taskWasi.start({ exports: { memory: placeholderMemory, _start() {} } });
      closeTaskFds();
    } catch {}
  }
  wasi = NO_TASK;
  memory = null;
  noteEnded();
  post(final);
}

port.on('message', (/** @type {WasmWorkerRequest} */ m) => {
  if (m?.type !== 'run') return;
  try {
    runTask(m.id, m.input);
  } catch (e) {
    // The task failed before it ran, the worker did not. Its scratch dir is recreated all the same.
    wasi = NO_TASK;
    markTouched();
    noteEnded();
    post({ id: m.id, type: 'failed', message: String(/** @type {Error} */ (e)?.message ?? e), cpuMs: 0 });
  }
});
