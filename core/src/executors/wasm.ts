/**
 * Embedded WASM executor: WASI preview1 modules run with node:wasi in worker threads (no install needed).
 * One preopened scratch dir (/scratch → the worker's own temp dir, empty at every task's start), args, env,
 * stdin, memory cap (module memories patched to max = cap, plus worker heap limits), wall-clock timeout
 * (counted from the task's dispatch to its running worker, so a start function that never returns is timed out
 * too; waiting for a worker or booting one never counts), cancel, scratch quota (polled),
 * output cap. stdout/stderr are streamed as the module writes them.
 *
 * Worker threads are pooled: booting one costs ~35 ms of CPU, a no-op task in a warm one ~0.2 ms. Each
 * task still gets a fresh instance and a fresh WASI object there (see wasm-worker.js); a worker whose task was
 * killed (timeout, cancel, quota, output limit) or that failed is terminated and never reused. Compiled
 * modules are cached (small LRU keyed by content hash and memory cap) and posted to each worker once, then
 * named by their key.
 *
 * The pool grows lazily: a task that finds no idle worker waits (first come, first served) for one to be
 * released, and a worker is started for it only when waiting would not pay: once it waited spawnAfterMs while
 * there are fewer workers than eagerWorkers (one per CPU), or when every worker is held by a long or sleeping
 * task (see WorkerPool). Short tasks, however many at once, then run on about one worker per CPU instead of one
 * per task: each worker costs a boot (~35 ms of CPU) and its own JIT warm-up, and more threads than cores
 * running short tasks buy no throughput.
 *
 * Each worker owns a temp dir (meshrun-wasm-<pid>-*, made once) with its scratch dir and a /dev/null
 * descriptor: a task that left them as it found them (the worker says so, see wasm-worker.js) costs no file
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
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { checkPolicy, safeRelativePath } from './policy.ts';
import type { Executor, ExecutorCaps, RunOptions, TaskFile, TaskResult, TaskSpec } from './types.ts';
import { capMemory, WASM_PAGE, wasmApi } from './wasm-module.ts';
import type {
  WasmWorkerData,
  WasmWorkerInput,
  WasmWorkerMessage,
  WasmWorkerRequest,
} from './wasm-worker-protocol.ts';

/** How often the scratch dir's size is checked against the quota (only once the task touched it). */
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
/**
 * Looks in a row (spawnAfterMs apart) at which every busy worker ran the same task before the pool starts
 * one more worker for waiting tasks. Two, because one is often a worker held up by GC or the OS scheduler on a
 * loaded machine, which looks the same as a long task.
 */
const STALLED_LOOKS = 2;
/** Compiled modules each worker keeps (it is told which to drop): a module is posted to a worker once. */
const WORKER_MODULES = 4;

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
  /**
   * A task that finds no idle worker waits for one to be released; after this long (default 2 ms) a new
   * worker may be started for it (see eagerWorkers). Also how often the pool looks at its workers while tasks
   * wait. Waiting never counts against a task's timeout.
   */
  spawnAfterMs?: number;
  /**
   * Up to this many workers (default: os.availableParallelism()), one is started for every task that waited
   * spawnAfterMs. Beyond, only when every worker is held by a long task (WorkerPool): more threads than CPUs
   * would not run short tasks any sooner.
   */
  eagerWorkers?: number;
}

/** What the worker pool has done so far (`idle`/`busy`/`waiting`: now). */
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
  /** Tasks waiting for a worker. */
  waiting: number;
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
  /** Its `touched` flag (WasmWorkerData): 1 once its current task may have left something in scratch. */
  touched: Int32Array;
  /** Its `running` slot (WasmWorkerData): the id of the task it runs now, 0 between tasks. */
  running: Int32Array;
  /** Its `ended` count (WasmWorkerData): tasks it has ended. */
  ended: Int32Array;
  /** `running` and `ended` at the pool's last look (see WorkerPool.#look). */
  runningSeen: number;
  endedSeen: number;
  /** Keys of the compiled modules it holds, least recently used first (its own copy follows this list). */
  modules: string[];
}

/** What a task waiting for a worker gets: one, or why none. */
type Acquired = PooledWorker | 'cancelled' | 'closed';

interface Waiter {
  /** When it began to wait (performance.now()). */
  since: number;
  /** Called once, after it left the queue: a worker (marked busy), 'cancelled', 'closed', or why none started. */
  settle(got: Acquired | Error): void;
}

/**
 * Reusable worker threads, each with its own temp dir. Busy workers keep the process alive (as a running
 * task should); idle ones are unref'd, as are their exit timers, so an idle pool never holds the process open.
 *
 * Tasks that find no idle worker wait in a queue; a released worker goes to the first of them. A worker being
 * started goes, once it runs, to the first waiter (or idle if none waits by then). Workers are started:
 * - at once, when nothing could ever serve the queue (no worker busy or being started);
 * - for each waiter that has waited spawnAfterMs, while there are fewer than eagerWorkers;
 * - beyond that, when the pool is stalled. Every spawnAfterMs while tasks wait, the pool looks at what each
 *   busy worker runs (in slots the workers write themselves, so an executor thread too busy to handle their
 *   messages does not make the pool look stalled): stalled = each runs the same task as at the last look.
 *   After STALLED_LOOKS such looks in a row, one worker is started, because a moment's stall of short tasks
 *   (GC, the OS scheduler on a loaded machine) looks the same as long tasks and should cost one boot, not
 *   one per waiting task. Stalled again once that worker runs a task too: the tasks are long (or sleep), and
 *   a worker is started for every waiting task not yet covered. 8 sleeping tasks all run within about three
 *   worker boots of their submission.
 */
class WorkerPool {
  readonly #idle: PooledWorker[] = [];
  readonly #busy = new Set<PooledWorker>();
  /** Tasks waiting for a worker, first come first served. */
  readonly #waiters: Waiter[] = [];
  readonly #keepIdle: number;
  readonly #idleMs: number;
  readonly #spawnAfterMs: number;
  readonly #eagerWorkers: number;
  readonly #tmpRoot: string;
  /** Workers of this generation being started (their dirs being made); each serves the first waiter. */
  #spawning = 0;
  /** Worker starts in progress, of any generation (close() waits for them). */
  readonly #spawns = new Set<Promise<void>>();
  /** Bumped by close(): a worker whose start began before is not kept. */
  #generation = 0;
  /** Looks in a row at which the pool was stalled (see #look), while tasks waited. */
  #stalledLooks = 0;
  /** Checks the waiters every spawnAfterMs while there are any. */
  #waitCheck: NodeJS.Timeout | null = null;
  /** Dirs of dead workers still being removed (close() waits for them). */
  readonly #removing = new Set<Promise<void>>();
  /** Called with every worker released (close() waits for the busy ones). */
  readonly #releaseListeners = new Set<(pw: PooledWorker) => void>();
  /** Most tasks in flight at once lately: decays as idle workers retire. */
  #recentPeak = 0;
  #stats = { created: 0, tasks: 0, discarded: 0, retired: 0 };

  constructor(
    options: { keepIdle: number; idleMs: number; spawnAfterMs: number; eagerWorkers: number },
    tmpRoot: string,
  ) {
    this.#keepIdle = options.keepIdle;
    this.#idleMs = options.idleMs;
    this.#spawnAfterMs = options.spawnAfterMs;
    this.#eagerWorkers = options.eagerWorkers;
    this.#tmpRoot = tmpRoot;
  }

  get stats(): WasmPoolStats {
    return { ...this.#stats, idle: this.#idle.length, busy: this.#busy.size, waiting: this.#waiters.length };
  }

  /**
   * A warm idle worker (most recently used first), marked busy, or, when none is idle, the first one released
   * or started for this task (see the class comment); its scratch dir is empty. 'cancelled' when the signal
   * fires first, 'closed' when close() ran first. Rejects when a worker started for it could not make its
   * temp dir.
   */
  acquire(signal?: AbortSignal): Promise<Acquired> {
    const pw = this.#idle.pop();
    if (pw) {
      this.#take(pw);
      return Promise.resolve(pw);
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiters.indexOf(waiter);
        if (i < 0) return;
        this.#waiters.splice(i, 1);
        waiter.settle('cancelled');
      };
      const waiter: Waiter = {
        since: performance.now(),
        settle(got) {
          signal?.removeEventListener('abort', onAbort);
          if (got instanceof Error) reject(got);
          else resolve(got);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#serveWaiters();
      if (!this.#waitCheck) {
        this.#look(); // notes what each busy worker runs now
        this.#stalledLooks = 0;
        this.#waitCheck = setInterval(() => this.#checkWaiters(), this.#spawnAfterMs);
        this.#waitCheck.unref();
      }
    });
  }

  /**
   * After a task (whatever its end): a live worker goes to the first waiting task, or back to the idle list
   * (retired instead when enough are idle), once its scratch dir is empty again and its /dev/null descriptor
   * fresh when `wipe`; a dead one's dir is removed. Resolves when that is done.
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
    if (pw.dead) {
      const disposed = this.#dispose(pw);
      this.#serveWaiters(); // its waiters may have counted on it
      return disposed;
    }
    return this.#handOut(pw);
  }

  /** Terminates a worker whose task is being killed; its 'exit' ends the task. */
  discard(pw: PooledWorker): void {
    if (pw.dead) return;
    this.#stats.discarded++;
    this.#terminate(pw);
  }

  /**
   * Ends every waiting task (as `closed`), halts every running task (as `closed`) and terminates every worker;
   * resolves once all have exited, their tasks have ended and every worker dir is removed. Workers still being
   * started are not kept. The pool stays usable: later tasks start new workers.
   */
  async close(): Promise<void> {
    this.#generation++;
    this.#spawning = 0;
    if (this.#waitCheck) clearInterval(this.#waitCheck);
    this.#waitCheck = null;
    for (const waiter of this.#waiters.splice(0)) waiter.settle('closed');
    const spawns = [...this.#spawns];
    const idle = this.#idle.splice(0);
    const busy = [...this.#busy];
    for (const pw of busy) {
      if (pw.current) pw.current.halt('closed');
      else pw.closedBeforeRun = true; // its run() is still writing inputs: it finds the worker dead
      // Also a worker whose task has just ended: it must not be handed to a task that comes after close().
      this.discard(pw);
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
    await Promise.all(spawns);
    await Promise.all(this.#removing);
  }

  /** Marks a worker busy with a task. */
  #take(pw: PooledWorker): void {
    if (pw.idleTimer) clearTimeout(pw.idleTimer);
    pw.idleTimer = null;
    pw.worker.ref();
    this.#busy.add(pw);
    this.#stats.tasks++;
    this.#recentPeak = Math.max(this.#recentPeak, this.#busy.size);
  }

  /** A live worker free for a task (new, or released clean): to the first waiter, else idle or retired. */
  #handOut(pw: PooledWorker): Promise<void> | undefined {
    const waiter = this.#waiters.shift();
    if (waiter) {
      this.#take(pw);
      waiter.settle(pw);
      return;
    }
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

  /** Starts a worker at once when tasks wait and nothing could ever serve them (no worker busy or starting). */
  #serveWaiters(): void {
    if (this.#waiters.length > 0 && this.#busy.size + this.#spawning === 0) this.#spawn();
  }

  /** Every spawnAfterMs while tasks wait: starts workers for them when waiting does not pay (class comment). */
  #checkWaiters(): void {
    this.#serveWaiters();
    if (this.#waiters.length === 0) {
      if (this.#waitCheck) clearInterval(this.#waitCheck);
      this.#waitCheck = null;
      return;
    }
    const look = this.#look();
    if (look === 'progress') this.#stalledLooks = 0;
    else if (look === 'stalled') this.#stalledLooks++;
    // The first #spawning waiters get the workers being started; the others are not covered yet.
    const covered = this.#spawning;
    const uncovered = this.#waiters.length - covered;
    if (uncovered <= 0) return;
    const workers = this.#busy.size + this.#spawning;
    let start = 0;
    if (workers < this.#eagerWorkers) {
      const due = performance.now() - this.#spawnAfterMs;
      let waited = 0;
      while (waited < uncovered && this.#waiters[covered + waited].since <= due) waited++;
      start = Math.min(waited, this.#eagerWorkers - workers);
    } else if (look === 'stalled' && this.#stalledLooks >= STALLED_LOOKS) {
      // A stall may be workers held up for a moment (GC, the OS scheduler): first one more worker. Stalled
      // again once that one runs a task too: the tasks are long, and every waiting task gets a worker.
      start = this.#stalledLooks === STALLED_LOOKS ? 1 : uncovered;
    }
    for (let i = 0; i < start; i++) this.#spawn();
  }

  /**
   * What the busy workers did since the last look, from their own `running` and `ended` slots (so a worker
   * whose result this thread has not handled yet, being busy with other work, does not look stalled):
   * 'progress' when one ended a task; 'stalled' when each runs the same task as then and no worker is being
   * started (each has run its task for spawnAfterMs at least); else 'unclear' (one is booting, between tasks,
   * or has just begun a task, or a worker is being started).
   */
  #look(): 'progress' | 'stalled' | 'unclear' {
    let progress = false;
    let stalled = this.#busy.size > 0 && this.#spawning === 0;
    for (const pw of this.#busy) {
      const running = Atomics.load(pw.running, 0);
      const ended = Atomics.load(pw.ended, 0);
      if (ended !== pw.endedSeen) progress = true;
      if (running === 0 || running !== pw.runningSeen) stalled = false;
      pw.runningSeen = running;
      pw.endedSeen = ended;
    }
    return progress ? 'progress' : stalled ? 'stalled' : 'unclear';
  }

  /** Starts a worker in the background; it goes to the first waiter once ready (see #handOut). */
  #spawn(): void {
    this.#spawning++;
    const spawned = this.#startWorker(this.#generation);
    this.#spawns.add(spawned);
    void spawned.finally(() => this.#spawns.delete(spawned));
  }

  /** Makes a worker's dir and starts it, then hands it out; or tells the first waiter why it could not. */
  async #startWorker(generation: number): Promise<void> {
    let dir: string | null = null;
    let nullFd = -1;
    let pw: PooledWorker | null = null;
    let failure: Error | null = null;
    try {
      dir = await mkdtemp(join(this.#tmpRoot, `meshrun-wasm-${process.pid}-`));
      await mkdir(join(dir, 'scratch'), { mode: 0o700 });
      // Unless close() ran meanwhile: the tasks it was started for are gone.
      if (generation === this.#generation) {
        nullFd = openSync('/dev/null', 'r+');
        pw = this.#newWorker(dir, nullFd);
      }
    } catch (e) {
      failure = e as Error;
    }
    if (pw) {
      this.#spawning--;
      this.#handOut(pw);
      return;
    }
    if (nullFd >= 0) closeSync(nullFd);
    if (dir) await rm(dir, { recursive: true, force: true }).catch(() => {});
    if (generation !== this.#generation) return; // close() settled the waiters and the count
    this.#spawning--;
    this.#waiters.shift()?.settle(failure ?? new Error('the worker was not started')); // the one it was for
    this.#serveWaiters();
  }

  #newWorker(dir: string, nullFd: number): PooledWorker {
    const data: WasmWorkerData = {
      touched: new SharedArrayBuffer(4),
      running: new SharedArrayBuffer(4),
      ended: new SharedArrayBuffer(4),
    };
    // The desktop build bundles this file as its own entry, next to the bundle (apps/desktop/build.ts).
    const worker = new Worker(new URL('./wasm-worker.js', import.meta.url), {
      stdout: true,
      stderr: true,
      resourceLimits: WORKER_RESOURCE_LIMITS,
      execArgv: ['--no-warnings'],
      workerData: data,
    });
    const pw: PooledWorker = {
      worker,
      current: null,
      idleTimer: null,
      dead: false,
      closedBeforeRun: false,
      dir,
      scratch: join(dir, 'scratch'),
      nullFd,
      disposed: null,
      touched: new Int32Array(data.touched),
      running: new Int32Array(data.running),
      ended: new Int32Array(data.ended),
      runningSeen: 0,
      endedSeen: 0,
      modules: [],
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

/** A compiled module and the key workers know it by (null: too big to cache, posted with every task). */
interface CompiledModule {
  key: string | null;
  module: object;
}

/** Compiled modules by content hash and memory cap, least recently used evicted first. */
class ModuleCache {
  readonly #entries = new Map<string, { compiled: Promise<CompiledModule>; bytes: number }>();
  #bytes = 0;
  /**
   * Content hashes by the bytes object they were computed from. Every task of a job hands over the same
   * object (the job spec's, in the replicated state, which nothing writes to), and hashing a 3 MiB module
   * took ~1.5 ms of the event loop per task.
   */
  readonly #hashes = new WeakMap<Uint8Array, string>();

  /** The module capped at capPages, compiled (once); rejects like capMemory/compile for invalid modules. */
  get(bytes: Uint8Array, capPages: number): Promise<CompiledModule> {
    const compile = async (key: string | null) => ({
      key,
      module: await wasmApi.compile(capMemory(bytes, capPages)),
    });
    if (bytes.byteLength > MODULE_CACHE_BYTES / 4) return compile(null);
    let digest = this.#hashes.get(bytes);
    if (digest === undefined) {
      digest = hash('sha256', bytes, 'base64');
      this.#hashes.set(bytes, digest);
    }
    const key = `${digest}:${capPages}`;
    const hit = this.#entries.get(key);
    if (hit) {
      this.#entries.delete(key); // re-inserted as the most recent
      this.#entries.set(key, hit);
      return hit.compiled;
    }
    const entry = { compiled: compile(key), bytes: bytes.byteLength };
    this.#entries.set(key, entry);
    this.#bytes += entry.bytes;
    for (const [k, e] of this.#entries) {
      if (this.#entries.size <= MODULE_CACHE_ENTRIES && this.#bytes <= MODULE_CACHE_BYTES) break;
      this.#delete(k, e);
    }
    entry.compiled.catch(() => this.#delete(key, entry)); // invalid modules are not kept
    return entry.compiled;
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
    this.#pool = new WorkerPool(
      {
        keepIdle: options.idleWorkers ?? 4,
        idleMs: options.idleWorkerMs ?? 10_000,
        spawnAfterMs: options.spawnAfterMs ?? 2,
        eagerWorkers: options.eagerWorkers ?? availableParallelism(),
      },
      this.#tmpRoot,
    );
  }

  async available(): Promise<{ ok: boolean; reason?: string; version?: string }> {
    return { ok: true, version: `node ${process.versions.node} wasi preview1` };
  }

  /** The worker pool's counters (for tests and benchmarks). */
  get poolStats(): WasmPoolStats {
    return this.#pool.stats;
  }

  /**
   * Terminates every worker thread (running tasks and tasks waiting for a worker end as `cancelled`), removes
   * their temp dirs and drops the compiled modules. The executor stays usable: a later run() starts new workers.
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
    let compiled: CompiledModule;
    try {
      compiled = await this.#modules.get(spec.wasm!.module, capPages);
    } catch (e) {
      return result('refused', `invalid module: ${(e as Error).message}`);
    }
    if (signal?.aborted) return result('cancelled', 'cancelled before start');

    let acquired: Acquired;
    try {
      acquired = await this.#pool.acquire(signal);
    } catch (e) {
      return result('error', `cannot make the task's temp dir: ${(e as Error).message}`);
    }
    if (acquired === 'cancelled') return result('cancelled', 'cancelled before start');
    if (acquired === 'closed') return result('cancelled', 'the WASM executor was closed');
    const pw = acquired;
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
      const workerInput: Omit<WasmWorkerInput, 'moduleKey'> = {
        args: [spec.taskId, ...(spec.args ?? [])],
        env: spec.env ?? {},
        scratchDir,
        stdinFd: stdinFd >= 0 ? stdinFd : pw.nullFd,
        nullFd: pw.nullFd,
        maxOutputBytes: this.#maxOutputBytes,
      };
      const ended = await this.#runWorker(pw, compiled, workerInput, spec, opts, policy.scratchBytes);
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
    compiled: CompiledModule,
    taskInput: Omit<WasmWorkerInput, 'moduleKey'>,
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
    const scratchDir = taskInput.scratchDir;
    const id = ++this.#taskSeq;
    // Tasks with inputs have something in scratch from the start: the quota poll walks it at once.
    Atomics.store(pw.touched, 0, spec.inputs?.length ? 1 : 0);
    // The module goes to the worker once; later tasks name it (the worker keeps what pw.modules lists).
    const { key } = compiled;
    const held = key !== null && pw.modules.includes(key);
    const drop = !held && key !== null && pw.modules.length >= WORKER_MODULES ? pw.modules[0] : undefined;
    const input: WasmWorkerInput = {
      ...taskInput,
      moduleKey: key,
      ...(held ? {} : { module: compiled.module }),
      ...(drop === undefined ? {} : { dropModule: drop }),
    };
    const noteModuleSent = () => {
      if (key === null) return;
      const at = pw.modules.indexOf(key);
      if (at >= 0) pw.modules.splice(at, 1);
      else if (drop !== undefined) pw.modules.shift();
      pw.modules.push(key); // the most recently used last
    };
    return new Promise((resolve) => {
      let stop: StopReason | null = null;
      let final: FinalMessage | null = null;
      let workerError: string | null = null;
      let failedCpuMs = 0;
      let startedAt: number | undefined;
      let memoryBytes = 0;
      let timer: NodeJS.Timeout | null = null;
      let settled = false;
      let polling: Promise<void> | null = null;
      /** `touched`: what the worker's flag says; a killed worker's (unknown) dir is removed anyway. */
      const settle = (killed: boolean, touched = killed || Atomics.load(pw.touched, 0) !== 0) => {
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
      // Walks the scratch dir only once a task has run SCRATCH_POLL_MS and may have written there (its touched
      // flag is set): short tasks and tasks that never touch their scratch never pay for it.
      const quotaPoll = setInterval(() => {
        if (polling || Atomics.load(pw.touched, 0) === 0) return;
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
            if (startedAt !== undefined) return; // the timeout already declared it started (see below)
            startedAt = Date.now();
            onEvent({ type: 'started', at: startedAt });
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
        settle(false, false);
        return;
      }
      noteModuleSent();
      // The timeout counts from here, not from `started`: instantiation runs the module's start function, and
      // one that never returns would otherwise hold the worker (and the node's slot) until a cancel. The
      // worker is already running, so nothing but instantiation (normally well under a millisecond) is added.
      // A task timed out before `started` did run guest code (its start function): it is reported as started
      // at dispatch, so its record shows a run that timed out, not one that never began. A module that fails
      // to link ends before any of its code runs and is still reported as not started.
      const dispatchedAt = Date.now();
      timer = setTimeout(() => {
        if (startedAt === undefined && !settled && !final) {
          startedAt = dispatchedAt;
          onEvent({ type: 'started', at: startedAt });
        }
        halt('timeout');
      }, spec.timeoutMs);
      timer.unref();
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
