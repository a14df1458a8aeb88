/** WASM executor with real modules compiled from the committed .wat sources (wabt's wat2wasm). */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { basePolicy, buildWat, recorder } from './test-support.ts';
import type { TaskSpec } from './types.ts';
import { WasmExecutor } from './wasm.ts';

const executor = new WasmExecutor();
let seq = 0;
function wasmSpec(name: string, extra: Partial<TaskSpec> = {}): TaskSpec {
  return {
    taskId: `wasm-test-${process.pid}-${++seq}`,
    jobId: 'job-test',
    attempt: 0,
    executor: 'wasm',
    wasm: { module: buildWat(name) },
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

  it('reads inputs from and writes outputs to the one preopened scratch dir, which is removed after', async () => {
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
    assert.deepEqual(await readdir(root), [], 'per-task temp dir removed');
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
