/**
 * Embedded WASM executor: WASI preview1 modules run with node:wasi in worker threads (no install needed).
 * One preopened scratch dir (/scratch → a fresh temp dir, removed after), args, env, stdin, memory cap
 * (module memories patched to max = cap, plus worker heap limits), wall-clock timeout, cancel, scratch quota
 * (polled), output cap. stdout/stderr are streamed as the module writes them.
 *
 * Worker threads are pooled: booting one costs ~60 ms of CPU, a no-op task in a warm one ~1 ms or less. Each
 * task still gets a fresh instance and a fresh WASI object there (see wasm-worker.ts); a worker whose task was
 * killed (timeout, cancel, quota, output limit) or that failed is terminated and never reused. Compiled
 * modules are cached (small LRU keyed by content hash and memory cap) and handed to workers by postMessage.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readdirSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
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
  /** Parent dir for per-task temp dirs; os.tmpdir() by default. */
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
}

/**
 * Reusable worker threads. Busy workers keep the process alive (as a running task should); idle ones are
 * unref'd, as are their exit timers, so an idle pool never holds the process open.
 */
class WorkerPool {
  readonly #idle: PooledWorker[] = [];
  readonly #busy = new Set<PooledWorker>();
  readonly #keepIdle: number;
  readonly #idleMs: number;
  /** Most tasks in flight at once lately: decays as idle workers retire. */
  #recentPeak = 0;
  #stats = { created: 0, tasks: 0, discarded: 0, retired: 0 };

  constructor(keepIdle: number, idleMs: number) {
    this.#keepIdle = keepIdle;
    this.#idleMs = idleMs;
  }

  get stats(): WasmPoolStats {
    return { ...this.#stats, idle: this.#idle.length, busy: this.#busy.size };
  }

  /** A warm idle worker (most recently used first) or a new one, marked busy. */
  acquire(): PooledWorker {
    let pw = this.#idle.pop();
    if (pw) {
      if (pw.idleTimer) clearTimeout(pw.idleTimer);
      pw.idleTimer = null;
      pw.worker.ref();
    } else pw = this.#spawn();
    this.#busy.add(pw);
    this.#stats.tasks++;
    this.#recentPeak = Math.max(this.#recentPeak, this.#busy.size);
    return pw;
  }

  /** Back to the idle list after a task that ended by itself; retired instead when enough are idle. */
  release(pw: PooledWorker): void {
    pw.current = null;
    this.#busy.delete(pw);
    if (pw.dead) return;
    const keep = Math.min(MAX_IDLE_WORKERS, Math.max(this.#keepIdle, this.#recentPeak));
    if (this.#idle.length >= keep) {
      this.#stats.retired++;
      this.#terminate(pw);
      return;
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

  /** Halts every running task (as `closed`) and terminates every worker; resolves once all have exited. */
  async close(): Promise<void> {
    const all = [...this.#idle, ...this.#busy];
    for (const pw of this.#busy) pw.current?.halt('closed');
    for (const pw of this.#idle) this.#terminate(pw);
    this.#idle.length = 0;
    this.#recentPeak = 0;
    await Promise.all(all.map((pw) => pw.worker.terminate()));
  }

  #spawn(): PooledWorker {
    // The desktop build rewrites this exact expression to its bundled worker (apps/desktop/build.ts).
    const worker = new Worker(new URL('./wasm-worker.ts', import.meta.url), {
      stdout: true,
      stderr: true,
      resourceLimits: WORKER_RESOURCE_LIMITS,
      execArgv: ['--no-warnings'],
    });
    const pw: PooledWorker = { worker, current: null, idleTimer: null, dead: false };
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
      if (i >= 0) this.#idle.splice(i, 1);
      this.#busy.delete(pw);
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
    this.#recentPeak = this.#busy.size + this.#idle.length;
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
    const key = `${createHash('sha256').update(bytes).digest('base64')}:${capPages}`;
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
  readonly #options: WasmExecutorOptions;
  readonly #pool: WorkerPool;
  readonly #modules = new ModuleCache();
  #taskSeq = 0;

  constructor(options: WasmExecutorOptions = {}) {
    this.#options = options;
    this.#pool = new WorkerPool(options.idleWorkers ?? 4, options.idleWorkerMs ?? 10_000);
  }

  async available(): Promise<{ ok: boolean; reason?: string; version?: string }> {
    return { ok: true, version: `node ${process.versions.node} wasi preview1` };
  }

  /** The worker pool's counters (for tests and benchmarks). */
  get poolStats(): WasmPoolStats {
    return this.#pool.stats;
  }

  /**
   * Terminates every worker thread (running tasks end as `cancelled`) and drops the compiled modules. The
   * executor stays usable: a later run() starts new workers.
   */
  async close(): Promise<void> {
    this.#modules.clear();
    await this.#pool.close();
  }

  /** Temp dirs are named meshrun-wasm-<pid>-*; those whose process is gone belong to a crashed run. */
  async cleanupLeftovers(): Promise<number> {
    const root = this.#options.tmpRoot ?? tmpdir();
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

    const root = await mkdtemp(join(this.#options.tmpRoot ?? tmpdir(), `meshrun-wasm-${process.pid}-`));
    const scratchDir = join(root, 'scratch');
    const fds: number[] = [];
    try {
      await mkdir(scratchDir, { mode: 0o700 });
      for (const f of spec.inputs ?? []) {
        const p = join(scratchDir, safeRelativePath(f.path)!);
        await mkdir(dirname(p), { recursive: true });
        await writeFile(p, f.content);
      }
      // stdout/stderr writes never reach these fds (they are intercepted); empty stdin is /dev/null too.
      const nullFd = openSync('/dev/null', 'r+');
      fds.push(nullFd);
      let stdinFd = nullFd;
      if (spec.stdin?.byteLength) {
        const stdinPath = join(root, 'stdin'); // outside /scratch
        writeFileSync(stdinPath, spec.stdin);
        stdinFd = openSync(stdinPath, 'r');
        fds.push(stdinFd);
      }
      const workerInput: WasmWorkerInput = {
        module,
        args: [spec.taskId, ...(spec.args ?? [])],
        env: spec.env ?? {},
        scratchDir,
        stdinFd,
        nullFd,
        maxOutputBytes: this.#options.maxOutputBytes ?? 64 * 1024 * 1024,
      };
      const ended = await this.#runWorker(workerInput, spec, opts, scratchDir, policy.scratchBytes);
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
      return result('error', (e as Error).message);
    } finally {
      for (const fd of fds) closeSync(fd);
      await rm(root, { recursive: true, force: true });
    }
  }

  /** Runs one task on a pooled worker; resolves when it ended (and, when it was killed, the worker exited). */
  #runWorker(
    input: WasmWorkerInput,
    spec: TaskSpec,
    opts: RunOptions,
    scratchDir: string,
    scratchBytes: number,
  ): Promise<WorkerEnded> {
    const { onEvent, signal } = opts;
    if (signal?.aborted) {
      const ended = { message: null, workerError: null, cpuMs: 0, memoryBytes: 0, killed: false };
      return Promise.resolve({ ...ended, stop: 'cancelled' });
    }
    const pool = this.#pool;
    const pw = pool.acquire();
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
        };
        // A quota walk still reading the scratch dir must finish before its descriptors are swept.
        if (killed && polling) void polling.then(() => resolve({ ...ended, killed }));
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
            pool.release(pw);
            settle(false);
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
        pool.release(pw);
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
