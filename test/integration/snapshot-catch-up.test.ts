// A node that falls so far behind that the leader sends it a snapshot instead of the entries it missed, on
// real daemons over loopback: the assignments in those entries never reach it as applied commands, so before
// the jobs service compared the snapshot with its own runs, the tasks stayed "assigned" to a live node for
// good (the leader only re-queues the tasks of nodes that stop heartbeating) and their job never ended.
// The daemons snapshot every 40 entries and keep 5, so a few seconds of work make the leader compact past a
// stopped follower; the node TTL is long, so the stop never makes the leader re-queue that node's tasks.
// The leader keeps at most 2 appends in flight to a follower: otherwise it streams every entry into the
// stopped follower's connection, which delivers them all when it resumes, and no snapshot is needed (how
// often that happened depended on how fast the machine ran the rounds: the test failed 2 of 3 CI runs).
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type LoopbackCluster,
  type LoopbackNode,
  newLoopbackCluster,
} from '@meshrun/headless/local-cluster.ts';
import { describeResult, waitFor } from '../src/proc.ts';
import { NOOP_WAT, wasmOf } from './lib/wasm.ts';

const ENV = {
  MESHRUN_SNAPSHOT_ENTRIES: '40',
  MESHRUN_CATCHUP_ENTRIES: '5',
  MESHRUN_NODE_TTL_MS: '60000',
  MESHRUN_RAFT_MAX_INFLIGHT: '2',
};

async function json(n: LoopbackNode, args: string[]) {
  const r = await n.cli([...args, '--json']);
  assert.equal(r.code, 0, describeResult(r));
  return JSON.parse(r.stdout);
}

describe('catching up from a snapshot', () => {
  let c: LoopbackCluster;
  before(async () => {
    c = await newLoopbackCluster({ prefix: 'meshrun-catch-up-' });
    for (const i of [0, 1, 2]) await c.start(i, ['--label', `slot=${i}`], ENV);
  });
  after(async () => c?.destroy());

  it('a node sent the leader’s snapshot runs the tasks it was assigned in the entries it missed', async () => {
    const leaderId = await waitFor(
      async () => {
        const s = await json(c.nodes[0]!, ['cluster']);
        return s.leader && s.voters.length === 3 ? (s.leader as string) : null;
      },
      { timeoutMs: 30_000, description: 'a leader with three voters' },
    );
    const leader = c.nodes.find((n) => n.peerId === leaderId)!;
    const behind = c.nodes.find((n) => n !== leader)!;
    const wasm = join(c.dir, 'noop.wasm');
    writeFileSync(wasm, await wasmOf(NOOP_WAT));
    const run = (slot: number, count: number) =>
      leader.cli([
        'run',
        '--detach',
        '--count',
        String(count),
        '--label-constraint',
        `slot=${slot}`,
        '--memory',
        '16M',
        '--wasm',
        wasm,
      ]);

    // Stopped, the follower applies nothing; the leader still sees it alive (TTL) and gives it two tasks.
    behind.kill('SIGSTOP');
    try {
      const submitted = await run(behind.index, 2);
      assert.equal(submitted.code, 0, describeResult(submitted));
      const jobId = submitted.stdout.trim();
      await waitFor(
        async () => {
          const st = await json(leader, ['status', jobId]);
          return st.tasks.every((t: { state: string }) => t.state === 'assigned');
        },
        { timeoutMs: 20_000, description: 'both tasks assigned to the stopped follower' },
      );
      // Work on the leader's node moves the log on until the leader has compacted past the follower.
      const appliedAt = (await json(leader, ['cluster'])).applied as number;
      for (let round = 0; round < 20; round++) {
        const more = await run(leader.index, 20);
        assert.equal(more.code, 0, describeResult(more));
        if ((await json(leader, ['cluster'])).applied > appliedAt + 60) break;
      }
      assert.ok((await json(leader, ['cluster'])).applied > appliedAt + 60, 'the log moved past a snapshot');

      behind.kill('SIGCONT');
      const done = await waitFor(
        async () => {
          const st = await json(leader, ['status', jobId]);
          return st.state === 'succeeded' ? st : null;
        },
        { timeoutMs: 30_000, description: 'the job given to the follower to succeed' },
      );
      for (const t of done.tasks) {
        assert.equal(t.nodeId, behind.peerId, 'ran where it was assigned');
        assert.equal(t.attempt, 1, 'in its first attempt: never re-queued');
      }
      // It was the snapshot path: the follower says it caught up from one.
      const log = readFileSync(join(c.dir, `node${behind.index}.log`), 'utf8');
      assert.match(log, /caught up from the leader’s snapshot/);
      assert.match(log, /started tasks assigned here that this node had not seen/);
    } finally {
      behind.kill('SIGCONT');
    }
  });
});
