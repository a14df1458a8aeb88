/**
 * Embedded WASM executor: WASI preview1 modules run with node:wasi in a worker thread (no install needed).
 * One preopened scratch dir (/scratch → a fresh temp dir, removed after), args, env, stdin, memory cap
 * (module memories patched to max = cap, plus worker heap limits), wall-clock timeout, cancel, scratch quota
 * (polled), output cap. stdout/stderr are streamed as the module writes them.
 */
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { checkPolicy, safeRelativePath } from './policy.ts';
import type { Executor, ExecutorCaps, RunOptions, TaskFile, TaskResult, TaskSpec } from './types.ts';
import { capMemory, WASM_PAGE, wasmApi } from './wasm-module.ts';
import type { WasmWorkerInput, WasmWorkerMessage } from './wasm-worker.ts';

/** How often the scratch dir's size is checked against the quota. */
const SCRATCH_POLL_MS = 250;
/** The scratch walk stops counting after this many entries (and treats that as over quota). */
const SCRATCH_MAX_ENTRIES = 10_000;
/** A trap with memory above this fraction of the cap is reported as 'oom' (an allocator gave up). */
const OOM_TRAP_FRACTION = 0.75;

export interface WasmExecutorOptions {
  /** Parent dir for per-task temp dirs; os.tmpdir() by default. */
  tmpRoot?: string;
  /** stdout+stderr bytes one task may write before it is stopped. Default 64 MiB. */
  maxOutputBytes?: number;
}

export class WasmExecutor implements Executor {
  readonly kind = 'wasm' as const;
  readonly #options: WasmExecutorOptions;

  constructor(options: WasmExecutorOptions = {}) {
    this.#options = options;
  }

  async available(): Promise<{ ok: boolean; reason?: string; version?: string }> {
    return { ok: true, version: `node ${process.versions.node} wasi preview1` };
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
    let module: Uint8Array;
    try {
      module = capMemory(spec.wasm!.module, capPages);
      await wasmApi.compile(module);
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
      const stdinPath = join(root, 'stdin');
      writeFileSync(stdinPath, spec.stdin ?? new Uint8Array(0));
      const stdinFd = openSync(stdinPath, 'r');
      fds.push(stdinFd);
      const nullFd = openSync('/dev/null', 'w');
      fds.push(nullFd);
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
      const usage = { cpuMs: ended.cpuMs, peakMemoryBytes: ended.memoryBytes };
      const base = { startedAt: ended.startedAt, endedAt: Date.now(), usage };
      const m = ended.message;
      if (ended.stop === 'cancelled') return result('cancelled', 'cancelled by request', base);
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

  #runWorker(
    input: WasmWorkerInput,
    spec: TaskSpec,
    opts: RunOptions,
    scratchDir: string,
    scratchBytes: number,
  ): Promise<{
    stop: 'timeout' | 'cancelled' | 'scratch' | 'output' | null;
    message: WasmWorkerMessage | null;
    workerError: string | null;
    startedAt?: number;
    cpuMs: number;
    memoryBytes: number;
  }> {
    const { onEvent, signal } = opts;
    const worker = new Worker(new URL('./wasm-worker.ts', import.meta.url), {
      workerData: input,
      transferList: [],
      stdout: true,
      stderr: true,
      // Bounds the JS side of the worker; linear memory is bounded by the patched module.
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      execArgv: ['--no-warnings'],
    });
    return new Promise((resolve) => {
      let stop: 'timeout' | 'cancelled' | 'scratch' | 'output' | null = null;
      let final: WasmWorkerMessage | null = null;
      let workerError: string | null = null;
      let startedAt: number | undefined;
      let memoryBytes = 0;
      let timer: NodeJS.Timeout | null = null;
      let settled = false;
      const halt = (why: 'timeout' | 'cancelled' | 'scratch' | 'output') => {
        if (stop || final) return;
        stop = why;
        void worker.terminate();
      };
      const onAbort = () => halt('cancelled');
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) onAbort();
      let polling = false;
      const quotaPoll = setInterval(() => {
        if (polling) return;
        polling = true;
        dirSize(scratchDir)
          .then((n) => {
            if (n > scratchBytes) halt('scratch');
          })
          .catch(() => {})
          .finally(() => {
            polling = false;
          });
      }, SCRATCH_POLL_MS);
      worker.on('message', (m: WasmWorkerMessage) => {
        if (m.type === 'started') {
          startedAt = Date.now();
          onEvent({ type: 'started', at: startedAt });
          timer = setTimeout(() => halt('timeout'), spec.timeoutMs);
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
        else if (m.type === 'exit' || m.type === 'trap') {
          final = m;
          memoryBytes = Math.max(memoryBytes, m.memoryBytes);
        }
      });
      worker.on('error', (e: Error & { code?: string }) => {
        workerError = `${e.code ?? ''} ${e.message}`.trim();
      });
      worker.on('exit', () => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        clearInterval(quotaPoll);
        signal?.removeEventListener('abort', onAbort);
        const f = final as WasmWorkerMessage | null;
        const cpuMs =
          f && (f.type === 'exit' || f.type === 'trap')
            ? f.cpuMs
            : // killed mid-run: the worker was busy on one thread, so wall time bounds its CPU time
              startedAt
              ? Date.now() - startedAt
              : 0;
        resolve({ stop: final ? null : stop, message: final, workerError, startedAt, cpuMs, memoryBytes });
      });
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
