// Group commit of node-generated job commands: the batcher (pure, with a fake proposer) and the replicated
// state machine's apply of a batch entry (the same code every node runs).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decode,
  encode,
  expandTasksFinished,
  foldFinished,
  type TaskFinishedInput,
  taskIdOf,
  validateJobSpec,
  validateTasksFinished,
} from '@meshrun/protocol';
import { z } from 'zod';
import { JobStateMachine } from '../jobs/state-machine.ts';
import { JobLogStateMachine } from './cluster-service.ts';
import { BATCH_LIMITS, CommandBatcher } from './command-batcher.ts';

describe('CommandBatcher', () => {
  it('sends the first command alone, groups those that arrive while it is in flight, answers each caller', async () => {
    const proposed: number[][] = [];
    let release: (() => void) | null = null;
    const batcher = new CommandBatcher<number>(async (encoded) => {
      const values = encoded.map((b) => decode(z.number(), b));
      proposed.push(values);
      if (proposed.length === 1) await new Promise<void>((r) => (release = r));
      return values.map((v) => v * 10);
    });
    const first = batcher.submit(1);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(proposed, [[1]]);
    const rest = [2, 3, 4].map((v) => batcher.submit(v));
    await new Promise((r) => setImmediate(r));
    assert.equal(proposed.length, 1, 'nothing else is proposed while a batch is in flight');
    assert.equal(batcher.queued, 3);
    release!();
    assert.equal(await first, 10);
    assert.deepEqual(await Promise.all(rest), [20, 30, 40]);
    assert.deepEqual(proposed, [[1], [2, 3, 4]]);
    assert.deepEqual(batcher.stats, { batches: 2, commands: 4 });
  });

  it('splits by count and bytes, and a failed batch fails only its own callers', async () => {
    const sizes: number[] = [];
    let failFirst: ((e: Error) => void) | null = null;
    const batcher = new CommandBatcher<string>(async (encoded) => {
      sizes.push(encoded.length);
      if (sizes.length === 1) await new Promise<void>((_, reject) => (failFirst = reject));
      return encoded.map(() => 'ok');
    });
    const doomed = batcher.submit('x');
    await new Promise((r) => setImmediate(r));
    const many = Array.from({ length: BATCH_LIMITS.maxCommands + 5 }, () => batcher.submit('y'));
    const big = 'z'.repeat(BATCH_LIMITS.maxBytes / 2);
    const bigOnes = [batcher.submit(big), batcher.submit(big), batcher.submit(big)];
    failFirst!(new Error('no leader'));
    await assert.rejects(doomed, /no leader/);
    assert.ok((await Promise.all(many)).every((r) => r === 'ok'));
    assert.ok((await Promise.all(bigOnes)).every((r) => r === 'ok'));
    assert.equal(sizes[0], 1);
    assert.equal(sizes[1], BATCH_LIMITS.maxCommands, 'a batch holds at most maxCommands');
    assert.ok(
      sizes.slice(2).every((n) => n <= 2 || n === 5 + 1),
      `batches ${sizes}`,
    );
    assert.equal(
      sizes.reduce((a, b) => a + b, 0),
      1 + BATCH_LIMITS.maxCommands + 5 + 3,
    );
  });
});

describe('batch entries in the replicated job log', () => {
  const spec = validateJobSpec({
    name: 'b',
    executor: 'docker',
    image: 'busybox',
    command: ['true'],
    resources: { cpus: 1, memoryBytes: 1_000_000 },
    count: 3,
  });
  const jobId = 'j0000000001-00000000000000aa';

  it('applies each command in order with its own result; origin-bound commands are refused inside a batch', () => {
    const sm = new JobLogStateMachine(new JobStateMachine());
    const at = Date.now();
    assert.equal(sm.apply(encode({ type: 'submitJob', jobId, spec, submitter: 'peer:x', at })).ok, true);
    const applied: string[] = [];
    sm.applied.on('applied', (cmd: { type: string }) => applied.push(cmd.type));
    const assign = (i: number, attempt = 1) => ({
      type: 'assign',
      taskId: taskIdOf(jobId, i),
      nodeId: 'node-a',
      attempt,
      at,
    });
    const result = sm.apply(
      encode({
        batch: [
          encode(assign(0)),
          encode(assign(1)),
          encode(assign(0, 1)), // stale: task 0 is no longer queued
          encode({ type: 'cancelJob', jobId, by: 'peer:x', at }), // needs a signed origin
          new Uint8Array([0xff]), // not CBOR
          encode({ type: 'taskStarted', taskId: taskIdOf(jobId, 1), attempt: 1, at }),
        ],
      }),
    ) as { ok: true; batch: { ok: boolean; error?: string }[] };
    assert.equal(result.ok, true);
    assert.deepEqual(
      result.batch.map((r) => r.ok),
      [true, true, false, false, false, true],
    );
    assert.match(result.batch[3]!.error!, /cannot be batched/);
    assert.deepEqual(applied, ['assign', 'assign', 'assign', 'taskStarted']);
    const job = sm.machine.job(jobId)!;
    assert.equal(job.state, 'running');
    assert.equal(sm.machine.taskRunSpec(taskIdOf(jobId, 2))?.attempt, 0, 'task 2 untouched');
    // Malformed batch entries are refused whole, and change nothing.
    for (const bad of [{ batch: [] }, { batch: ['x'] }, { batch: [encode(assign(2))], extra: 1 }]) {
      const r = sm.apply(encode(bad)) as { ok: boolean };
      assert.equal(r.ok, false);
    }
    assert.equal(
      sm.apply(
        encode({ batch: Array.from({ length: BATCH_LIMITS.maxCommands + 1 }, () => encode(assign(2))) }),
      ).ok,
      false,
    );
    assert.notEqual(sm.machine.tasksOnNode('node-a').length, 3, 'the oversized batch applied nothing');
    // A finished report that absorbed its start: the attempt gets both times, from 'assigned' directly.
    assert.equal(sm.apply(encode({ batch: [encode(assign(2))] })).ok, true);
    const fin = {
      type: 'taskFinished',
      taskId: taskIdOf(jobId, 2),
      attempt: 1,
      outcome: 'succeeded',
      exitCode: 0,
      startedAt: at + 1,
      at: at + 2,
    };
    const r = sm.apply(encode({ batch: [encode(fin)] })) as { ok: true; batch: { ok: boolean }[] };
    assert.equal(r.batch[0]!.ok, true);
    const attempt = sm.machine.task(taskIdOf(jobId, 2))!.attempts[0]!;
    assert.equal(attempt.startedAt, at + 1);
    assert.equal(attempt.endedAt, at + 2);
  });
});

describe('CommandBatcher folding a start into its end', () => {
  it('a taskFinished absorbs the queued taskStarted of the same attempt (not another attempt, not one in flight)', async () => {
    const proposed: { type: string; taskId: string; attempt: number; startedAt?: number }[][] = [];
    let release: (() => void) | null = null;
    const batcher = new CommandBatcher<string>(async (encoded) => {
      const cmds = encoded.map((b) => decode(z.any(), b));
      proposed.push(cmds);
      if (proposed.length === 1) await new Promise<void>((r) => (release = r));
      return cmds.map((c) => `${c.type}:${c.taskId}`);
    });
    const t = (i: number) => taskIdOf('j0000000001-00000000000000aa', i);
    const inFlightStart = batcher.submit({ type: 'taskStarted', taskId: t(0), attempt: 1, at: 100 });
    await new Promise((r) => setImmediate(r));
    const start1 = batcher.submit({ type: 'taskStarted', taskId: t(1), attempt: 1, at: 200 });
    const start2 = batcher.submit({ type: 'taskStarted', taskId: t(2), attempt: 1, at: 300 });
    const end0 = batcher.submit({ type: 'taskFinished', taskId: t(0), attempt: 1, at: 150 });
    const end1 = batcher.submit({ type: 'taskFinished', taskId: t(1), attempt: 1, at: 250 });
    const end2other = batcher.submit({ type: 'taskFinished', taskId: t(2), attempt: 2, at: 350 });
    assert.equal(batcher.queued, 4, 'start of task 1 was absorbed');
    release!();
    await Promise.all([inFlightStart, start1, start2, end0, end1, end2other]);
    const second = proposed[1]!;
    assert.deepEqual(
      second.map((c) => `${c.type}:${c.taskId.slice(-1)}:${c.startedAt ?? '-'}`),
      ['taskStarted:2:-', 'taskFinished:0:-', 'taskFinished:1:200', 'taskFinished:2:-'],
    );
    assert.equal(await start1, `taskFinished:${t(1)}`, 'the absorbed start answers with its end');
  });
});

describe('CommandBatcher holding starts back', () => {
  it('a start waits startHoldMs: folded into an end that comes sooner, sent alone after it otherwise', async () => {
    const proposed: string[][] = [];
    const batcher = new CommandBatcher<string>(
      async (encoded) => {
        const cmds = encoded.map((b) => decode(z.any(), b));
        proposed.push(cmds.map((c) => `${c.type}:${c.taskId.slice(-1)}:${c.startedAt ?? '-'}`));
        return cmds.map((c) => c.type);
      },
      10_000,
      100,
    );
    const t = (i: number) => taskIdOf('j0000000001-00000000000000aa', i);
    const keepAlive = setInterval(() => {}, 1000); // the hold timer does not keep a process alive
    const t0 = performance.now();
    const quickStart = batcher.submit({ type: 'taskStarted', taskId: t(0), attempt: 1, at: 100 });
    const slowStart = batcher.submit({ type: 'taskStarted', taskId: t(1), attempt: 1, at: 110 });
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(proposed, [], 'starts are held');
    const quickEnd = batcher.submit({ type: 'taskFinished', taskId: t(0), attempt: 1, at: 120 });
    assert.equal(await quickEnd, 'taskFinished');
    assert.equal(await quickStart, 'taskFinished', 'the folded start answers with its end');
    assert.deepEqual(proposed, [['taskFinished:0:100']]);
    assert.equal(await slowStart, 'taskStarted');
    assert.ok(performance.now() - t0 >= 95, 'the unfinished start went out only after the hold');
    assert.deepEqual(proposed, [['taskFinished:0:100'], ['taskStarted:1:-']]);
    clearInterval(keepAlive);
  });
});

describe('CommandBatcher folding plain successes', () => {
  const jobA = 'j0000000001-00000000000000aa';
  const jobB = 'j0000000002-00000000000000bb';
  const ok = (jobId: string, i: number, extra: Record<string, unknown> = {}) => ({
    type: 'taskFinished',
    taskId: taskIdOf(jobId, i),
    attempt: 1,
    outcome: 'succeeded',
    exitCode: 0,
    usage: { wallMs: 1, cpuMs: 0.5, maxMemoryBytes: 65536 },
    takeNext: true,
    at: 1000 + i,
    ...extra,
  });

  it("folds each job's plain successes into one command where the first was; every caller gets its own answer", async () => {
    const proposed: { type: string; taskId?: string; jobId?: string; index?: number[] }[][] = [];
    let release: (() => void) | null = null;
    const batcher = new CommandBatcher<string>(async (encoded, _timeoutMs, commands) => {
      const cmds = encoded.map((b) => decode(z.any(), b));
      proposed.push(cmds);
      if (proposed.length === 1) await new Promise<void>((r) => (release = r));
      // What the apply side answers: one result per command a folded report stands for.
      const answers = cmds.flatMap((c) =>
        c.type === 'tasksFinished'
          ? expandTasksFinished(validateTasksFinished(c)).map((f) => `folded:${f.taskId}`)
          : [`${c.type}:${c.taskId}`],
      );
      assert.equal(answers.length, commands);
      return answers;
    });
    const first = batcher.submit(ok(jobA, 0));
    await new Promise((r) => setImmediate(r));
    const calls = [
      batcher.submit(ok(jobA, 1)),
      batcher.submit(ok(jobB, 0, { takeNext: 3 })),
      batcher.submit(ok(jobA, 2, { exitCode: 1, outcome: 'failed' })), // not plain: travels as it is
      batcher.submit(ok(jobA, 3, { stdoutTail: 'hi' })), // has output: travels as it is
      batcher.submit(ok(jobA, 4, { startedAt: 990 })),
      batcher.submit({ type: 'requeue', taskId: taskIdOf(jobB, 1), attempt: 1, reason: 'x', at: 1 }),
      batcher.submit(ok(jobB, 2)),
    ];
    release!();
    assert.equal(await first, `folded:${taskIdOf(jobA, 0)}`);
    assert.deepEqual(await Promise.all(calls), [
      `folded:${taskIdOf(jobA, 1)}`,
      `folded:${taskIdOf(jobB, 0)}`,
      `taskFinished:${taskIdOf(jobA, 2)}`,
      `taskFinished:${taskIdOf(jobA, 3)}`,
      `folded:${taskIdOf(jobA, 4)}`,
      `requeue:${taskIdOf(jobB, 1)}`,
      `folded:${taskIdOf(jobB, 2)}`,
    ]);
    assert.deepEqual(
      proposed[1]!.map((c) => (c.type === 'tasksFinished' ? `${c.jobId!.slice(-2)}[${c.index}]` : c.type)),
      ['aa[1,4]', 'bb[0,2]', 'taskFinished', 'taskFinished', 'requeue'],
    );
    const foldedA = validateTasksFinished(proposed[1]![0]);
    assert.deepEqual(foldedA.startedAt, [null, 990]);
    assert.deepEqual(validateTasksFinished(proposed[1]![1]).takeNext, [3, 1]);
    assert.deepEqual(batcher.stats, { batches: 2, commands: 8 });
  });

  it('a folded report applies exactly as the reports it stands for, on every node', () => {
    const spec = validateJobSpec({
      name: 'f',
      executor: 'wasm',
      wasm: { bytes: new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]) },
      command: [],
      resources: { cpus: 0.01, memoryBytes: 16 * 1024 * 1024 },
      count: 40,
    });
    const at = 1_700_000_000_000;
    const setUp = () => {
      const sm = new JobLogStateMachine(new JobStateMachine());
      assert.equal(
        sm.apply(encode({ type: 'submitJob', jobId: jobA, spec, submitter: 'peer:x', at })).ok,
        true,
      );
      const assigns = Array.from({ length: 10 }, (_, i) =>
        encode({ type: 'assign', taskId: taskIdOf(jobA, i), nodeId: 'node-a', attempt: 1, at }),
      );
      assert.equal(sm.apply(encode({ batch: assigns })).ok, true);
      const seen: string[] = [];
      sm.applied.on('applied', (cmd: { type: string; taskId: string }, r: { ok: boolean }) =>
        seen.push(`${cmd.type}:${cmd.taskId}:${r.ok}`),
      );
      return { sm, seen };
    };
    const reports = [
      ok(jobA, 0, { takeNext: 4, startedAt: at + 1, at: at + 2 }),
      ok(jobA, 1, { at: at + 3 }),
      ok(jobA, 1, { at: at + 4 }), // twice: the second is stale
      ok(jobA, 7, { attempt: 2 }), // not the live attempt
      ok(jobA, 30), // never assigned
      ok(jobA, 2, { takeNext: 8 }),
    ];
    const plain = setUp();
    const one = plain.sm.apply(encode({ batch: reports.map((r) => encode(r)) })) as {
      batch: { ok: boolean }[];
    };
    const folded = setUp();
    const fold = foldFinished(jobA, reports as TaskFinishedInput[]);
    const other = folded.sm.apply(encode({ batch: [encode(fold)] })) as { batch: { ok: boolean }[] };
    assert.deepEqual(other.batch, one.batch, 'the same answer for each report');
    assert.deepEqual(
      one.batch.map((r) => r.ok),
      [true, true, false, false, false, true],
    );
    assert.deepEqual(folded.seen, plain.seen, 'the same applied events, in the same order');
    assert.deepEqual(
      Buffer.from(folded.sm.machine.snapshot()),
      Buffer.from(plain.sm.machine.snapshot()),
      'the same state',
    );
    assert.ok(folded.sm.machine.tasksOnNode('node-a').length > 7, 'takeNext granted more tasks');
    // Malformed folded reports answer once, INVALID, and change nothing.
    const before = Buffer.from(folded.sm.machine.snapshot());
    for (const bad of [
      { ...fold, attempt: fold.attempt.slice(1) }, // a short column
      { ...fold, index: [] },
      { ...fold, takeNext: fold.takeNext.map(() => 99) },
      { ...fold, extra: 1 },
    ]) {
      const r = folded.sm.apply(encode({ batch: [encode(bad)] })) as {
        batch: { ok: boolean; code?: string }[];
      };
      assert.deepEqual(
        r.batch.map((x) => [x.ok, x.code]),
        [[false, 'INVALID']],
      );
    }
    assert.deepEqual(Buffer.from(folded.sm.machine.snapshot()), before);
    // More reports than a batch may carry: refused whole.
    const huge = foldFinished(
      jobA,
      Array.from({ length: 10 }, (_, i) => ok(jobA, i + 10)) as TaskFinishedInput[],
    );
    const many = Array.from({ length: BATCH_LIMITS.maxCommands / 10 }, () => encode(huge));
    const r = folded.sm.apply(encode({ batch: [...many, encode(huge)] })) as { batch: { ok: boolean }[] };
    assert.equal(r.batch.at(-1)!.ok, false);
  });
});
