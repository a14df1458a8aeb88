import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { z } from 'zod';
import { decode, encode, ProtocolError } from './codec.ts';
import {
  expandTasks,
  expandTasksFinished,
  foldableFinish,
  foldFinished,
  formatJobId,
  JOB_LIMITS,
  JobCommandSchema,
  type JobSpecInput,
  parseTaskId,
  taskCountOf,
  taskIdOf,
  utf8ByteLength,
  validateJobCommand,
  validateJobSpec,
  validateTasksFinished,
} from './job.ts';

const GiB = 1024 ** 3;

function spec(over: Partial<JobSpecInput> = {}): JobSpecInput {
  return {
    name: 'render',
    executor: 'docker',
    image: 'meshrun-test/busybox:1',
    command: ['sh', '-c', 'echo $i'],
    resources: { cpus: 1, memoryBytes: GiB },
    ...over,
  } as JobSpecInput;
}

function refused(raw: unknown, pattern: RegExp): void {
  assert.throws(
    () => validateJobSpec(raw),
    (err: unknown) => {
      assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${String(err)}`);
      assert.equal(err.code, 'INVALID');
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe('validateJobSpec', () => {
  it('fills in defaults', () => {
    const s = validateJobSpec(spec());
    assert.equal(s.timeoutMs, JOB_LIMITS.defaultTimeoutMs);
    assert.deepEqual(s.retry, {
      maxAttempts: JOB_LIMITS.defaultMaxAttempts,
      backoffMs: JOB_LIMITS.defaultBackoffMs,
    });
    assert.equal(s.priority, JOB_LIMITS.defaultPriority);
    assert.equal(s.count, 1);
    assert.equal(s.network, false);
    assert.deepEqual(s.env, {});
    assert.deepEqual(s.params, {});
    assert.deepEqual(s.constraints, {});
  });

  it('is idempotent: a validated spec validates to itself (commands are re-validated from the log)', () => {
    const s = validateJobSpec(spec({ params: { i: { from: 1, to: 4 } }, retry: { maxAttempts: 3 } }));
    assert.deepEqual(validateJobSpec(s), s);
    assert.deepEqual(
      decode(JobCommandSchema, encode({ type: 'submitJob', jobId: 'j1', spec: s, submitter: 'a', at: 1 }))
        .type,
      'submitJob',
    );
  });

  it('refuses an unknown executor', () =>
    refused(spec({ executor: 'lambda' as 'docker' }), /executor must be 'docker' or 'wasm'/));
  it('refuses negative memory', () =>
    refused(spec({ resources: { cpus: 1, memoryBytes: -1 } }), /resources\.memoryBytes/));
  it('refuses zero and too many cpus', () => {
    refused(spec({ resources: { cpus: 0, memoryBytes: 1 } }), /resources\.cpus/);
    refused(spec({ resources: { cpus: 2000, memoryBytes: 1 } }), /resources\.cpus/);
  });
  it('refuses a 10 MB env', () =>
    refused(spec({ env: { BIG: 'x'.repeat(10 * 1024 * 1024) } }), /env is .* limit is 64/));
  it('refuses too many env vars', () => {
    const env: Record<string, string> = {};
    for (let i = 0; i < 300; i++) env[`V${i}`] = '1';
    refused(spec({ env }), /env vars/);
  });
  it('refuses bad env names and reserved names', () => {
    refused(spec({ env: { 'not-valid': 'x' } }), /not a valid env name/);
    refused(spec({ params: { '1x': [1] } }), /params.1x: "1x" is not a valid env name/);
    refused(spec({ env: { MESHRUN_TASK_INDEX: '3' } }), /set by meshrun/);
  });
  it('refuses a 1,000,000-task sweep with a clear message', () =>
    refused(
      spec({ params: { i: { from: 1, to: 1000 }, j: { from: 1, to: 1000 } } }),
      /expands to 1,000,000 tasks; the limit is 10,000 tasks per job/,
    ));
  it('refuses sweeps whose size overflows', () =>
    refused(
      spec({ params: { i: { from: 0, to: 2 ** 52 }, j: { from: 0, to: 2 ** 52 } } }),
      /too many tasks/,
    ));
  it('refuses count × params over the limit', () =>
    refused(spec({ count: 200, params: { i: { from: 1, to: 100 } } }), /expands to 20,000 tasks/));
  it('refuses docker without image and wasm without module', () => {
    refused(spec({ image: undefined }), /docker jobs need an image/);
    refused({ ...spec({ executor: 'wasm' }), image: undefined }, /wasm jobs need a wasm module/);
    refused(spec({ executor: 'wasm', wasm: { sha256: 'a'.repeat(64) } }), /wasm jobs take no image/);
  });
  it('accepts a wasm module by hash or by bytes, and refuses bad ones', () => {
    const base = { ...spec({ executor: 'wasm' }), image: undefined };
    assert.equal(validateJobSpec({ ...base, wasm: { sha256: 'ab'.repeat(32) } }).executor, 'wasm');
    assert.equal(
      validateJobSpec({ ...base, wasm: { bytes: new Uint8Array([0, 97, 115, 109]) } }).executor,
      'wasm',
    );
    refused({ ...base, wasm: {} }, /bytes or its sha256/);
    refused({ ...base, wasm: { sha256: 'XYZ' } }, /64 lowercase hex/);
    refused({ ...base, wasm: { bytes: new Uint8Array(JOB_LIMITS.maxWasmModuleBytes + 1) } }, /larger than/);
  });
  it('refuses timeouts, retries and priorities out of range', () => {
    refused(spec({ timeoutMs: JOB_LIMITS.maxTimeoutMs + 1 }), /timeoutMs/);
    refused(spec({ retry: { maxAttempts: 11 } }), /retry\.maxAttempts/);
    refused(spec({ retry: { maxAttempts: 0 } }), /retry\.maxAttempts/);
    refused(spec({ priority: 101 }), /priority/);
    refused(spec({ priority: 1.5 }), /priority/);
  });
  it('refuses unknown fields (typos must not be silently ignored)', () =>
    refused({ ...spec(), imgae: 'x' }, /imgae|Unrecognized/));
  it('refuses a relative workdir and a GPU request for wasm', () => {
    refused(spec({ workdir: 'tmp' }), /absolute/);
    refused(
      {
        ...spec({ executor: 'wasm', wasm: { sha256: 'a'.repeat(64) } }),
        image: undefined,
        resources: { cpus: 1, memoryBytes: 1, gpus: { count: 1 } },
      },
      /cannot use GPUs/,
    );
  });

  it('never throws anything but ProtocolError on garbage', () => {
    fc.assert(
      fc.property(
        fc.anything({ withTypedArray: true, withBigInt: true, withMap: true, withSet: true }),
        (raw) => {
          try {
            validateJobSpec(raw);
          } catch (err) {
            assert.ok(err instanceof ProtocolError);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never throws anything but ProtocolError on mutated near-valid specs', () => {
    const field = fc.constantFrom(
      'name',
      'executor',
      'image',
      'command',
      'env',
      'resources',
      'constraints',
      'timeoutMs',
      'retry',
      'priority',
      'count',
      'params',
    );
    fc.assert(
      fc.property(field, fc.anything(), (key, value) => {
        try {
          const s = validateJobSpec({ ...spec(), [key]: value });
          assert.ok(taskCountOf(s) <= JOB_LIMITS.maxTasksPerJob);
        } catch (err) {
          assert.ok(err instanceof ProtocolError);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('expandTasks', () => {
  it('expands one task without params', () => {
    const tasks = expandTasks(validateJobSpec(spec({ env: { A: 'b' } })));
    assert.deepEqual(tasks, [{ index: 0, params: {}, env: { A: 'b', MESHRUN_TASK_INDEX: '0' } }]);
  });

  it('expands the cartesian product into env, last param fastest', () => {
    const tasks = expandTasks(
      validateJobSpec(spec({ params: { i: { from: 1, to: 3 }, mode: ['fast', 'slow'] } })),
    );
    assert.equal(tasks.length, 6);
    assert.deepEqual(
      tasks.map((t) => t.params),
      [
        { i: 1, mode: 'fast' },
        { i: 1, mode: 'slow' },
        { i: 2, mode: 'fast' },
        { i: 2, mode: 'slow' },
        { i: 3, mode: 'fast' },
        { i: 3, mode: 'slow' },
      ],
    );
    assert.deepEqual(tasks[3].env, { i: '2', mode: 'slow', MESHRUN_TASK_INDEX: '3' });
  });

  it('honours range steps and count replicas', () => {
    const tasks = expandTasks(
      validateJobSpec(spec({ count: 2, params: { i: { from: 0, to: 10, step: 5 } } })),
    );
    assert.deepEqual(
      tasks.map((t) => t.params.i),
      [0, 5, 10, 0, 5, 10],
    );
    assert.deepEqual(
      tasks.map((t) => t.index),
      [0, 1, 2, 3, 4, 5],
    );
  });

  it('expands the largest allowed sweep (10,000 tasks) and every combination is distinct', () => {
    const tasks = expandTasks(
      validateJobSpec(spec({ params: { i: { from: 1, to: 100 }, j: { from: 1, to: 100 } } })),
    );
    assert.equal(tasks.length, JOB_LIMITS.maxTasksPerJob);
    assert.equal(new Set(tasks.map((t) => `${t.params.i},${t.params.j}`)).size, JOB_LIMITS.maxTasksPerJob);
  });

  it('refuses a hand-built oversized spec', () => {
    const s = validateJobSpec(spec());
    assert.throws(() => expandTasks({ ...s, count: 20_000 }), ProtocolError);
  });

  it('matches taskCountOf for random small sweeps', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.dictionary(fc.constantFrom('a', 'b', 'c'), fc.array(fc.integer(), { minLength: 1, maxLength: 5 })),
        (count, params) => {
          const s = validateJobSpec(spec({ count, params }));
          assert.equal(expandTasks(s).length, taskCountOf(s));
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('ids', () => {
  it('formats sortable job ids and round-trips task ids', () => {
    const a = formatJobId(1_700_000_000_000, new Uint8Array(8).fill(1));
    const b = formatJobId(1_700_000_000_001, new Uint8Array(8).fill(0));
    assert.ok(a < b, 'later ids sort later');
    assert.match(a, /^j[0-9a-z]{9}-[0-9a-f]{16}$/);
    assert.deepEqual(parseTaskId(taskIdOf(a, 42)), { jobId: a, index: 42 });
    assert.equal(parseTaskId('nojob'), null);
    assert.throws(() => formatJobId(1, new Uint8Array(4)), ProtocolError);
  });

  it('counts UTF-8 bytes like Buffer does', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        assert.equal(utf8ByteLength(s), Buffer.byteLength(s, 'utf8'));
      }),
    );
  });
});

describe('job commands', () => {
  it('validates each command type and fills defaults', () => {
    const finished = validateJobCommand({
      type: 'taskFinished',
      taskId: 'j1/0',
      attempt: 1,
      outcome: 'failed',
      exitCode: 2,
      at: 5,
    });
    assert.equal(finished.type, 'taskFinished');
    if (finished.type === 'taskFinished') {
      assert.equal(finished.stdoutTail, '');
      assert.equal(finished.reason, null);
    }
    for (const cmd of [
      { type: 'assign', taskId: 'j1/0', nodeId: 'n1', attempt: 1, at: 1 },
      { type: 'taskStarted', taskId: 'j1/0', attempt: 1, at: 1 },
      { type: 'requeue', taskId: 'j1/0', attempt: 1, reason: 'node lost', at: 1 },
      { type: 'cancelJob', jobId: 'j1', by: 'alice', at: 1 },
      { type: 'setNodeMode', nodeId: 'n1', mode: 'draining', at: 1 },
    ]) {
      assert.equal(validateJobCommand(cmd).type, cmd.type);
    }
  });

  it('refuses bad commands', () => {
    const bad = [
      { type: 'explode' },
      { type: 'assign', taskId: 'j1/0', nodeId: 'n1', attempt: 0, at: 1 },
      { type: 'assign', taskId: 'no-slash', nodeId: 'n1', attempt: 1, at: 1 },
      { type: 'assign', taskId: 'j1/0', nodeId: 'n1', attempt: 11, at: 1 },
      { type: 'taskStarted', taskId: 'j1/0', attempt: 1, at: -1 },
      { type: 'taskFinished', taskId: 'j1/0', attempt: 1, outcome: 'meh', exitCode: 0, at: 1 },
      {
        type: 'taskFinished',
        taskId: 'j1/0',
        attempt: 1,
        outcome: 'failed',
        exitCode: 1,
        stdoutTail: 'x'.repeat(JOB_LIMITS.maxOutputTailBytes + 1),
        at: 1,
      },
      { type: 'setNodeMode', nodeId: 'n1', mode: 'asleep', at: 1 },
      { type: 'submitJob', jobId: 'has space', spec: spec(), submitter: 'a', at: 1 },
      { type: 'submitJob', jobId: 'j1', spec: spec({ priority: 1000 }), submitter: 'a', at: 1 },
    ];
    for (const cmd of bad)
      assert.throws(() => validateJobCommand(cmd), ProtocolError, JSON.stringify(cmd).slice(0, 80));
  });

  it('counts multi-byte output tails in bytes', () => {
    const tail = 'é'.repeat(JOB_LIMITS.maxOutputTailBytes / 2 + 1); // 2 bytes each: just over the limit
    assert.throws(
      () =>
        validateJobCommand({
          type: 'taskFinished',
          taskId: 'j/0',
          attempt: 1,
          outcome: 'failed',
          exitCode: 1,
          stdoutTail: tail,
          at: 1,
        }),
      /output tail/,
    );
  });

  it('never throws anything but ProtocolError on garbage commands', () => {
    const type = fc.constantFrom(
      'submitJob',
      'assign',
      'taskStarted',
      'taskFinished',
      'requeue',
      'cancelJob',
      'setNodeMode',
    );
    fc.assert(
      fc.property(type, fc.dictionary(fc.string(), fc.anything()), (t, rest) => {
        try {
          validateJobCommand({ ...rest, type: t });
        } catch (err) {
          assert.ok(err instanceof ProtocolError);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('folded finish reports (tasksFinished)', () => {
  const jobId = 'j0000000001-00000000000000aa';
  const plain = {
    type: 'taskFinished' as const,
    taskId: taskIdOf(jobId, 7),
    attempt: 2,
    outcome: 'succeeded' as const,
    exitCode: 0,
    usage: { wallMs: 3, cpuMs: 0.25, maxMemoryBytes: 65536 },
    at: 1_700_000_000_000,
  };

  it('folds only plain successes, and expands back to what validation of each report gives', () => {
    assert.deepEqual(foldableFinish(plain), { jobId, index: 7 });
    for (const not of [
      { ...plain, exitCode: 1 },
      { ...plain, outcome: 'failed' as const },
      { ...plain, reason: 'why' },
      { ...plain, stdoutTail: 'x' },
      { ...plain, stderrTail: 'x' },
      { ...plain, usage: { wallMs: 3 } },
      { ...plain, taskId: `${jobId}/${JOB_LIMITS.maxTasksPerJob}` },
      // Values its schema would refuse: folded, they would take the other reports down with them.
      { ...plain, usage: { ...plain.usage, cpuMs: Number.NaN } },
      { ...plain, usage: { ...plain.usage, wallMs: -1 } },
      { ...plain, usage: { ...plain.usage, maxMemoryBytes: 1.5 } },
      { ...plain, at: 1.5 },
      { ...plain, startedAt: -1 },
      { ...plain, attempt: 0 },
      { ...plain, attempt: JOB_LIMITS.maxAttempts + 1 },
      { ...plain, takeNext: JOB_LIMITS.maxTakeNext + 1 },
      { ...plain, taskId: `-bad/1` },
    ])
      assert.equal(foldableFinish(not), null, JSON.stringify(not));
    // What it accepts, the folded command's schema takes (fast-check: any numbers in any field).
    fc.assert(
      fc.property(
        fc.record({
          attempt: fc.oneof(fc.integer(), fc.double()),
          at: fc.oneof(fc.integer(), fc.double()),
          wallMs: fc.double(),
          cpuMs: fc.double(),
          maxMemoryBytes: fc.oneof(fc.integer(), fc.double()),
          takeNext: fc.oneof(fc.boolean(), fc.integer({ min: -2, max: 12 }), fc.constant(undefined)),
          startedAt: fc.oneof(fc.integer(), fc.constant(undefined)),
        }),
        (v) => {
          const r = {
            ...plain,
            attempt: v.attempt,
            at: v.at,
            usage: { wallMs: v.wallMs, cpuMs: v.cpuMs, maxMemoryBytes: v.maxMemoryBytes },
            ...(v.takeNext === undefined ? {} : { takeNext: v.takeNext }),
            ...(v.startedAt === undefined ? {} : { startedAt: v.startedAt }),
          };
          if (foldableFinish(r)) validateTasksFinished(foldFinished(jobId, [r]));
        },
      ),
      { numRuns: 500 },
    );
    assert.equal(foldableFinish({ type: 'taskStarted', taskId: plain.taskId, attempt: 1, at: 1 }), null);
    const reports = [
      plain,
      { ...plain, taskId: taskIdOf(jobId, 0), startedAt: plain.at - 5, takeNext: true },
      { ...plain, taskId: taskIdOf(jobId, 9), takeNext: JOB_LIMITS.maxTakeNext },
    ];
    const folded = validateTasksFinished(decode(z.any(), encode(foldFinished(jobId, reports))));
    assert.deepEqual(
      expandTasksFinished(folded),
      reports.map((r) => validateJobCommand(r)),
    );
  });

  it('never throws anything but ProtocolError on garbage or mutated folded reports', () => {
    const good = foldFinished(jobId, [plain, { ...plain, taskId: taskIdOf(jobId, 8) }]);
    fc.assert(
      fc.property(
        fc.constantFrom(...Object.keys(good)),
        fc.anything({ withTypedArray: true, withBigInt: true }),
        (key, value) => {
          try {
            const c = validateTasksFinished({ ...good, [key]: value });
            assert.equal(expandTasksFinished(c).length, c.index.length);
          } catch (err) {
            assert.ok(err instanceof ProtocolError);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
