// Group commit of node-generated job commands: the batcher (pure, with a fake proposer) and the replicated
// state machine's apply of a batch entry (the same code every node runs).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decode, encode, taskIdOf, validateJobSpec } from '@meshrun/protocol';
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
