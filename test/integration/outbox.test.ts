// A task's end report that cannot reach the log is kept and delivered later, on real daemons over loopback:
// a node finishes a task while the rest of its cluster is down (no leader, so the log cannot take the
// report), keeps the report in its outbox (the meshrun_reports_undelivered gauge), and delivers it once a
// leader is back. Before the outbox, such a report was dropped after its retries and the task stayed
// "running" on a live node for good.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type LoopbackCluster,
  type LoopbackNode,
  newLoopbackCluster,
} from '@meshrun/headless/local-cluster.ts';
import { describeResult, waitFor } from '../src/proc.ts';
import { sleepWat, wasmOf } from './lib/wasm.ts';

async function json(n: LoopbackNode, args: string[]) {
  const r = await n.cli([...args, '--json']);
  assert.equal(r.code, 0, describeResult(r));
  return JSON.parse(r.stdout);
}

async function gauge(n: LoopbackNode, name: string): Promise<number | null> {
  const text = await (await fetch(`${n.apiUrl}/metrics`)).text();
  const m = new RegExp(`^${name} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : null;
}

describe('undelivered end reports (outbox)', () => {
  let c: LoopbackCluster;
  before(async () => {
    c = await newLoopbackCluster({ prefix: 'meshrun-outbox-' });
    for (const i of [0, 1, 2]) await c.start(i, ['--label', `slot=${i}`]);
  });
  after(async () => c?.destroy());

  /** A follower runs a 4 s task; the rest of the cluster (leader included) is killed while it runs. */
  async function taskEndsWithNoLeader(): Promise<{
    worker: LoopbackNode;
    others: LoopbackNode[];
    jobId: string;
  }> {
    const leader = await waitFor(
      async () => {
        const s = await json(c.nodes[0]!, ['cluster']);
        return s.leader && s.voters.length === 3 ? (s.leader as string) : null;
      },
      { timeoutMs: 30_000, description: 'a leader with three voters' },
    );
    // The task runs on a follower, so that the nodes taken down include the leader.
    const worker = c.nodes.find((n) => n.peerId !== leader)!;
    const others = c.nodes.filter((n) => n !== worker);
    assert.equal(await gauge(worker, 'meshrun_reports_undelivered'), 0);

    const file = join(c.dir, 'sleep.wasm');
    writeFileSync(file, await wasmOf(sleepWat(4)));
    const submitted = await worker.cli([
      'run',
      '--detach',
      '--label-constraint',
      `slot=${worker.index}`,
      '--memory',
      '16M',
      '--wasm',
      file,
    ]);
    assert.equal(submitted.code, 0, describeResult(submitted));
    const jobId = submitted.stdout.trim();
    await waitFor(async () => (await json(worker, ['status', jobId])).tasks[0].state === 'running', {
      timeoutMs: 20_000,
      description: 'the task to run on the worker',
    });

    // The rest of the cluster goes down while the task runs: the worker's report of its end has no leader.
    for (const n of others) n.kill('SIGKILL');
    await Promise.all(others.map((n) => n.exited));
    await waitFor(async () => (await gauge(worker, 'meshrun_reports_undelivered')) === 1, {
      timeoutMs: 30_000,
      description: 'the worker to keep its undelivered report',
    });
    return { worker, others, jobId };
  }

  /** The job's one task succeeded on `worker` in its first attempt: the kept result landed. */
  async function succeededOnce(worker: LoopbackNode, jobId: string): Promise<void> {
    const done = await waitFor(
      async () => {
        const s = await json(worker, ['status', jobId]);
        return s.state === 'succeeded' || s.state === 'failed' ? s : null;
      },
      { timeoutMs: 60_000, description: 'the kept result to land once a leader is back' },
    );
    const task = done.tasks[0];
    assert.equal(done.state, 'succeeded', JSON.stringify(task.attempts));
    assert.equal(task.attempt, 1, 'the task ran once: its result landed, it was not re-queued');
    assert.equal(task.nodeId, worker.peerId);
    assert.equal(task.attempts.length, 1);
    assert.equal(task.attempts[0].outcome, 'succeeded');
    await waitFor(async () => (await gauge(worker, 'meshrun_reports_undelivered')) === 0, {
      timeoutMs: 10_000,
      description: 'the outbox to be empty again',
    });
  }

  it('a result reported while no leader exists is kept and lands once a leader is back', async () => {
    const { worker, others, jobId } = await taskEndsWithNoLeader();
    // While no leader exists it stays kept (offered with every heartbeat, refused each time).
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(await gauge(worker, 'meshrun_reports_undelivered'), 1);
    for (const n of others) await c.start(n.index, ['--label', `slot=${n.index}`]);
    await succeededOnce(worker, jobId);
  });

  it('a kept result survives a crash of its node: restarted, the node delivers the real result', async () => {
    const { worker, others, jobId } = await taskEndsWithNoLeader();
    worker.kill('SIGKILL');
    await worker.exited;
    // Without the stored outbox the restarted node could only report the task as lost with the restart.
    const restarted = await c.start(worker.index, ['--label', `slot=${worker.index}`]);
    for (const n of others) await c.start(n.index, ['--label', `slot=${n.index}`]);
    await succeededOnce(restarted, jobId);
  });
});
