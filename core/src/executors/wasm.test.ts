/** WASM executor with real modules compiled from the committed .wat sources (wabt's wat2wasm). */
import assert from 'node:assert/strict';
import { closeSync, fstatSync, openSync, readdirSync, readlinkSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { basePolicy, buildWat, recorder } from './test-support.ts';
import type { TaskResult, TaskSpec } from './types.ts';
import { WasmExecutor } from './wasm.ts';

const executor = new WasmExecutor();
let seq = 0;
const built = new Map<string, Uint8Array>();
function wasmSpec(name: string, extra: Partial<TaskSpec> = {}): TaskSpec {
  if (!built.has(name)) built.set(name, buildWat(name));
  return {
    taskId: `wasm-test-${process.pid}-${++seq}`,
    jobId: 'job-test',
    attempt: 0,
    executor: 'wasm',
    wasm: { module: built.get(name)! },
    resources: { cpus: 1, memoryBytes: 16 * 1024 * 1024 },
    timeoutMs: 10_000,
    ...extra,
  };
}

describe('WasmExecutor', { concurrency: 4 }, () => {
  it('is available without any install', async () => {
    assert.equal((await executor.available()).ok, true);
  });

  it('prints to stdout and stderr, streamed as events after started', async () => {
    const rec = recorder();
    const r = await executor.run(wasmSpec('hello'), { policy: basePolicy, onEvent: rec.onEvent });
    assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(r.exitCode, 0);
    assert.equal(rec.text('stdout'), 'hello stdout\n');
    assert.equal(rec.text('stderr'), 'hello stderr\n');
    assert.equal(rec.events[0].type, 'started');
    assert.ok(r.usage.peakMemoryBytes >= 65536);
  });

  it('passes args, env and stdin, and the exit code', async () => {
    const rec = recorder();
    const r = await executor.run(
      wasmSpec('env-args', {
        args: ['first', 'with space'],
        env: { COLOR: 'blue' },
        stdin: Buffer.from('from stdin\n'),
      }),
      { policy: basePolicy, onEvent: rec.onEvent },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(r.exitCode, 7);
    const lines = rec.text('stdout').split('\n');
    assert.deepEqual(lines.slice(1), ['first', 'with space', 'COLOR=blue', 'from stdin', '']);
    assert.match(lines[0], /^wasm-test-/); // argv[0] is the task id
  });

  it('reads inputs from and writes outputs to the one preopened scratch dir, emptied after, removed by close()', async () => {
    const root = await mkdtemp(join(tmpdir(), 'meshrun-wasm-root-'));
    const own = new WasmExecutor({ tmpRoot: root });
    const r = await own.run(
      wasmSpec('write-file', {
        inputs: [{ path: 'in.txt', content: Buffer.from('payload') }],
        outputs: ['out.txt'],
      }),
      { policy: basePolicy, onEvent: () => {} },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(r.exitCode, 0);
    assert.deepEqual(
      r.outputs?.map((f) => [f.path, Buffer.from(f.content).toString()]),
      [['out.txt', 'got:payload']],
    );
    const dirs = await readdir(root);
    assert.equal(dirs.length, 1, "the one worker's temp dir");
    assert.match(dirs[0], new RegExp(`^meshrun-wasm-${process.pid}-`));
    assert.deepEqual(await readdir(join(root, dirs[0])), ['scratch'], 'no stdin file left');
    assert.deepEqual(await readdir(join(root, dirs[0], 'scratch')), [], 'scratch emptied after the task');
    await own.close();
    assert.deepEqual(await readdir(root), [], 'close() removes the worker dirs');
    await rm(root, { recursive: true });
  });

  it('kills a module that loops forever at the timeout', async () => {
    const rec = recorder();
    const started = Date.now();
    const r = await executor.run(wasmSpec('loop', { timeoutMs: 400 }), {
      policy: basePolicy,
      onEvent: rec.onEvent,
    });
    assert.equal(r.outcome, 'timeout', r.reason);
    assert.equal(rec.text('stdout'), 'tick\n', 'output before the loop was streamed');
    assert.ok(Date.now() - started < 5000);
  });

  it('times out a module whose start function never returns, as a run that started at dispatch', {
    timeout: 20_000,
  }, async () => {
    const rec = recorder();
    const dispatched = Date.now();
    const r = await executor.run(wasmSpec('start-loop', { timeoutMs: 300 }), {
      policy: basePolicy,
      onEvent: rec.onEvent,
    });
    assert.equal(r.outcome, 'timeout', r.reason);
    assert.match(r.reason, /exceeded 300 ms/);
    assert.equal(rec.events.filter((e) => e.type === 'started').length, 1, 'one started event');
    assert.ok(r.startedAt !== undefined && r.startedAt >= dispatched, 'the record shows when it began');
    assert.ok(r.endedAt - r.startedAt! >= 300, `ended ${r.endedAt - r.startedAt!} ms after its start`);
    // The worker it held is gone; the next task runs on a fresh one.
    const next = await executor.run(wasmSpec('noop'), { policy: basePolicy, onEvent: () => {} });
    assert.equal(next.outcome, 'exited', next.reason);
  });

  it('cancels through the AbortSignal', async () => {
    const ac = new AbortController();
    const r = await executor.run(wasmSpec('loop'), {
      policy: basePolicy,
      signal: ac.signal,
      onEvent: (e) => {
        if (e.type === 'output') ac.abort();
      },
    });
    assert.equal(r.outcome, 'cancelled', r.reason);
    assert.ok(r.endedAt - r.startedAt! < 3000);
  });

  it('ends a module that allocates past its cap as oom', async () => {
    const r = await executor.run(
      wasmSpec('alloc', { resources: { cpus: 1, memoryBytes: 8 * 1024 * 1024 } }),
      {
        policy: basePolicy,
        onEvent: () => {},
      },
    );
    assert.equal(r.outcome, 'oom', r.reason);
    assert.equal(r.usage.peakMemoryBytes, 8 * 1024 * 1024);
  });

  it('stops a module that writes past the output cap', async () => {
    const capped = new WasmExecutor({ maxOutputBytes: 256 * 1024 });
    let bytes = 0;
    const r = await capped.run(wasmSpec('flood', { timeoutMs: 10_000 }), {
      policy: basePolicy,
      onEvent: (e) => {
        if (e.type === 'output') bytes += e.data.byteLength;
      },
    });
    assert.equal(r.outcome, 'error', r.reason);
    assert.match(r.reason, /output limit/);
    assert.ok(bytes <= 256 * 1024, `${bytes} bytes streamed`);
  });

  it('stops a module that fills its scratch dir past the quota', async () => {
    const r = await executor.run(wasmSpec('flood', { args: ['to-file'], timeoutMs: 10_000 }), {
      policy: { ...basePolicy, scratchBytes: 2 * 1024 * 1024 },
      onEvent: () => {},
    });
    assert.equal(r.outcome, 'error', r.reason);
    assert.match(r.reason, /scratch quota/);
  });

  it('refuses invalid modules, network, GPUs and executors the policy forbids', async () => {
    const garbage = { ...wasmSpec('hello'), wasm: { module: new Uint8Array([1, 2, 3]) } };
    const cases: [TaskSpec, RegExp, typeof basePolicy][] = [
      [garbage, /invalid module/, basePolicy],
      [
        wasmSpec('hello', { network: true }),
        /wasm tasks have no network/,
        { ...basePolicy, allowNetwork: true },
      ],
      [wasmSpec('hello'), /not allowed/, { ...basePolicy, allowedExecutors: ['docker'] }],
      [
        wasmSpec('hello', { resources: { cpus: 1, memoryBytes: 1 << 20, gpus: { count: 1 } } }),
        /GPUs/,
        { ...basePolicy, allowGpu: true },
      ],
    ];
    for (const [spec, pattern, policy] of cases) {
      const r = await executor.run(spec, { policy, onEvent: () => {} });
      assert.equal(r.outcome, 'refused');
      assert.match(r.reason, pattern);
    }
  });
});

/** Resolves once cond() holds (checked every 5 ms). */
/** Starts `spec` and waits until it has started; the result is the run's own (pending) promise. */
async function startedRun(ex: WasmExecutor, spec: TaskSpec): Promise<{ result: Promise<TaskResult> }> {
  const started = Promise.withResolvers<void>();
  const result = ex.run(spec, {
    policy: basePolicy,
    onEvent: (e) => {
      if (e.type === 'started') started.resolve();
    },
  });
  await started.promise;
  return { result };
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

/** Runs the leak probe with one byte of stdin; it echoes the byte and exits with its value. */
async function probe(ex: WasmExecutor, byte: string, extra: Partial<TaskSpec> = {}) {
  const rec = recorder();
  const r = await ex.run(wasmSpec('leak-probe', { stdin: Buffer.from(byte), ...extra }), {
    policy: basePolicy,
    onEvent: rec.onEvent,
  });
  return { r, stdout: rec.text('stdout'), events: rec.events };
}

/** This process's descriptors that point under dir (Linux /proc; null elsewhere). */
function descriptorsUnder(dir: string): string[] | null {
  let names: string[];
  try {
    names = readdirSync('/proc/self/fd');
  } catch {
    return null;
  }
  const found: string[] = [];
  for (const n of names) {
    try {
      const target = readlinkSync(`/proc/self/fd/${n}`);
      if (target.startsWith(`${dir}/`)) found.push(target);
    } catch {}
  }
  return found;
}

describe('WasmExecutor worker pool', { concurrency: 2 }, () => {
  it('reuses warm workers for sequential and concurrent tasks, each with its own output and exit code', async (t) => {
    const ex = new WasmExecutor();
    t.after(() => ex.close());
    for (let i = 0; i < 20; i++) {
      const byte = String.fromCharCode(65 + i); // A, B, ...
      const { r, stdout, events } = await probe(ex, byte);
      assert.equal(r.outcome, 'exited', r.reason);
      assert.equal(r.exitCode, byte.charCodeAt(0));
      assert.equal(stdout, byte);
      assert.equal(events[0].type, 'started');
    }
    assert.equal(ex.poolStats.created, 1, 'one worker ran 20 sequential tasks');
    for (let round = 0; round < 3; round++) {
      const bytes = Array.from({ length: 8 }, (_, i) => String.fromCharCode(97 + round * 8 + i)); // a, b, ...
      const runs = await Promise.all(bytes.map((b) => probe(ex, b)));
      runs.forEach(({ r, stdout }, i) => {
        assert.equal(r.outcome, 'exited', r.reason);
        assert.equal(r.exitCode, bytes[i].charCodeAt(0), 'its own exit code');
        assert.equal(stdout, bytes[i], 'its own output');
      });
    }
    const stats = ex.poolStats;
    assert.equal(stats.tasks, 44);
    assert.ok(stats.created <= 8, `${stats.created} workers for 44 tasks, at most 8 at once`);
    assert.equal(stats.discarded, 0);
    assert.equal(stats.busy, 0);
    assert.ok(stats.idle >= 1 && stats.idle <= 8);
  });

  it('does not let a killed task (timeout, cancel, output limit) poison the next one', async (t) => {
    const ex = new WasmExecutor({ maxOutputBytes: 64 * 1024 });
    t.after(() => ex.close());
    await probe(ex, 'W'); // a warm worker is there to be killed
    const timedOut = await ex.run(wasmSpec('loop', { timeoutMs: 300 }), {
      policy: basePolicy,
      onEvent: () => {},
    });
    assert.equal(timedOut.outcome, 'timeout', timedOut.reason);
    assert.ok(timedOut.usage.cpuMs < 5000);
    const ac = new AbortController();
    const cancelled = await ex.run(wasmSpec('loop'), {
      policy: basePolicy,
      signal: ac.signal,
      onEvent: (e) => {
        if (e.type === 'started') ac.abort();
      },
    });
    assert.equal(cancelled.outcome, 'cancelled', cancelled.reason);
    const flooded = await ex.run(wasmSpec('flood'), { policy: basePolicy, onEvent: () => {} });
    assert.match(flooded.reason, /output limit/);
    assert.equal(ex.poolStats.discarded, 3, 'every killed worker was terminated');
    for (const byte of ['X', 'Y']) {
      const { r, stdout } = await probe(ex, byte);
      assert.equal(r.outcome, 'exited', r.reason);
      assert.equal(r.exitCode, byte.charCodeAt(0));
      assert.equal(stdout, byte, 'no output of an earlier task');
    }
    assert.equal(ex.poolStats.discarded, 3);
    assert.equal(ex.poolStats.busy, 0);
  });

  it('gives every task a fresh instance, zeroed memory and its own empty /scratch', async (t) => {
    const ex = new WasmExecutor({ idleWorkers: 1 });
    t.after(() => ex.close());
    // Each run writes 0xdead at address 1024, sets a global and creates /scratch/leak.txt; exit 3 or 4
    // would mean it found them from the run before.
    for (const byte of ['a', 'b', 'c']) {
      const { r } = await probe(ex, byte);
      assert.equal(r.outcome, 'exited', r.reason);
      assert.equal(r.exitCode, byte.charCodeAt(0), r.reason);
    }
    assert.equal(ex.poolStats.created, 1, 'all three ran in the same worker');
    // The probe does notice a leaked file.
    const seeded = await probe(ex, 'd', { inputs: [{ path: 'leak.txt', content: Buffer.from('old') }] });
    assert.equal(seeded.r.exitCode, 4);
  });

  it('closes every descriptor a task held, also when its worker was killed or the module did not link', async (t) => {
    const tmpRoot = await mkdtemp(join(tmpdir(), 'meshrun-wasm-fds-'));
    const ex = new WasmExecutor({ tmpRoot });
    t.after(async () => {
      await ex.close();
      await rm(tmpRoot, { recursive: true, force: true });
    });
    if (descriptorsUnder(tmpRoot) === null) return t.skip('no /proc/self/fd');
    for (const byte of ['a', 'b', 'c']) assert.equal((await probe(ex, byte)).r.outcome, 'exited'); // leaves leak.txt open
    const linkError = await ex.run(wasmSpec('link-error'), { policy: basePolicy, onEvent: () => {} });
    assert.equal(linkError.outcome, 'error');
    assert.match(linkError.reason, /worker failed: .*not_provided|worker failed: .*import/i);
    assert.equal(ex.poolStats.discarded, 0, 'a module that does not link does not cost the worker');
    const r = await ex.run(wasmSpec('loop', { timeoutMs: 200 }), { policy: basePolicy, onEvent: () => {} });
    assert.equal(r.outcome, 'timeout');
    assert.deepEqual(descriptorsUnder(tmpRoot), []);
    assert.deepEqual(await readdir(tmpRoot), [], "the killed worker's dir was removed with it");
    assert.equal((await probe(ex, 'd', { stdin: Buffer.from('d') })).r.exitCode, 'd'.charCodeAt(0));
    await ex.close();
    assert.deepEqual(descriptorsUnder(tmpRoot), [], 'no stdin file descriptor left');
    assert.deepEqual(await readdir(tmpRoot), [], 'close() removes the worker dirs');
  });

  it('never shows a task what an earlier one left in /scratch or on its stdio, and reuses an untouched scratch dir', async (t) => {
    const tmpRoot = await mkdtemp(join(tmpdir(), 'meshrun-wasm-scratch-'));
    const ex = new WasmExecutor({ tmpRoot, idleWorkers: 1 });
    t.after(async () => {
      await ex.close();
      await rm(tmpRoot, { recursive: true, force: true });
    });
    const run = (mode: string, extra: Partial<TaskSpec> = {}, opts: { signal?: AbortSignal } = {}) =>
      ex.run(wasmSpec('scratch-probe', { args: [mode], ...extra }), {
        policy: basePolicy,
        onEvent: () => {},
        ...opts,
      });
    const clean = async (after: string) => {
      const r = await run('c');
      assert.equal(r.outcome, 'exited', r.reason);
      assert.equal(r.exitCode, 0, `exit ${r.exitCode}: something was left after ${after}`);
    };
    assert.equal((await run('n')).exitCode, 0);
    const dirs = await readdir(tmpRoot);
    assert.equal(dirs.length, 1);
    // A removed dir's open descriptor reports 0 links: that tells whether the scratch dir was recreated.
    const scratchFd = openSync(join(tmpRoot, dirs[0], 'scratch'), 'r');
    try {
      for (let i = 0; i < 3; i++) assert.equal((await run('n')).exitCode, 0);
      assert.equal(fstatSync(scratchFd).nlink, 2, 'an untouched scratch dir is reused as it is');
      const littered = await run('l'); // a subdir, files (one left open), symlinks
      assert.equal(littered.exitCode, 0, littered.reason);
      assert.equal(fstatSync(scratchFd).nlink, 0, 'a touched one is recreated');
    } finally {
      closeSync(scratchFd);
    }
    await clean('a task that wrote files, a subdir and symlinks');
    const trapped = await run('t');
    assert.match(trapped.reason, /^trap: .*unreachable/);
    await clean('a task that wrote and trapped');
    assert.equal(
      (await run('c', { inputs: [{ path: 'in/put.txt', content: Buffer.from('x') }] })).exitCode,
      4,
    );
    await clean('a task with inputs');
    assert.equal((await run('f')).exitCode, 0);
    await clean('a task that put its stdin (/dev/null) in append mode');
    assert.equal(ex.poolStats.created, 1, 'all of that in one worker');
    // Killed mid-run, right after littering: that worker and its dir are gone.
    const ac = new AbortController();
    const killed = ex.run(wasmSpec('scratch-probe', { args: ['k'] }), {
      policy: basePolicy,
      signal: ac.signal,
      onEvent: (e) => {
        if (e.type === 'output') ac.abort();
      },
    });
    assert.equal((await killed).outcome, 'cancelled');
    await clean('a task killed mid-run');
    assert.equal(ex.poolStats.discarded, 1);
    assert.equal((await readdir(tmpRoot)).length, 1, "the killed worker's dir was removed");
    const timedOut = await run('k', { timeoutMs: 200 });
    assert.equal(timedOut.outcome, 'timeout');
    await clean('a task that timed out');
    await ex.close();
    assert.deepEqual(await readdir(tmpRoot), [], 'close() removes the worker dirs');
  });

  it('ends a task whose worker close() stopped while its inputs were written, and fails without a temp dir', async (t) => {
    const ex = new WasmExecutor();
    t.after(() => ex.close());
    const warm = await ex.run(wasmSpec('hello'), { policy: basePolicy, onEvent: () => {} });
    assert.equal(warm.outcome, 'exited'); // a warm worker and a compiled module: handed out at once
    const big = { path: 'big.bin', content: new Uint8Array(8 * 1024 * 1024) };
    const running = ex.run(wasmSpec('hello', { inputs: [big] }), { policy: basePolicy, onEvent: () => {} });
    await new Promise((r) => setImmediate(r));
    await ex.close();
    const r = await running;
    assert.equal(r.outcome, 'cancelled', r.reason);
    assert.match(r.reason, /closed/);
    assert.deepEqual([ex.poolStats.idle, ex.poolStats.busy], [0, 0]);
    const nowhere = new WasmExecutor({ tmpRoot: join(tmpdir(), `meshrun-wasm-missing-${process.pid}`, 'x') });
    const failed = await nowhere.run(wasmSpec('hello'), { policy: basePolicy, onEvent: () => {} });
    assert.equal(failed.outcome, 'error');
    assert.match(failed.reason, /temp dir.*ENOENT/);
  });

  it('keeps the memory cap, oom and trap outcomes, with usage counted per task', async (t) => {
    const ex = new WasmExecutor({ idleWorkers: 1 });
    t.after(() => ex.close());
    const alloc = (mib: number) =>
      ex.run(wasmSpec('alloc', { resources: { cpus: 1, memoryBytes: mib * 1024 * 1024 } }), {
        policy: basePolicy,
        onEvent: () => {},
      });
    const big = await alloc(8);
    assert.equal(big.outcome, 'oom', big.reason);
    assert.equal(big.usage.peakMemoryBytes, 8 * 1024 * 1024);
    // Same module bytes, smaller cap: the compiled-module cache must not hand back the 8 MiB one.
    const small = await alloc(4);
    assert.equal(small.outcome, 'oom', small.reason);
    assert.equal(small.usage.peakMemoryBytes, 4 * 1024 * 1024);
    const rec = recorder();
    const trapped = await ex.run(wasmSpec('trap'), { policy: basePolicy, onEvent: rec.onEvent });
    assert.equal(trapped.outcome, 'error', trapped.reason);
    assert.match(trapped.reason, /^trap: .*unreachable/);
    assert.equal(rec.text('stdout'), 'before trap\n');
    const spin = await ex.run(wasmSpec('spin'), { policy: basePolicy, onEvent: () => {} });
    assert.equal(spin.outcome, 'exited', spin.reason);
    const hello = await ex.run(wasmSpec('hello'), { policy: basePolicy, onEvent: () => {} });
    assert.equal(hello.outcome, 'exited', hello.reason);
    assert.equal(hello.usage.peakMemoryBytes, 65536, 'its own memory, not the earlier tasks');
    assert.ok(spin.usage.cpuMs >= 20, `spin used ${spin.usage.cpuMs} ms`);
    assert.ok(
      hello.usage.cpuMs < spin.usage.cpuMs / 2,
      `hello ${hello.usage.cpuMs} ms vs ${spin.usage.cpuMs}`,
    );
    const stats = ex.poolStats;
    assert.equal(stats.created, 1, 'oom and traps do not cost the worker');
    assert.equal(stats.discarded, 0);
  });

  it('runs short tasks 16 at a time on a few workers: a task waits for a busy worker rather than start one', async (t) => {
    // Up to two workers are started for waiting tasks (eagerWorkers), more only when for two looks in a row
    // (spawnAfterMs apart) every worker ran the same task. A no-op task takes well under a millisecond, but on a
    // loaded two-core machine GC or the OS scheduler can hold every worker that long now and then: each such
    // moment may add one worker. Hence "at most 4", not "exactly 2".
    const ex = new WasmExecutor({ eagerWorkers: 2 });
    t.after(() => ex.close());
    let next = 0;
    const outcomes = new Set<string>();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next++ < 320) {
          const r = await ex.run(wasmSpec('noop'), { policy: basePolicy, onEvent: () => {} });
          outcomes.add(`${r.outcome} ${r.exitCode}`);
        }
      }),
    );
    assert.deepEqual([...outcomes], ['exited 0']);
    const stats = ex.poolStats;
    assert.equal(stats.tasks, 320);
    assert.ok(
      stats.created >= 1 && stats.created <= 4,
      `${stats.created} workers for 16 no-op tasks at once`,
    );
    assert.equal(stats.waiting, 0);
  });

  it('still runs long tasks all at once: 8 sleeping tasks each get a worker, all started before any ended', async (t) => {
    const ex = new WasmExecutor({ eagerWorkers: 2 });
    t.after(() => ex.close());
    const started: number[] = [];
    const ended: number[] = [];
    const results = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const r = await ex.run(wasmSpec('sleep'), {
          policy: basePolicy,
          onEvent: (e) => {
            if (e.type === 'started') started.push(performance.now());
          },
        });
        ended.push(performance.now());
        return r;
      }),
    );
    for (const r of results) assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(started.length, 8);
    assert.ok(
      Math.max(...started) < Math.min(...ended),
      `last start ${Math.round(Math.max(...started) - Math.min(...started))} ms after the first`,
    );
    assert.equal(ex.poolStats.created, 8);
  });

  it('queues a task while every worker is busy: the wait does not count against its timeout, cancel and close() end it', async (t) => {
    // One worker, and no other started while it sleeps (the waiting tasks are checked once a minute).
    const ex = new WasmExecutor({ eagerWorkers: 1, spawnAfterMs: 60_000 });
    t.after(() => ex.close());
    const sleeping = await startedRun(ex, wasmSpec('sleep'));
    const queued = ex.run(wasmSpec('noop', { timeoutMs: 300 }), { policy: basePolicy, onEvent: () => {} });
    const ac = new AbortController();
    const cancelledEvents: string[] = [];
    const cancelled = ex.run(wasmSpec('noop'), {
      policy: basePolicy,
      signal: ac.signal,
      onEvent: (e) => cancelledEvents.push(e.type),
    });
    await until(() => ex.poolStats.waiting === 2);
    ac.abort();
    const c = await cancelled;
    assert.equal(c.outcome, 'cancelled', c.reason);
    assert.match(c.reason, /before start/);
    assert.deepEqual(cancelledEvents, [], 'it never started');
    assert.equal(ex.poolStats.waiting, 1);
    assert.equal((await sleeping.result).outcome, 'exited');
    const q = await queued;
    assert.equal(q.outcome, 'exited', `waited ~1 s with a 300 ms timeout: ${q.reason}`);
    assert.deepEqual([ex.poolStats.created, ex.poolStats.tasks, ex.poolStats.discarded], [1, 2, 0]);

    const running = await startedRun(ex, wasmSpec('sleep'));
    const waiting = ex.run(wasmSpec('noop'), { policy: basePolicy, onEvent: () => {} });
    await until(() => ex.poolStats.waiting === 1);
    await ex.close();
    for (const r of [await waiting, await running.result]) {
      assert.equal(r.outcome, 'cancelled', r.reason);
      assert.match(r.reason, /closed/);
    }
    assert.deepEqual([ex.poolStats.idle, ex.poolStats.busy, ex.poolStats.waiting], [0, 0, 0]);
    assert.equal(
      (await ex.run(wasmSpec('noop'), { policy: basePolicy, onEvent: () => {} })).outcome,
      'exited',
    );
  });

  it('posts a compiled module to a worker once, and keeps only a few: tasks cycling through more still run their own', async (t) => {
    const ex = new WasmExecutor({ idleWorkers: 1 });
    t.after(() => ex.close());
    const expected: [string, Partial<TaskSpec>, string, number | null][] = [
      ['hello', {}, 'exited', 0],
      ['noop', {}, 'exited', 0],
      ['env-args', {}, 'exited', 7],
      ['trap', {}, 'error', null],
      ['leak-probe', { stdin: Buffer.from('L') }, 'exited', 'L'.charCodeAt(0)],
      ['scratch-probe', { args: ['n'] }, 'exited', 0],
    ];
    for (let round = 0; round < 3; round++) {
      for (const [name, extra, outcome, exitCode] of expected) {
        const r = await ex.run(wasmSpec(name, extra), { policy: basePolicy, onEvent: () => {} });
        assert.equal(r.outcome, outcome, `${name}, round ${round}: ${r.reason}`);
        assert.equal(r.exitCode, exitCode, `${name}, round ${round}`);
      }
    }
    assert.equal(ex.poolStats.created, 1, 'all in one worker');
  });

  it('lets idle workers exit after idleWorkerMs, and close() ends running tasks', async (t) => {
    const ex = new WasmExecutor({ idleWorkerMs: 100 });
    t.after(() => ex.close());
    assert.equal((await probe(ex, 'a')).r.outcome, 'exited');
    assert.equal(ex.poolStats.idle, 1);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(ex.poolStats.idle, 0);
    assert.equal(ex.poolStats.retired, 1);
    const running = ex.run(wasmSpec('loop'), {
      policy: basePolicy,
      onEvent: (e) => {
        if (e.type === 'output') void ex.close();
      },
    });
    const r = await running;
    assert.equal(r.outcome, 'cancelled', r.reason);
    assert.match(r.reason, /closed/);
    assert.deepEqual([ex.poolStats.idle, ex.poolStats.busy], [0, 0]);
    const after = await probe(ex, 'z');
    assert.equal(after.r.exitCode, 'z'.charCodeAt(0), 'usable again after close');
  });
});
