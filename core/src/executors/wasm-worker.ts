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
 * The worker's /scratch dir is reused by its next task when this one left it as it found it (empty): every
 * final message says whether the task `touched` anything that could outlive it. Deny by default: any WASI call
 * outside CLEAN_CALLS (and a path_open that may create or truncate) counts, whether it succeeded or not.
 */

import { WASI } from 'node:wasi';
import { parentPort } from 'node:worker_threads';
import { type WasmInstance, type WasmMemory, wasmApi } from './wasm-module.ts';

export interface WasmWorkerInput {
  /** A compiled WebAssembly.Module (structured-cloned from the parent: no second compile). */
  module: object;
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

export type WasmWorkerMessage = { id: number } & (
  | { type: 'started' }
  | { type: 'output'; fd: 1 | 2; data: Uint8Array; memoryBytes: number }
  | { type: 'output-limit' }
  | { type: 'exit'; code: number; memoryBytes: number; cpuMs: number; touched: boolean }
  | { type: 'trap'; message: string; memoryBytes: number; cpuMs: number; touched: boolean }
  /** Could not start (e.g. a link error: the module imports something WASI does not provide). */
  | { type: 'failed'; message: string; cpuMs: number; touched: boolean }
);

const ERRNO_SUCCESS = 0;
const ERRNO_FBIG = 22;
const ERRNO_NOTSUP = 58;
const ERRNO_NOTCAPABLE = 76;
const OFLAGS_CREAT = 1;
const OFLAGS_TRUNC = 8;
/** The one preopen (/scratch) is guest fd 3; files the task opens come after it. */
const FIRST_TASK_FD = 3;

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

type WasiFn = (...a: number[]) => number;
/** Hand-rolled rather than `new WebAssembly.Memory` so that this file needs no WebAssembly types. */
const placeholderMemory = new (
  globalThis as unknown as { WebAssembly: { Memory: new (d: object) => object } }
).WebAssembly.Memory({ initial: 0 });

const port = parentPort!;
const threadCpuMicros = () => {
  const u = process.threadCpuUsage();
  return u.user + u.system;
};

async function runTask(id: number, input: WasmWorkerInput): Promise<void> {
  const post = (m: WasmWorkerMessage) => port.postMessage(m);
  const cpuAtStart = threadCpuMicros();
  const cpuMs = () => Math.round((threadCpuMicros() - cpuAtStart) / 1000);
  const wasi = new WASI({
    version: 'preview1',
    args: input.args,
    env: input.env,
    preopens: { '/scratch': input.scratchDir },
    stdin: input.stdinFd,
    stdout: input.nullFd,
    stderr: input.nullFd,
    returnOnExit: true,
  });
  const wasiImport = wasi.wasiImport as Record<string, WasiFn>;
  let memory: WasmMemory | null = null;
  const memoryBytes = () => memory?.buffer.byteLength ?? 0;
  let outputBytes = 0;
  /** Called something that may leave a trace in /scratch or on the stdio descriptors (see CLEAN_CALLS). */
  let touched = false;
  // Highest guest fd this task could hold (uvwasi hands out the lowest free slot): closed one by one at the end.
  let maxFd = FIRST_TASK_FD;
  const { fd_write, fd_close, fd_renumber, path_open } = wasiImport;
  const tracked: Record<string, WasiFn> = {};
  for (const [name, fn] of Object.entries(wasiImport)) {
    if (typeof fn === 'function' && !CLEAN_CALLS.has(name))
      tracked[name] = (...a: number[]) => {
        touched = true;
        return fn(...a);
      };
  }
  // fds 0-2 are the parent's descriptors (/dev/null, the stdin file): never changed on disk through them.
  const notOnStdio =
    (name: string) =>
    (fd: number, ...a: number[]): number =>
      fd <= 2 ? ERRNO_NOTCAPABLE : tracked[name](fd, ...a);
  const imports = {
    wasi_snapshot_preview1: {
      ...wasiImport,
      ...tracked,
      fd_filestat_set_times: notOnStdio('fd_filestat_set_times'),
      fd_filestat_set_size: notOnStdio('fd_filestat_set_size'),
      fd_allocate: notOnStdio('fd_allocate'),
      fd_write(fd: number, iovs: number, iovsLen: number, nwrittenPtr: number): number {
        if ((fd !== 1 && fd !== 2) || !memory) return fd_write(fd, iovs, iovsLen, nwrittenPtr);
        const view = new DataView(memory.buffer);
        const parts: Uint8Array[] = [];
        let total = 0;
        for (let i = 0; i < iovsLen; i++) {
          const ptr = view.getUint32(iovs + i * 8, true);
          const len = view.getUint32(iovs + i * 8 + 4, true);
          parts.push(new Uint8Array(memory.buffer, ptr, len).slice());
          total += len;
        }
        outputBytes += total;
        if (outputBytes > input.maxOutputBytes) {
          post({ id, type: 'output-limit' });
          return ERRNO_FBIG;
        }
        const data = parts.length === 1 ? parts[0] : Buffer.concat(parts);
        if (data.byteLength > 0) post({ id, type: 'output', fd, data, memoryBytes: memoryBytes() });
        view.setUint32(nwrittenPtr, total, true);
        return ERRNO_SUCCESS;
      },
      // fds 0-2 are the parent's descriptors (stdin file, /dev/null), closed by the parent after the task:
      // the guest may "close" them (a no-op), never really close or replace them.
      fd_close(fd: number): number {
        return fd <= 2 ? ERRNO_SUCCESS : fd_close(fd);
      },
      fd_renumber(from: number, to: number): number {
        return from <= 2 || to <= 2 ? ERRNO_NOTSUP : fd_renumber(from, to);
      },
      path_open(...a: number[]): number {
        if (a[4] & (OFLAGS_CREAT | OFLAGS_TRUNC)) touched = true;
        const errno = path_open(...a);
        if (errno === ERRNO_SUCCESS && memory) {
          const fd = new DataView(memory.buffer).getUint32(a[8], true);
          if (fd > maxFd) maxFd = fd;
        }
        return errno;
      },
    },
  };

  let final: WasmWorkerMessage;
  try {
    const instance: WasmInstance = await wasmApi.instantiate(input.module, imports);
    memory = (instance.exports.memory as WasmMemory | undefined) ?? null;
    post({ id, type: 'started' });
    try {
      const code = wasi.start(instance as Parameters<WASI['start']>[0]);
      final = { id, type: 'exit', code, memoryBytes: memoryBytes(), cpuMs: cpuMs(), touched };
    } catch (e) {
      const message = String((e as Error)?.message ?? e);
      final = { id, type: 'trap', message, memoryBytes: memoryBytes(), cpuMs: cpuMs(), touched };
    }
  } catch (e) {
    // (a module's start function runs during instantiation, through the same imports)
    final = { id, type: 'failed', message: String((e as Error)?.message ?? e), cpuMs: cpuMs(), touched };
  }
  // node:wasi never closes what its WASI object opened (the preopen, files the task left open): close them
  // here, or every task would leak descriptors into the process. fd_close needs a started WASI object, so
  // one that never got that far (link error, no memory export) is started on an empty stand-in first.
  const closeTaskFds = () => {
    for (let fd = FIRST_TASK_FD; fd <= maxFd; fd++) fd_close(fd);
  };
  try {
    closeTaskFds();
  } catch {
    try {
      wasi.start({ exports: { memory: placeholderMemory, _start() {} } } as Parameters<WASI['start']>[0]);
      closeTaskFds();
    } catch {}
  }
  memory = null;
  post(final);
}

port.on('message', (m: WasmWorkerRequest) => {
  if (m?.type !== 'run') return;
  // new WASI() throws when it cannot open the preopen: the task failed, the worker did not (its scratch dir
  // is recreated: `touched`).
  runTask(m.id, m.input).catch((e) => {
    const failed: WasmWorkerMessage = {
      id: m.id,
      type: 'failed',
      message: String(e?.message ?? e),
      cpuMs: 0,
      touched: true,
    };
    port.postMessage(failed);
  });
});
