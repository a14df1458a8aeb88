// The leader gives the scheduler only the first `free slots` queued tasks of each job. Property: that places
// exactly what scheduling the whole queue places, for random jobs (priorities, submitters, shapes), nodes
// (limits, modes) and tasks already running, retrying or requeued.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { taskIdOf, validateJobSpec } from '@meshrun/protocol';
import fc from 'fast-check';
import { schedule } from './scheduler.ts';
import { JobStateMachine } from './state-machine.ts';
import type { SchedulerNode } from './types.ts';

const GiB = 1024 ** 3;

function node(id: string, maxConcurrent: number, cpus: number, mode: 'active' | 'draining'): SchedulerNode {
  return {
    id,
    up: true,
    mode,
    capacity: { cpus, memoryBytes: 8 * GiB, diskBytes: 100 * GiB, gpus: [] },
    maxConcurrent,
    arch: 'x64',
    os: 'linux',
    labels: {},
    docker: true,
    executors: ['docker', 'wasm'],
  };
}

const jobArb = fc.record({
  count: fc.integer({ min: 1, max: 30 }),
  priority: fc.integer({ min: 0, max: 2 }),
  submitter: fc.constantFrom('peer:a', 'peer:b', 'peer:c'),
  cpus: fc.constantFrom(0.5, 1, 2),
  memoryGiB: fc.constantFrom(1, 4),
  /** Tasks of this job assigned (some then failed and requeued) before the pass. */
  assigned: fc.integer({ min: 0, max: 8 }),
  failed: fc.integer({ min: 0, max: 3 }),
});

describe('bounded queue for a scheduling pass', () => {
  it('places the same tasks on the same nodes as the whole queue', () => {
    fc.assert(
      fc.property(
        fc.array(jobArb, { minLength: 1, maxLength: 6 }),
        fc.array(
          fc.record({
            max: fc.integer({ min: 0, max: 12 }),
            cpus: fc.integer({ min: 1, max: 16 }),
            drain: fc.boolean(),
          }),
          { minLength: 1, maxLength: 4 },
        ),
        (jobs, nodeSpecs) => {
          const m = new JobStateMachine();
          const nodes = nodeSpecs.map((n, i) =>
            node(`n${i}`, n.max, n.cpus, n.drain ? 'draining' : 'active'),
          );
          const at = 1_000_000;
          jobs.forEach((j, k) => {
            const jobId = `j000000000${k}-${'0'.repeat(15)}${k}`;
            const spec = validateJobSpec({
              name: `job${k}`,
              executor: 'docker',
              image: 'busybox',
              command: ['true'],
              resources: { cpus: j.cpus, memoryBytes: j.memoryGiB * GiB },
              count: j.count,
              priority: j.priority,
              retry: { maxAttempts: 3, backoffMs: 0 },
            });
            assert.equal(m.apply({ type: 'submitJob', jobId, spec, submitter: j.submitter, at }).ok, true);
            // Assign some tasks (round robin over nodes), fail a few of them: they come back to the queue
            // out of index order.
            for (let i = 0; i < Math.min(j.assigned, j.count); i++) {
              const taskId = taskIdOf(jobId, (i * 7) % j.count);
              const t = m.task(taskId);
              if (t?.state !== 'queued') continue;
              const nodeId = nodes[i % nodes.length]!.id;
              m.apply({ type: 'assign', taskId, nodeId, attempt: t.attempt + 1, at });
              if (i < j.failed)
                m.apply({
                  type: 'taskFinished',
                  taskId,
                  attempt: t.attempt,
                  outcome: 'failed',
                  exitCode: 1,
                  at,
                });
            }
          });
          const now = at + 10;
          const running = m.runningTasks();
          const full = schedule({ now, nodes, tasks: m.queuedTasks(), running });
          let free = 0;
          for (const n of nodes)
            if (n.mode === 'active') free += Math.max(0, n.maxConcurrent - m.liveCountOn(n.id));
          const bounded = schedule({
            now,
            nodes,
            tasks: m.queuedTasks({ perJob: Math.max(1, free), now }),
            running,
          });
          const key = (r: typeof full) => r.assignments.map((a) => `${a.taskId}@${a.nodeId}`).sort();
          assert.deepEqual(key(bounded), key(full));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('takes each job in submission order, requeued tasks in index order, and bounds the tasks in backoff', () => {
    const m = new JobStateMachine();
    const at = 1_000_000;
    const spec = (count: number) =>
      validateJobSpec({
        name: 'x',
        executor: 'docker',
        image: 'busybox',
        command: ['true'],
        resources: { cpus: 1, memoryBytes: GiB },
        count,
        retry: { maxAttempts: 3, backoffMs: 60_000 },
      });
    const a = 'j0000000001-000000000000000a';
    const b = 'j0000000002-000000000000000b';
    m.apply({ type: 'submitJob', jobId: a, spec: spec(10), submitter: 'peer:x', at });
    m.apply({ type: 'submitJob', jobId: b, spec: spec(3), submitter: 'peer:x', at });
    // Task a/0 fails once: back in the queue, backing off for 60 s, still first by index.
    m.apply({ type: 'assign', taskId: taskIdOf(a, 0), nodeId: 'n', attempt: 1, at });
    m.apply({ type: 'taskFinished', taskId: taskIdOf(a, 0), attempt: 1, outcome: 'failed', exitCode: 1, at });
    const ids = m.queuedTasks({ perJob: 2, now: at + 1 }).map((t) => t.taskId);
    assert.deepEqual(ids, [taskIdOf(a, 0), taskIdOf(a, 1), taskIdOf(a, 2), taskIdOf(b, 0), taskIdOf(b, 1)]);
    assert.equal(m.queuedTasks().length, 13, 'the unbounded queue is still whole');
  });
});
