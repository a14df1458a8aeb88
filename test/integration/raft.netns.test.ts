// Raft on real daemons in network namespaces: four nodes form a 3-voter cluster plus a learner by themselves;
// the cluster survives kill -9 of its leader and a partition of its leader; the old leader steps down; after
// healing, logs converge; a voter paused past the dead-voter time is replaced and, resumed, rejoins as a learner
// while the tasks it ran succeed exactly once; a voter lost for good is replaced by the learner (autopilot); no
// acknowledged proposal (a job submission that returned its ID) is ever lost.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Cluster, ClusterNode } from '../src/cluster.ts';
import { requireNetns } from '../src/netns.ts';
import { waitFor } from '../src/proc.ts';
import { cli, cliJson, type Json, jobEnded, newClusterKey, startDaemons } from './lib/namespaced.ts';
import { detachedWasmRun, sleepWat, wasmOf } from './lib/wasm.ts';

const skip = requireNetns();

/** A proposal: a job that can never be placed (so it stays in the log, untouched by workers). */
async function propose(n: ClusterNode, tag: string): Promise<string | null> {
  const r = await cli(
    n,
    ['run', '--detach', '--name', tag, '--memory', '4096G', 'never/placed:1', '--', 'true'],
    15_000,
  );
  return r.code === 0 ? r.stdout.trim() : null;
}

describe('raft on real processes', { skip, timeout: 300_000 }, () => {
  let c: Cluster;
  const acked: string[] = [];
  const byId = new Map<string, ClusterNode>();

  before(async () => {
    c = await startDaemons({
      name: 'raft',
      hosts: 4,
      keyFile: await newClusterKey('meshrun-raft-'),
      // Jobs' node TTL well above the pause below: the paused node's tasks must not be re-queued meanwhile.
      env: { MESHRUN_DEAD_VOTER_MS: '8000', MESHRUN_NODE_TTL_MS: '30000' },
    });
    await waitFor(
      async () => {
        const all = await Promise.all(c.nodes.map((n) => cliJson(n, ['cluster', '--local'])));
        return all.every(
          (s) => s.leader && s.leader === all[0]!.leader && s.voters.length === 3 && s.learners.length === 1,
        );
      },
      { timeoutMs: 90_000, intervalMs: 300, description: 'a 3-voter cluster with one learner' },
    );
    for (const n of c.nodes) byId.set((await cliJson(n, ['cluster', '--local'])).id, n);
  });
  after(async () => c?.destroy());

  const leaderOf = async (n: ClusterNode) =>
    (await cliJson(n, ['cluster', '--local'])).leader as string | null;

  it('kill -9 of the leader: a new leader is elected and accepts proposals', async () => {
    for (let i = 0; i < 5; i++) {
      const id = await propose(c.nodes[i % 3]!, `before-kill-${i}`);
      assert.ok(id, 'proposal accepted');
      acked.push(id);
    }
    const old = byId.get((await leaderOf(c.nodes[0]!))!)!;
    old.proc.kill('SIGKILL');
    await old.proc.exited;
    const survivor = c.nodes.find((n) => n !== old)!;
    await waitFor(
      async () => {
        const l = await leaderOf(survivor);
        return l && byId.get(l) !== old;
      },
      { timeoutMs: 15_000, description: 'a new leader' },
    );
    const id = await waitFor(() => propose(survivor, 'after-kill'), {
      timeoutMs: 10_000,
      description: 'a proposal to be accepted',
    });
    acked.push(id);
    await old.restart();
  });

  it('partition of the leader: the majority elects a leader, the old one steps down; heal: logs converge', async () => {
    const old = byId.get((await waitFor(() => leaderOf(c.nodes[0]!), { description: 'a leader' }))!)!;
    const rest = c.nodes.filter((n) => n !== old);
    await c.network.partition(
      [old.host],
      rest.map((n) => n.host),
    );
    try {
      await waitFor(
        async () => {
          const l = await leaderOf(rest[0]!);
          return l && byId.get(l) !== old && (await leaderOf(rest[1]!)) === l;
        },
        { timeoutMs: 20_000, description: 'the majority to elect a new leader' },
      );
      await waitFor(async () => (await cliJson(old, ['cluster', '--local'])).role !== 'leader', {
        timeoutMs: 20_000,
        description: 'the isolated old leader to step down (check-quorum)',
      });
      // The minority side cannot commit anything.
      assert.equal(await propose(old, 'minority'), null, 'the isolated node must not acknowledge a proposal');
      for (let i = 0; i < 5; i++) {
        const id = await propose(rest[i % 2]!, `during-partition-${i}`);
        assert.ok(id);
        acked.push(id);
      }
    } finally {
      await c.network.heal();
    }
    // Converged: same commit index and the same job list everywhere.
    await waitFor(
      async () => {
        const st = await Promise.all(c.nodes.map((n) => cliJson(n, ['cluster', '--local'])));
        return st.every(
          (s) => s.commit === st[0]!.commit && s.applied === st[0]!.applied && s.leader === st[0]!.leader,
        );
      },
      { timeoutMs: 30_000, intervalMs: 500, description: 'logs to converge' },
    );
    const lists = await Promise.all(
      c.nodes.map(async (n) =>
        (await cliJson(n, ['jobs', '--limit', '10000'])).map((j: Json) => j.jobId).sort(),
      ),
    );
    for (const l of lists.slice(1)) assert.deepEqual(l, lists[0]);
    for (const id of acked) assert.ok(lists[0]!.includes(id), `acknowledged proposal ${id} survived`);
  });
  it('a voter paused past the dead-voter time is replaced; resumed, it rejoins as a learner and the tasks it ran succeed exactly once', async () => {
    const st = await cliJson(c.nodes[0]!, ['cluster']);
    const leader = byId.get(st.leader as string)!;
    const victimId = (st.voters as Json[]).map((v) => v.id as string).find((id) => id !== st.leader)!;
    const victim = byId.get(victimId)!;
    const dir = mkdtempSync(join(tmpdir(), 'meshrun-raft-wasm-'));
    try {
      const wasm = join(dir, 'sleep.wasm');
      writeFileSync(wasm, await wasmOf(sleepWat(15)));
      const run = await cli(leader, detachedWasmRun(wasm, 8, 0.1));
      assert.equal(run.code, 0, run.stderr);
      const jobId = run.stdout.trim();
      // Spread over the four nodes: wait until the victim runs some of them.
      await waitFor(
        async () => {
          const job = await cliJson(leader, ['status', jobId]);
          return (job.tasks as Json[]).some((t) => t.state === 'running' && t.nodeId === victimId);
        },
        { timeoutMs: 20_000, intervalMs: 200, description: 'a task running on the node to pause' },
      );
      victim.proc.kill('SIGSTOP');
      try {
        await waitFor(
          async () => {
            const s = await cliJson(leader, ['cluster']);
            return s.voters.length === 3 && !(s.voters as Json[]).some((v) => v.id === victimId);
          },
          { timeoutMs: 30_000, intervalMs: 300, description: 'autopilot to replace the paused voter' },
        );
      } finally {
        victim.proc.kill('SIGCONT');
      }
      const rejoined = await waitFor(
        async () => {
          const s = await cliJson(leader, ['cluster']);
          return s.voters.length === 3 && (s.learners as Json[]).some((l) => l.id === victimId) ? s : null;
        },
        { timeoutMs: 30_000, intervalMs: 300, description: 'the resumed node to rejoin as a learner' },
      );
      assert.equal(rejoined.learners.length, 1);
      const done = await jobEnded(leader, jobId);
      assert.equal(done.state, 'succeeded', JSON.stringify(done.counts));
      assert.deepEqual(done.attemptOutcomes, { succeeded: 8 }, 'every task ran exactly once, none was lost');
      const job = await cliJson(leader, ['status', jobId]);
      const onVictim = (job.tasks as Json[]).filter((t) => t.nodeId === victimId);
      assert.ok(onVictim.length > 0, 'the paused node ran some of the tasks to the end');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a voter lost for good is replaced: autopilot promotes the healthy learner and the cluster keeps 3 voters', async () => {
    const st = await cliJson(c.nodes[0]!, ['cluster']);
    const leader = st.leader as string;
    const learner = st.learners[0].id as string;
    const victimId = (st.voters as Json[]).map((v) => v.id as string).find((id) => id !== leader)!;
    const victim = byId.get(victimId)!;
    victim.proc.kill('SIGKILL');
    await victim.proc.exited;
    const live = c.nodes.find((n) => n !== victim)!;
    const after = await waitFor(
      async () => {
        const s = await cliJson(live, ['cluster']);
        const ids = (s.voters as Json[]).map((v) => v.id);
        return ids.length === 3 && ids.includes(learner) && !ids.includes(victimId) ? s : null;
      },
      { timeoutMs: 45_000, intervalMs: 500, description: 'the learner to replace the lost voter' },
    );
    assert.equal(after.voters.length, 3);
    const id = await waitFor(() => propose(live, 'after-autopilot'), {
      timeoutMs: 10_000,
      description: 'a proposal',
    });
    acked.push(id);
    const list = (await cliJson(live, ['jobs', '--limit', '10000'])).map((j: Json) => j.jobId);
    for (const a of acked) assert.ok(list.includes(a), `acknowledged proposal ${a} survived`);
  });
});
