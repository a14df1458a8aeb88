// Crash, stop and stall nodes at random while a job of short tasks runs, on real daemons over loopback: one
// node at a time is killed (-9), stopped (SIGTERM) or frozen (SIGSTOP, up to 15 s, past the heartbeat TTL),
// then brought back. Whatever the sequence, every task must end succeeded (it may retry), none may succeed twice,
// and none may be left assigned or running. The sequence comes from a seed (MESHRUN_CHAOS_SEED, default fixed)
// and is printed, so a failure can be replayed.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type LoopbackCluster, newLoopbackCluster } from '@meshrun/headless/local-cluster.ts';
import { sleep, waitFor } from '../src/proc.ts';
import { sleepWat, wasmOf } from './lib/wasm.ts';

const SEED = Number(process.env.MESHRUN_CHAOS_SEED ?? 20261125);
/** How long faults are injected; the job is sized to still be running by then. */
const CHAOS_MS = 30_000;
const TASKS = 2400;
const SLOTS_PER_NODE = '8';

/** A small deterministic generator (a linear congruential one): the fault sequence depends on SEED only. */
function generator(seed: number): () => number {
  let s = seed % 2147483648;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

interface AttemptView {
  attempt: number;
  nodeId: string;
  outcome: string | null;
}
interface TaskView {
  taskId: string;
  state: string;
  attempts: AttemptView[];
}

describe('chaos: nodes killed, stopped and frozen while a job runs', () => {
  let c: LoopbackCluster;
  before(async () => {
    c = await newLoopbackCluster({ prefix: 'meshrun-chaos-' });
    for (const i of [0, 1, 2]) await c.start(i, ['--max-concurrent', SLOTS_PER_NODE]);
  });
  after(async () => c?.destroy());

  it('every task succeeds exactly once, none is left behind', async (t) => {
    await waitFor(
      async () => {
        const r = await c.nodes[0]!.cli(['cluster', '--json']);
        return r.code === 0 && JSON.parse(r.stdout).leader !== null;
      },
      { timeoutMs: 30_000, description: 'a leader' },
    );
    const file = join(c.dir, 'sleep.wasm');
    writeFileSync(file, await wasmOf(sleepWat(0.3)));
    const sub = await c.nodes[0]!.cli([
      'run',
      '--detach',
      '--count',
      String(TASKS),
      '--cpus',
      '0.1',
      '--memory',
      '16M',
      '--retries',
      '3',
      '--wasm',
      file,
    ]);
    assert.equal(sub.code, 0, sub.stderr);
    const jobId = sub.stdout.trim();

    const random = generator(SEED);
    const faults: string[] = [];
    const t0 = Date.now();
    const at = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
    while (Date.now() - t0 < CHAOS_MS) {
      const index = Math.floor(random() * 3);
      const node = c.nodes.find((n) => n.index === index)!;
      const x = random();
      const fault = x < 0.4 ? 'SIGKILL' : x < 0.6 ? 'SIGTERM' : 'SIGSTOP';
      faults.push(`${at()} ${fault} node ${index}`);
      node.kill(fault);
      if (fault === 'SIGSTOP') {
        await sleep(2000 + random() * 13_000);
        node.kill('SIGCONT');
        faults.push(`${at()} SIGCONT node ${index}`);
      } else {
        await node.exited;
        await sleep(500 + random() * 2500);
        await c.start(index, ['--max-concurrent', SLOTS_PER_NODE]);
        faults.push(`${at()} restarted node ${index}`);
      }
      await sleep(2000 + random() * 3000);
    }
    t.diagnostic(`seed ${SEED}: ${faults.join('; ')}`);

    const job = await waitFor(
      async () => {
        const r = await c.nodes[0]!.cli(['status', jobId, '--json'], { timeoutMs: 30_000 });
        if (r.code !== 0) return null;
        const s = JSON.parse(r.stdout) as { state: string; tasks: TaskView[] };
        return ['succeeded', 'failed', 'cancelled'].includes(s.state) ? s : null;
      },
      { timeoutMs: 180_000, intervalMs: 2000, description: `job ${jobId} to end (seed ${SEED})` },
    );
    const outcomes: Record<string, number> = {};
    for (const task of job.tasks)
      for (const a of task.attempts) outcomes[String(a.outcome)] = (outcomes[String(a.outcome)] ?? 0) + 1;
    t.diagnostic(`attempts by outcome: ${JSON.stringify(outcomes)}`);
    assert.equal(job.tasks.length, TASKS);
    const notSucceeded = job.tasks.filter((task) => task.state !== 'succeeded');
    assert.deepEqual(
      notSucceeded
        .slice(0, 3)
        .map((task) => ({ taskId: task.taskId, state: task.state, attempts: task.attempts })),
      [],
      `seed ${SEED}: ${notSucceeded.length} tasks did not succeed`,
    );
    const twice = job.tasks.filter(
      (task) => task.attempts.filter((a) => a.outcome === 'succeeded').length > 1,
    );
    assert.deepEqual(
      twice.map((task) => task.taskId),
      [],
      `seed ${SEED}: tasks that succeeded more than once`,
    );
    assert.ok(
      (outcomes.lost ?? 0) + (outcomes.error ?? 0) > 0,
      'the faults hit running tasks (else this test proves nothing)',
    );
  });
});
