/**
 * Embedded WASM executor: WASI preview1 modules run with node:wasi in worker threads (no install needed).
 * One preopened scratch dir (/scratch → the worker's own temp dir, empty at every task's start), args, env,
 * stdin, memory cap (module memories patched to max = cap, plus worker heap limits), wall-clock timeout,
 * cancel, scratch quota (polled), output cap. stdout/stderr are streamed as the module writes them.
 *
 * Worker threads are pooled: booting one costs ~60 ms of CPU, a no-op task in a warm one ~0.4 ms. Each
 * task still gets a fresh instance and a fresh WASI object there (see wasm-worker.ts); a worker whose task was
 * killed (timeout, cancel, quota, output limit) or that failed is terminated and never reused. Compiled
 * modules are cached (small LRU keyed by content hash and memory cap) and handed to workers by postMessage.
 *
 * Each worker owns a temp dir (meshrun-wasm-<pid>-*, made once) with its scratch dir and a /dev/null
 * descriptor: a task that left them as it found them (the worker says so, see wasm-worker.ts) costs no file
 * system work at all; after one that touched them, had inputs or outputs, the scratch dir is recreated and the
 * descriptor reopened before the worker takes another task; a killed worker's dir is removed with it.
 */
import { hash } from 'node:crypto';
import {
  closeSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { checkPolicy, safeRelativePath } from './policy.ts';
import type { Executor, ExecutorCaps, RunOptions, TaskFile, TaskResult, TaskSpec } from './types.ts';
import { capMemory, WASM_PAGE, wasmApi } from './wasm-module.ts';
import type { WasmWorkerInput, WasmWorkerMessage, WasmWorkerRequest } from './wasm-worker.ts';

/** How often the scratch dir's size is checked against the quota. */
const SCRATCH_POLL_MS = 250;
/** The scratch walk stops counting after this many entries (and treats that as over quota). */
const SCRATCH_MAX_ENTRIES = 10_000;
/** A trap with memory above this fraction of the cap is reported as 'oom' (an allocator gave up). */
const OOM_TRAP_FRACTION = 0.75;
/** Bounds the JS side of every worker; linear memory is bounded by the patched module. */
const WORKER_RESOURCE_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 };
/** Idle workers are never kept beyond this many, whatever ran at once before. */
const MAX_IDLE_WORKERS = 64;
/** Compiled modules kept: at most this many, of at most this many source bytes in all. */
const MODULE_CACHE_ENTRIES = 16;
const MODULE_CACHE_BYTES = 32 * 1024 * 1024;

export interface WasmExecutorOptions {
  /** Parent dir for the workers' temp dirs; os.tmpdir() by default. */
  tmpRoot?: string;
  /** stdout+stderr bytes one task may write before it is stopped. Default 64 MiB. */
  maxOutputBytes?: number;
  /**
   * Idle worker threads kept for the next tasks: up to this many (default 4), or up to the number of tasks
   * that ran at once recently when that is more.
   */
  idleWorkers?: number;
  /** An idle worker thread exits after this long without a task (default 10 s). */
  idleWorkerMs?: number;
}

/** What the worker pool has done so far (`idle`/`busy`: now). */
export interface WasmPoolStats {
  /** Worker threads started. */
  created: number;
  /** Tasks handed to a worker. */
  tasks: number;
  /** Workers terminated because their task was killed, or that failed or exited. */
  discarded: number;
  /** Idle workers that exited after idleWorkerMs, or were not kept because enough were idle. */
  retired: number;
  idle: number;
  busy: number;
}

type StopReason = 'timeout' | 'cancelled' | 'scratch' | 'output' | 'closed';
type FinalMessage = Extract<WasmWorkerMessage, { type: 'exit' | 'trap' }>;

interface WorkerEnded {
  stop: StopReason | null;
  message: FinalMessage | null;
  workerError: string | null;
  startedAt?: number;
  cpuMs: number;
  memoryBytes: number;
  /** The worker was terminated while it ran this task (its descriptors were not closed by it). */
  killed: boolean;
  /** The task may have left something in the worker's scratch dir or on its /dev/null descriptor. */
  touched: boolean;
}

/** The task a pooled worker runs now; messages tagged with any other id are dropped. */
interface TaskSlot {
  id: number;
  onMessage(m: WasmWorkerMessage): void;
  onError(message: string): void;
  onExit(): void;
  halt(why: StopReason): void;
}

interface PooledWorker {
  worker: Worker;
  current: TaskSlot | null;
  idleTimer: NodeJS.Timeout | null;
  /** Terminated (or terminating), or exited by itself: never handed out again. */
  dead: boolean;
  /** Terminated by close() while its task was being prepared (acquired, nothing posted yet). */
  closedBeforeRun: boolean;
  /** This worker's temp dir (meshrun-wasm-<pid>-*): holds scratch/ and, briefly, a task's stdin file. */
  dir: string;
  /** Preopened as /scratch for each of its tasks; empty whenever the worker is idle. */
  scratch: string;
  /** /dev/null opened for its tasks' empty stdin, stdout and stderr. */
  nullFd: number;
  /** Resolves once the worker is gone and its dir removed (see #dispose). */
  disposed: Promise<void> | null;
}

/**
 * Reusable worker threads, each with its own temp dir. Busy workers keep the process alive (as a running
 * task should); idle ones are unref'd, as are their exit timers, so an idle pool never holds the process open.
 */
class WorkerPool {
  readonly #idle: PooledWorker[] = [];
  readonly #busy = new Set<PooledWorker>();
  readonly #keepIdle: number;
  readonly #idleMs: number;
  readonly #tmpRoot: string;
  /** Dirs of dead workers still being removed (close() waits for them). */
  readonly #removing = new Set<Promise<void>>();
  /** Called with every worker released (close() waits for the busy ones). */
  readonly #releaseListeners = new Set<(pw: PooledWorker) => void>();
  /** Most tasks in flight at once lately: decays as idle workers retire. */
  #recentPeak = 0;
  #stats = { created: 0, tasks: 0, discarded: 0, retired: 0 };

  constructor(keepIdle: number, idleMs: number, tmpRoot: string) {
    this.#keepIdle = keepIdle;
    this.#idleMs = idleMs;
    this.#tmpRoot = tmpRoot;
  }

  get stats(): WasmPoolStats {
    return { ...this.#stats, idle: this.#idle.length, busy: this.#busy.size };
  }

  /**
   * A warm idle worker (most recently used first) or a new one, marked busy; its scratch dir is empty. Rejects
   * when a new worker's temp dir cannot be made.
   */
  async acquire(): Promise<PooledWorker> {
    let pw = this.#idle.pop();
    if (pw) {
      if (pw.idleTimer) clearTimeout(pw.idleTimer);
      pw.idleTimer = null;
      pw.worker.ref();
    } else pw = await this.#spawn();
    this.#busy.add(pw);
    this.#stats.tasks++;
    this.#recentPeak = Math.max(this.#recentPeak, this.#busy.size);
    return pw;
  }

  /**
   * After a task (whatever its end): a live worker goes back to the idle list (retired instead when enough are
   * idle), once its scratch dir is empty again and its /dev/null descriptor fresh when `wipe`; a dead one's
   * dir is removed. Resolves when that is done.
   */
  async release(pw: PooledWorker, wipe: boolean): Promise<void> {
    pw.current = null;
    if (wipe && !pw.dead) {
      try {
        await rm(pw.scratch, { recursive: true, force: true });
        await mkdir(pw.scratch, { mode: 0o700 });
        closeSync(pw.nullFd);
        pw.nullFd = -1;
        pw.nullFd = openSync('/dev/null', 'r+');
      } catch {
        this.discard(pw); // never handed out with a scratch dir in an unknown state
      }
    }
    this.#busy.delete(pw);
    for (const listener of this.#releaseListeners) listener(pw);
    if (pw.dead) return this.#dispose(pw);
    const keep = Math.min(MAX_IDLE_WORKERS, Math.max(this.#keepIdle, this.#recentPeak));
    if (this.#idle.length >= keep) {
      this.#stats.retired++;
      this.#terminate(pw);
      return this.#dispose(pw);
    }
    pw.worker.unref();
    pw.idleTimer = setTimeout(() => this.#retire(pw), this.#idleMs);
    pw.idleTimer.unref();
    this.#idle.push(pw);
  }

  /** Terminates a worker whose task is being killed; its 'exit' ends the task. */
  discard(pw: PooledWorker): void {
    if (pw.dead) return;
    this.#stats.discarded++;
    this.#terminate(pw);
  }

  /**
   * Halts every running task (as `closed`) and terminates every worker; resolves once all have exited, their
   * tasks have ended and every worker dir is removed.
   */
  async close(): Promise<void> {
    const idle = this.#idle.splice(0);
    const busy = [...this.#busy];
    for (const pw of busy) {
      if (pw.current) pw.current.halt('closed');
      else {
        pw.closedBeforeRun = true; // its run() is still writing inputs: it finds the worker dead
        this.discard(pw);
      }
    }
    for (const pw of idle) this.#terminate(pw);
    this.#recentPeak = 0;
    for (const pw of idle) void this.#dispose(pw);
    // A busy worker's dir goes when its task's run() releases it, right after the task ended.
    const pending = new Set(busy.filter((pw) => this.#busy.has(pw)));
    const released = new Promise<void>((resolve) => {
      if (pending.size === 0) return resolve();
      const listener = (pw: PooledWorker) => {
        if (pending.delete(pw) && pending.size === 0) {
          this.#releaseListeners.delete(listener);
          resolve();
        }
      };
      this.#releaseListeners.add(listener);
    });
    await Promise.all([...idle, ...busy].map((pw) => pw.worker.terminate()));
    await released;
    await Promise.all(this.#removing);
  }

  async #spawn(): Promise<PooledWorker> {
    const dir = await mkdtemp(join(this.#tmpRoot, `meshrun-wasm-${process.pid}-`));
    const scratch = join(dir, 'scratch');
    let nullFd = -1;
    try {
      await mkdir(scratch, { mode: 0o700 });
      nullFd = openSync('/dev/null', 'r+');
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    // The desktop build rewrites this exact expression to its bundled worker (apps/desktop/build.ts).
    const worker = new Worker(new URL('./wasm-worker.ts', import.meta.url), {
      stdout: true,
      stderr: true,
      resourceLimits: WORKER_RESOURCE_LIMITS,
      execArgv: ['--no-warnings'],
    });
    const pw: PooledWorker = {
      worker,
      current: null,
      idleTimer: null,
      dead: false,
      closedBeforeRun: false,
      dir,
      scratch,
      nullFd,
      disposed: null,
    };
    this.#stats.created++;
    worker.on('message', (m: WasmWorkerMessage) => {
      if (pw.current && m?.id === pw.current.id) pw.current.onMessage(m);
    });
    worker.on('error', (e: Error & { code?: string }) => {
      pw.current?.onError(`${e.code ?? ''} ${e.message}`.trim());
    });
    worker.on('exit', () => {
      if (!pw.dead) this.#stats.discarded++; // exited by itself (crash, heap limit)
      pw.dead = true;
      if (pw.idleTimer) clearTimeout(pw.idleTimer);
      const i = this.#idle.indexOf(pw);
      if (i >= 0) {
        this.#idle.splice(i, 1);
        void this.#dispose(pw);
      }
      // A busy worker stays counted as busy until its task's run() releases it (and removes its dir).
      const task = pw.current;
      pw.current = null;
      task?.onExit();
    });
    return pw;
  }

  #retire(pw: PooledWorker): void {
    const i = this.#idle.indexOf(pw);
    if (i < 0) return;
    this.#idle.splice(i, 1);
    this.#stats.retired++;
    this.#terminate(pw);
    void this.#dispose(pw);
    this.#recentPeak = this.#busy.size + this.#idle.length;
  }

  /**
   * Closes a dead worker's /dev/null descriptor and removes its dir (once). Only for a worker that runs no
   * task: idle when terminated, or released after its task ended (a killed one has exited by then).
   */
  #dispose(pw: PooledWorker): Promise<void> {
    if (pw.disposed) return pw.disposed;
    if (pw.nullFd >= 0) closeSync(pw.nullFd);
    pw.nullFd = -1;
    const removed = rm(pw.dir, { recursive: true, force: true })
      .catch(() => {}) // what is left is cleanupLeftovers()' once this process is gone
      .finally(() => this.#removing.delete(removed));
    this.#removing.add(removed);
    pw.disposed = removed;
    return removed;
  }

  #terminate(pw: PooledWorker): void {
    if (pw.dead) return;
    pw.dead = true;
    if (pw.idleTimer) clearTimeout(pw.idleTimer);
    pw.idleTimer = null;
    void pw.worker.terminate();
  }
}

/** Compiled modules by content hash and memory cap, least recently used evicted first. */
class ModuleCache {
  readonly #entries = new Map<string, { module: Promise<object>; bytes: number }>();
  #bytes = 0;

  /** The module capped at capPages, compiled (once); rejects like capMemory/compile for invalid modules. */
  get(bytes: Uint8Array, capPages: number): Promise<object> {
    const compile = async () => wasmApi.compile(capMemory(bytes, capPages));
    if (bytes.byteLength > MODULE_CACHE_BYTES / 4) return compile();
    const key = `${hash('sha256', bytes, 'base64')}:${capPages}`;
    const hit = this.#entries.get(key);
    if (hit) {
      this.#entries.delete(key); // re-inserted as the most recent
      this.#entries.set(key, hit);
      return hit.module;
    }
    const entry = { module: compile(), bytes: bytes.byteLength };
    this.#entries.set(key, entry);
    this.#bytes += entry.bytes;
    for (const [k, e] of this.#entries) {
      if (this.#entries.size <= MODULE_CACHE_ENTRIES && this.#bytes <= MODULE_CACHE_BYTES) break;
      this.#delete(k, e);
    }
    entry.module.catch(() => this.#delete(key, entry)); // invalid modules are not kept
    return entry.module;
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  #delete(key: string, entry: { bytes: number }): void {
    if (this.#entries.get(key) !== entry) return;
    this.#entries.delete(key);
    this.#bytes -= entry.bytes;
  }
}

export class WasmExecutor implements Executor {
  readonly kind = 'wasm' as const;
  readonly #pool: WorkerPool;
  readonly #modules = new ModuleCache();
  readonly #tmpRoot: string;
  readonly #maxOutputBytes: number;
  #taskSeq = 0;

  constructor(options: WasmExecutorOptions = {}) {
    this.#tmpRoot = options.tmpRoot ?? tmpdir();
    this.#maxOutputBytes = options.maxOutputBytes ?? 64 * 1024 * 1024;
    this.#pool = new WorkerPool(options.idleWorkers ?? 4, options.idleWorkerMs ?? 10_000, this.#tmpRoot);
  }

  async available(): Promise<{ ok: boolean; reason?: string; version?: string }> {
    return { ok: true, version: `node ${process.versions.node} wasi preview1` };
  }

  /** The worker pool's counters (for tests and benchmarks). */
  get poolStats(): WasmPoolStats {
    return this.#pool.stats;
  }

  /**
   * Terminates every worker thread (running tasks end as `cancelled`), removes their temp dirs and drops the
   * compiled modules. The executor stays usable: a later run() starts new workers.
   */
  async close(): Promise<void> {
    this.#modules.clear();
    await this.#pool.close();
  }

  /** Temp dirs are named meshrun-wasm-<pid>-*; those whose process is gone belong to a crashed run. */
  async cleanupLeftovers(): Promise<number> {
    const root = this.#tmpRoot;
    let removed = 0;
    for (const name of await readdir(root).catch(() => [] as string[])) {
      const m = /^meshrun-wasm-(\d+)-/.exec(name);
      if (!m || processAlive(Number(m[1]))) continue;
      await rm(join(root, name), { recursive: true, force: true });
      removed++;
    }
    return removed;
  }

  async run(spec: TaskSpec, opts: RunOptions): Promise<TaskResult> {
    const { policy, signal } = opts;
    const result = (
      outcome: TaskResult['outcome'],
      reason: string,
      extra: Partial<TaskResult> = {},
    ): TaskResult => ({
      outcome,
      exitCode: null,
      reason,
      endedAt: Date.now(),
      usage: { cpuMs: 0, peakMemoryBytes: 0 },
      ...extra,
    });
    const caps: ExecutorCaps = { executors: ['wasm'], gpus: {}, nvidiaRuntime: false };
    const refusal = checkPolicy(spec, policy, caps);
    if (refusal) return result('refused', refusal);
    const capPages = Math.floor(spec.resources.memoryBytes / WASM_PAGE);
    const capBytes = capPages * WASM_PAGE;
    let module: object;
    try {
      module = await this.#modules.get(spec.wasm!.module, capPages);
    } catch (e) {
      return result('refused', `invalid module: ${(e as Error).message}`);
    }
    if (signal?.aborted) return result('cancelled', 'cancelled before start');

    let pw: PooledWorker;
    try {
      pw = await this.#pool.acquire();
    } catch (e) {
      return result('error', `cannot make the task's temp dir: ${(e as Error).message}`);
    }
    const scratchDir = pw.scratch;
    // The scratch dir is recreated after a task that had inputs or outputs, touched it or did not end by itself.
    let wipe = Boolean(spec.inputs?.length || spec.outputs?.length);
    let stdinFd = -1;
    try {
      for (const f of spec.inputs ?? []) {
        const p = join(scratchDir, safeRelativePath(f.path)!);
        const parent = dirname(p);
        if (parent !== scratchDir) await mkdir(parent, { recursive: true });
        await writeFile(p, f.content);
      }
      // stdout/stderr writes never reach the /dev/null fd (they are intercepted); empty stdin is /dev/null too.
      if (spec.stdin?.byteLength) {
        const stdinPath = join(pw.dir, 'stdin'); // outside /scratch; unlinked as soon as it is open
        writeFileSync(stdinPath, spec.stdin, { mode: 0o600 });
        try {
          stdinFd = openSync(stdinPath, 'r');
        } finally {
          unlinkSync(stdinPath);
        }
      }
      const workerInput: WasmWorkerInput = {
        module,
        args: [spec.taskId, ...(spec.args ?? [])],
        env: spec.env ?? {},
        scratchDir,
        stdinFd: stdinFd >= 0 ? stdinFd : pw.nullFd,
        nullFd: pw.nullFd,
        maxOutputBytes: this.#maxOutputBytes,
      };
      const ended = await this.#runWorker(pw, workerInput, spec, opts, policy.scratchBytes);
      if (ended.touched) wipe = true;
      // A terminated worker never closed what its WASI object opened (the preopen, the task's files).
      if (ended.killed) closeDescriptorsUnder(scratchDir);
      const usage = { cpuMs: ended.cpuMs, peakMemoryBytes: ended.memoryBytes };
      const base = { startedAt: ended.startedAt, endedAt: Date.now(), usage };
      const m = ended.message;
      if (ended.stop === 'cancelled') return result('cancelled', 'cancelled by request', base);
      if (ended.stop === 'closed') return result('cancelled', 'the WASM executor was closed', base);
      if (ended.stop === 'timeout') return result('timeout', `exceeded ${spec.timeoutMs} ms`, base);
      if (ended.stop === 'scratch')
        return result('error', `scratch quota of ${policy.scratchBytes} bytes exceeded`, base);
      if (ended.stop === 'output') return result('error', 'output limit exceeded', base);
      const outputs = spec.outputs?.length
        ? await collectOutputs(scratchDir, spec.outputs, policy.scratchBytes)
        : undefined;
      const withOutputs = { ...base, ...(outputs ? { outputs } : {}) };
      if (m?.type === 'exit')
        return result('exited', `exited with code ${m.code}`, { ...withOutputs, exitCode: m.code });
      if (m?.type === 'trap') {
        if (m.memoryBytes >= capBytes * OOM_TRAP_FRACTION)
          return result('oom', `trapped near the memory cap of ${capBytes} bytes: ${m.message}`, withOutputs);
        return result('error', `trap: ${m.message}`, withOutputs);
      }
      if (ended.workerError) {
        if (/ERR_WORKER_OUT_OF_MEMORY|out of memory|allocation failed/i.test(ended.workerError))
          return result('oom', `worker ran out of memory: ${ended.workerError}`, withOutputs);
        return result('error', `worker failed: ${ended.workerError}`, withOutputs);
      }
      return result('error', 'worker ended without a result', withOutputs);
    } catch (e) {
      wipe = true;
      return result('error', (e as Error).message);
    } finally {
      if (stdinFd >= 0) closeSync(stdinFd);
      // A killed worker is dead: its whole dir goes. Otherwise its scratch dir is empty again before it is reused.
      await this.#pool.release(pw, wipe);
    }
  }

  /** Runs one task on a pooled worker; resolves when it ended (and, when it was killed, the worker exited). */
  #runWorker(
    pw: PooledWorker,
    input: WasmWorkerInput,
    spec: TaskSpec,
    opts: RunOptions,
    scratchBytes: number,
  ): Promise<WorkerEnded> {
    const { onEvent, signal } = opts;
    const ended = { message: null, cpuMs: 0, memoryBytes: 0 };
    if (signal?.aborted)
      return Promise.resolve({
        ...ended,
        workerError: null,
        stop: 'cancelled',
        killed: false,
        touched: false,
      });
    // Closed or crashed while run() prepared the task: nothing would ever answer.
    if (pw.dead) {
      const stop = pw.closedBeforeRun ? 'closed' : null;
      const workerError = stop ? null : 'the worker thread exited before the task started';
      return Promise.resolve({ ...ended, stop, workerError, killed: true, touched: true });
    }
    const pool = this.#pool;
    const scratchDir = input.scratchDir;
    const id = ++this.#taskSeq;
    return new Promise((resolve) => {
      let stop: StopReason | null = null;
      let final: FinalMessage | null = null;
      let workerError: string | null = null;
      let failedCpuMs = 0;
      let startedAt: number | undefined;
      let memoryBytes = 0;
      let timer: NodeJS.Timeout | null = null;
      let settled = false;
      /** Unknown until the worker says (a killed worker's dir is removed anyway). */
      let touched = true;
      let polling: Promise<void> | null = null;
      const settle = (killed: boolean) => {
        settled = true;
        if (timer) clearTimeout(timer);
        clearInterval(quotaPoll);
        signal?.removeEventListener('abort', onAbort);
        const cpuMs = final
          ? final.cpuMs
          : killed && startedAt
            ? // killed mid-run: the worker was busy on one thread, so wall time bounds its CPU time
              Date.now() - startedAt
            : failedCpuMs;
        const ended = {
          stop: final ? null : stop,
          message: final,
          workerError,
          startedAt,
          cpuMs,
          memoryBytes,
          touched,
        };
        // A quota walk still reading the scratch dir must finish before its descriptors are swept (killed) or it
        // is wiped and handed to the worker's next task (whose own sweep must not race with this walk's fds).
        if (polling) void polling.then(() => resolve({ ...ended, killed }));
        else resolve({ ...ended, killed });
      };
      const halt = (why: StopReason) => {
        if (stop || final || settled) return;
        stop = why;
        pool.discard(pw); // its 'exit' settles the task
      };
      const onAbort = () => halt('cancelled');
      // Only starts walking the scratch dir once a task has run SCRATCH_POLL_MS: short tasks never pay for it.
      const quotaPoll = setInterval(() => {
        if (polling) return;
        polling = dirSize(scratchDir)
          .then((n) => {
            if (n > scratchBytes) halt('scratch');
          })
          .catch(() => {})
          .finally(() => {
            polling = null;
          });
      }, SCRATCH_POLL_MS);
      quotaPoll.unref();
      pw.current = {
        id,
        halt,
        onMessage(m) {
          if (settled) return;
          if (m.type === 'started') {
            startedAt = Date.now();
            onEvent({ type: 'started', at: startedAt });
            timer = setTimeout(() => halt('timeout'), spec.timeoutMs);
            timer.unref();
          } else if (m.type === 'output') {
            memoryBytes = Math.max(memoryBytes, m.memoryBytes);
            if (!stop)
              onEvent({
                type: 'output',
                stream: m.fd === 1 ? 'stdout' : 'stderr',
                data: m.data,
                at: Date.now(),
              });
          } else if (m.type === 'output-limit') halt('output');
          else if (m.type === 'exit' || m.type === 'trap' || m.type === 'failed') {
            if (m.type === 'failed') {
              workerError = m.message;
              failedCpuMs = m.cpuMs;
            } else {
              final = m;
              memoryBytes = Math.max(memoryBytes, m.memoryBytes);
            }
            // Killed meanwhile: the worker is going away and its 'exit' settles the task.
            if (stop) return;
            touched = m.touched;
            settle(false); // run() releases the worker once done with its scratch dir
          }
        },
        onError(message) {
          workerError = message;
        },
        onExit() {
          if (!settled) settle(true);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        pw.worker.postMessage({ type: 'run', id, input } satisfies WasmWorkerRequest);
      } catch (e) {
        // Nothing reached the worker (the input could not be cloned): it is still fine for the next task.
        workerError = (e as Error).message;
        touched = false;
        settle(false);
      }
    });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  let entries = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (++entries > SCRATCH_MAX_ENTRIES) return Number.POSITIVE_INFINITY;
      const p = join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else total += (await lstat(p)).size;
    }
  }
  return total;
}

async function collectOutputs(scratchDir: string, paths: string[], maxBytes: number): Promise<TaskFile[]> {
  const out: TaskFile[] = [];
  let budget = maxBytes;
  const root = await realpath(scratchDir);
  const addFile = async (rel: string) => {
    const st = await lstat(join(scratchDir, rel)).catch(() => null);
    if (!st) return;
    // The module may have made a directory on the way a symlink: only read what really lies inside scratch.
    const real = await realpath(join(scratchDir, rel)).catch(() => null);
    if (real === null || !real.startsWith(`${root}/`)) return;
    if (st.isDirectory()) {
      for (const name of await readdir(join(scratchDir, rel))) await addFile(`${rel}/${name}`);
      return;
    }
    if (!st.isFile()) return; // symlinks could point outside scratch: never followed
    if (st.size > budget) throw new Error(`outputs exceed ${maxBytes} bytes`);
    budget -= st.size;
    out.push({ path: rel, content: new Uint8Array(await readFile(join(scratchDir, rel))) });
  };
  for (const p of paths) await addFile(safeRelativePath(p)!);
  return out;
}

/**
 * Closes this process's descriptors that point into dir (Linux: /proc/self/fd). Used after a worker was
 * terminated mid-task: node:wasi never closes what a WASI object opened, and the dead thread cannot.
 * Only that task's (dead) worker ever opened anything under its scratch dir, so nothing else is touched.
 */
function closeDescriptorsUnder(dir: string): void {
  let names: string[];
  let real: string;
  try {
    names = readdirSync('/proc/self/fd');
    real = realpathSync(dir);
  } catch {
    return; // not Linux: nothing to sweep with
  }
  for (const name of names) {
    try {
      const target = readlinkSync(`/proc/self/fd/${name}`);
      if (target === real || target.startsWith(`${real}/`)) closeSync(Number(name));
    } catch {}
  }
}
