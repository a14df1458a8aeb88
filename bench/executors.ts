/**
 * Executor numbers (one run, same machine, same image and command for both sides):
 *  - overhead of our Docker executor vs a bare `docker run --rm` (p50/p99 over 50 runs each, interleaved), and
 *    vs the same create/start/wait/remove through the engine API without sandbox options, attach or stats,
 *  - container start throughput with 16 in parallel: our executor vs 16 parallel `docker run --rm` CLIs,
 *  - WASM: the first task's start on a fresh executor (boots a worker thread), then with the worker pool warm
 *    the start latency (run() call → 'started' event) and whole-run time, p50, and the throughput of
 *    WASM_TASKS no-op tasks run WASM_PARALLEL at a time (tasks/s, CPU ms per task across all threads and on the
 *    executor's own thread alone; WASM_TASKS=n in the environment overrides the default 500), and the same for
 *    a module near the size limit (a 2.5 MiB data segment: hashed to find it in the compiled-module cache, and
 *    copied into every instance's memory).
 * Run alone: `npx node bench/executors.ts` (needs the Docker engine and meshrun-test/busybox:1), or
 * `npx node bench/executors.ts wasm` for the WASM part only (no Docker needed).
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DockerExecutor } from '@meshrun/core/executors/docker.ts';
import type { NodePolicy, TaskSpec } from '@meshrun/core/executors/types.ts';
import { WasmExecutor } from '@meshrun/core/executors/wasm.ts';
import { wasmOf } from '../test/integration/lib/wasm.ts';

const execFileAsync = promisify(execFile);
const IMAGE = 'meshrun-test/busybox:1';
const COMMAND = ['true'];
const RUNS = 50;
const PARALLEL = 16;
const WASM_RUNS = 30;
const WASM_TASKS = Number(process.env.WASM_TASKS) || 500;
const WASM_PARALLEL = 16;
const BIG_MODULE_DATA_BYTES = 2.5 * 1024 * 1024;
const BIG_MODULE_TASKS = 200;

const policy: NodePolicy = {
  allowNetwork: false,
  allowGpu: false,
  allowedExecutors: ['docker', 'wasm'],
  maxMemoryBytes: 256 * 1024 * 1024,
  maxCpus: 2,
  maxPids: 64,
  scratchBytes: 16 * 1024 * 1024,
};

// (module (memory (export "memory") 1) (func (export "_start"))) assembled by hand: no toolchain needed.
const EMPTY_WASI_MODULE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00,
  0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06,
  0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
]);

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}
const round = (n: number) => Math.round(n * 10) / 10;

let seq = 0;
function spec(): TaskSpec {
  return {
    taskId: `bench-${process.pid}-${++seq}`,
    jobId: 'bench',
    attempt: 0,
    executor: 'docker',
    image: IMAGE,
    command: COMMAND,
    resources: { cpus: 1, memoryBytes: 64 * 1024 * 1024 },
    timeoutMs: 60_000,
  };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

export async function benchExecutors(): Promise<Record<string, unknown>> {
  const docker = new DockerExecutor({ nodeId: `bench-${process.pid}` });
  const avail = await docker.available();
  if (!avail.ok) throw new Error(avail.reason);
  await docker.cleanupLeftovers();
  const runOurs = async () => {
    const r = await docker.run(spec(), { policy, onEvent: () => {} });
    if (r.outcome !== 'exited' || r.exitCode !== 0) throw new Error(`executor run failed: ${r.reason}`);
  };
  // The same run through the engine API with no sandbox options, attach or stats: isolates what our executor adds.
  const runBareApi = async () => {
    const c = await docker.docker.createContainer({
      Image: IMAGE,
      Cmd: COMMAND,
      HostConfig: { NetworkMode: 'none' },
    });
    await c.start();
    await c.wait();
    await c.remove({ force: true });
  };
  const runCli = () =>
    execFileAsync('docker', ['run', '--rm', '--network', 'none', '--log-driver', 'none', IMAGE, ...COMMAND]);

  // Warm up both paths (image cache, engine, dockerode connection).
  for (let i = 0; i < 3; i++) {
    await runOurs();
    await runCli();
    await runBareApi();
  }
  const ours: number[] = [];
  const cli: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    ours.push(await timed(runOurs));
    cli.push(await timed(runCli));
    bare.push(await timed(runBareApi));
  }

  const parallelOurs = await timed(() => Promise.all(Array.from({ length: PARALLEL }, runOurs)));
  const parallelCli = await timed(() => Promise.all(Array.from({ length: PARALLEL }, runCli)));

  const wasm = await benchWasm();

  return {
    engineVersion: avail.version,
    runs: RUNS,
    dockerExecutorMsP50: round(percentile(ours, 50)),
    dockerExecutorMsP99: round(percentile(ours, 99)),
    dockerCliRunMsP50: round(percentile(cli, 50)),
    dockerCliRunMsP99: round(percentile(cli, 99)),
    bareApiRunMsP50: round(percentile(bare, 50)),
    bareApiRunMsP99: round(percentile(bare, 99)),
    /** vs the CLI, which also pays for starting the docker client process each time. */
    overheadVsCliMsP50: round(percentile(ours, 50) - percentile(cli, 50)),
    overheadVsCliMsP99: round(percentile(ours, 99) - percentile(cli, 99)),
    overheadVsBareApiMsP50: round(percentile(ours, 50) - percentile(bare, 50)),
    parallel: PARALLEL,
    executorParallelPerSec: round((PARALLEL / parallelOurs) * 1000),
    cliParallelPerSec: round((PARALLEL / parallelCli) * 1000),
    ...wasm,
  };
}

/** The WASM executor alone: no Docker needed. */
export async function benchWasm(): Promise<Record<string, unknown>> {
  const wasm = new WasmExecutor();
  let seqWasm = 0;
  /** One no-op task; resolves with [ms to 'started', ms to the end]. */
  const runOne = async (module: Uint8Array = EMPTY_WASI_MODULE): Promise<[number, number]> => {
    const t = performance.now();
    let startedAt = Number.NaN;
    const r = await wasm.run(
      {
        taskId: `bench-wasm-${++seqWasm}`,
        jobId: 'bench',
        attempt: 0,
        executor: 'wasm',
        wasm: { module },
        resources: { cpus: 1, memoryBytes: 16 * 1024 * 1024 },
        timeoutMs: 10_000,
      },
      {
        policy,
        onEvent: (e) => {
          if (e.type === 'started') startedAt = performance.now();
        },
      },
    );
    if (r.outcome !== 'exited') throw new Error(`wasm run failed: ${r.reason}`);
    return [startedAt - t, performance.now() - t];
  };
  try {
    const [coldStart] = await runOne(); // boots the first worker thread
    // Warm: as many workers as the parallel run will use, then the sequential latency on a warm pool.
    await Promise.all(Array.from({ length: WASM_PARALLEL }, runOne));
    const wasmStart: number[] = [];
    const wasmTotal: number[] = [];
    for (let i = 0; i < WASM_RUNS; i++) {
      const [start, total] = await runOne();
      wasmStart.push(start);
      wasmTotal.push(total);
    }
    /** `tasks` runs of `module`, WASM_PARALLEL at a time: tasks/s, CPU ms per task (all threads, main thread). */
    const throughput = async (tasks: number, module?: Uint8Array) => {
      let next = 0;
      const cpu = process.cpuUsage();
      const mainCpu = process.threadCpuUsage();
      const ms = await timed(() =>
        Promise.all(
          Array.from({ length: WASM_PARALLEL }, async () => {
            while (next++ < tasks) await runOne(module);
          }),
        ),
      );
      const all = process.cpuUsage(cpu);
      const main = process.threadCpuUsage(mainCpu);
      return {
        perSec: round((tasks / ms) * 1000),
        cpuMs: Math.round(((all.user + all.system) / 1000 / tasks) * 100) / 100,
        mainCpuMs: Math.round(((main.user + main.system) / 1000 / tasks) * 1000) / 1000,
      };
    };
    const small = await throughput(WASM_TASKS);
    const big = await wasmOf(
      `(module (memory (export "memory") 64) (data (i32.const 0) "${'a'.repeat(BIG_MODULE_DATA_BYTES)}")` +
        ' (func (export "_start")))',
    );
    await runOne(big); // compiled once, like the first task of a job
    const large = await throughput(BIG_MODULE_TASKS, big);
    return {
      wasmColdStartMs: round(coldStart),
      wasmStartMsP50: round(percentile(wasmStart, 50)),
      wasmRunMsP50: round(percentile(wasmTotal, 50)),
      wasmTasks: WASM_TASKS,
      wasmParallel: WASM_PARALLEL,
      wasmTasksPerSec: small.perSec,
      /** Process CPU (all threads: executor, workers, fs) per task during the parallel run. */
      wasmCpuMsPerTask: small.cpuMs,
      /** The executor's own thread (the daemon's main thread) per task: run(), fs work, messages, timers. */
      wasmMainThreadCpuMsPerTask: small.mainCpuMs,
      wasmWorkersCreated: wasm.poolStats.created,
      wasmLargeModuleBytes: big.byteLength,
      wasmLargeModuleTasksPerSec: large.perSec,
      wasmLargeModuleCpuMsPerTask: large.cpuMs,
      wasmLargeModuleMainThreadCpuMsPerTask: large.mainCpuMs,
    };
  } finally {
    await wasm.close();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const r = process.argv.includes('wasm') ? await benchWasm() : await benchExecutors();
  console.table(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, { value: v }])));
  console.log(JSON.stringify(r));
}
