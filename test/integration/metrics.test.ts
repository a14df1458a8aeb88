// The consensus and job metrics on `/metrics`, scraped from three real daemons on loopback while real jobs
// (WASM tasks that succeed, fail, time out, sleep, or cannot be placed) go through the cluster: every node
// sees the same leader and term, exactly one says it leads, the cluster's queued and live task gauges follow
// the replicated state on every node, and the per-node run counters add up to the runs that happened.
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
import { NOOP_WAT, sleepWat, wasmOf } from './lib/wasm.ts';

const EXIT_1_WAT = `(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 1))))`;
const LOOP_WAT = '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))';

/** Every sample of one scrape: `name{labels}` → value. */
async function scrape(n: LoopbackNode): Promise<Map<string, number>> {
  const res = await fetch(`${n.apiUrl}/metrics`);
  assert.equal(res.status, 200);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^(meshrun_[a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}

function sample(s: Map<string, number>, name: string): number {
  const v = s.get(name);
  assert.ok(v !== undefined, `${name} is exported`);
  return v;
}

describe('consensus and job metrics', () => {
  let c: LoopbackCluster;
  const file = (name: string) => join(c.dir, `${name}.wasm`);
  before(async () => {
    c = await newLoopbackCluster({ prefix: 'meshrun-metrics-' });
    for (const i of [0, 1, 2]) await c.start(i);
    for (const [name, wat] of [
      ['noop', NOOP_WAT],
      ['exit1', EXIT_1_WAT],
      ['loop', LOOP_WAT],
      ['sleep', sleepWat(5)],
    ] as const)
      writeFileSync(file(name), await wasmOf(wat));
  });
  after(async () => c?.destroy());

  async function run(n: LoopbackNode, args: string[]): Promise<string> {
    const r = await n.cli(['run', '--detach', '--memory', '16M', '--cpus', '0.1', ...args]);
    assert.equal(r.code, 0, describeResult(r));
    return r.stdout.trim();
  }
  async function jobState(jobId: string): Promise<string> {
    const r = await c.nodes[0]!.cli(['status', jobId, '--json']);
    assert.equal(r.code, 0, describeResult(r));
    return (JSON.parse(r.stdout) as { state: string }).state;
  }

  /** Waits until every node's cluster gauges show this much work. */
  async function workOnEveryNode(want: { queued: number; live: number; unfinished: number; jobs: number }) {
    const gauges = {
      queued: 'meshrun_cluster_tasks_queued',
      live: 'meshrun_cluster_tasks_live',
      unfinished: 'meshrun_cluster_tasks_unfinished',
      jobs: 'meshrun_cluster_jobs_unfinished',
    } as const;
    await waitFor(
      async () => {
        const all = await Promise.all(c.nodes.map(scrape));
        return all.every((s) =>
          Object.entries(gauges).every(([k, name]) => s.get(name) === want[k as keyof typeof want]),
        );
      },
      { timeoutMs: 15_000, description: `${JSON.stringify(want)} on every node` },
    );
  }

  it('every node reports the same leader and term, and exactly one leads', async () => {
    const scrapes = await waitFor(
      async () => {
        const all = await Promise.all(c.nodes.map(scrape));
        const ok = all.every(
          (s) => s.get('meshrun_raft_has_leader') === 1 && s.get('meshrun_raft_voters') === 3,
        );
        return ok ? all : null;
      },
      { timeoutMs: 30_000, description: 'a leader with three voters seen by every node' },
    );
    const leaders = c.nodes.filter((_, i) => sample(scrapes[i]!, 'meshrun_raft_is_leader') === 1);
    assert.equal(leaders.length, 1, 'exactly one node leads');
    const status = await c.nodes[0]!.cli(['cluster', '--json']);
    assert.equal(JSON.parse(status.stdout).leader, leaders[0]!.peerId, 'the one `meshrun cluster` names');
    const terms = new Set(scrapes.map((s) => sample(s, 'meshrun_raft_term')));
    assert.equal(terms.size, 1, `one term: ${[...terms]}`);
    assert.ok([...terms][0]! >= 1);
    for (const s of scrapes) {
      assert.equal(sample(s, 'meshrun_raft_learners'), 0);
      assert.ok(sample(s, 'meshrun_raft_applied_index') <= sample(s, 'meshrun_raft_commit_index'));
      assert.ok(sample(s, 'meshrun_raft_commit_index') >= 1);
    }
  });

  it('queued and live task gauges follow the replicated state on every node', async () => {
    const unplaceable = await run(c.nodes[1]!, ['--memory', '4096G', '--wasm', file('noop')]);
    const sleeping = await run(c.nodes[2]!, ['--count', '2', '--wasm', file('sleep')]);
    // While the two sleep, every node (not only the ones running them) counts them, and the unplaceable one.
    await workOnEveryNode({ queued: 1, live: 2, unfinished: 3, jobs: 2 });
    // The nodes running them say so too (a task is live from its assignment, running once it has a slot).
    await waitFor(
      async () =>
        (await Promise.all(c.nodes.map(scrape))).reduce(
          (n, s) => n + sample(s, 'meshrun_tasks_running'),
          0,
        ) === 2,
      { timeoutMs: 4_000, description: 'two tasks running, summed over the nodes' },
    );
    await waitFor(async () => (await jobState(sleeping)) === 'succeeded', {
      timeoutMs: 30_000,
      description: 'the sleeping job to end',
    });
    const cancel = await c.nodes[0]!.cli(['cancel', unplaceable]);
    assert.equal(cancel.code, 0, describeResult(cancel));
    await workOnEveryNode({ queued: 0, live: 0, unfinished: 0, jobs: 0 });
  });

  it('the per-node run counters add up to the runs, by outcome', async () => {
    const before = await Promise.all(c.nodes.map(scrape));
    const total = (all: Map<string, number>[], outcome: string) =>
      all.reduce((n, s) => n + sample(s, `meshrun_task_runs_total{outcome="${outcome}"}`), 0);
    const jobs = [
      await run(c.nodes[0]!, ['--count', '6', '--wasm', file('noop')]),
      await run(c.nodes[1]!, ['--wasm', file('exit1')]),
      await run(c.nodes[2]!, ['--timeout', '1s', '--wasm', file('loop')]),
    ];
    for (const jobId of jobs)
      await waitFor(async () => ['succeeded', 'failed'].includes(await jobState(jobId)), {
        timeoutMs: 30_000,
        description: `job ${jobId} to end`,
      });
    // A node counts a run once its report went out, just before the job's end is visible everywhere.
    await waitFor(
      async () => {
        const now = await Promise.all(c.nodes.map(scrape));
        const delta = (o: string) => total(now, o) - total(before, o);
        return delta('succeeded') === 6 && delta('failed') === 1 && delta('timedOut') === 1 ? now : null;
      },
      { timeoutMs: 10_000, description: '6 succeeded, 1 failed and 1 timed-out run counted' },
    );
    const now = await Promise.all(c.nodes.map(scrape));
    assert.equal(total(now, 'error') - total(before, 'error'), 0);
  });
});
