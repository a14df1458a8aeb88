// A daemon stopped with SIGTERM stops its running containers (none left behind) and hands their tasks back to
// the queue at once, instead of leaving them to the heartbeat TTL.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { type LoopbackCluster, newLoopbackCluster } from '@meshrun/headless/local-cluster.ts';
import { waitFor } from '../src/proc.ts';
import { requireDocker, TEST_IMAGE } from './lib/docker.ts';

const skip = requireDocker();

describe('clean shutdown with running tasks', { skip }, () => {
  let c: LoopbackCluster;
  before(async () => {
    c = await newLoopbackCluster({ prefix: 'meshrun-stop-' });
    await c.start(0, ['--voters', '1']);
  });
  after(async () => c?.destroy());

  it('SIGTERM stops the containers and re-queues their tasks', async () => {
    const n = c.nodes[0]!;
    await waitFor(async () => JSON.parse((await n.cli(['cluster', '--json'])).stdout).leader, {
      timeoutMs: 60_000,
      description: 'a leader',
    });
    const r = await n.cli(['run', '--detach', '--memory', '16M', TEST_IMAGE, '--', 'sleep', '120']);
    assert.equal(r.code, 0, r.stderr);
    const jobId = r.stdout.trim();
    await waitFor(
      async () => JSON.parse((await n.cli(['status', jobId, '--json'])).stdout).tasks[0].state === 'running',
      {
        timeoutMs: 30_000,
        description: 'the task to run',
      },
    );
    const ours = () =>
      execFileSync('docker', ['ps', '-aq', '--filter', `label=meshrun.node=${n.peerId}`])
        .toString()
        .trim()
        .split('\n')
        .filter(Boolean);
    assert.ok(ours().length > 0, 'a container runs');
    const t0 = Date.now();
    n.kill('SIGTERM');
    const exit = await n.exited;
    assert.equal(exit.code, 0, 'clean exit');
    assert.ok(Date.now() - t0 < 30_000);
    assert.deepEqual(ours(), [], 'no container left behind');
    const again = await c.start(0, ['--voters', '1']);
    const st = await waitFor(
      async () => {
        const s = JSON.parse((await again.cli(['status', jobId, '--json'])).stdout);
        return s.tasks[0].attempts.length >= 1 && s.tasks[0].attempts[0].outcome ? s : null;
      },
      { timeoutMs: 30_000, description: 'the first attempt to be closed' },
    );
    assert.equal(st.tasks[0].attempts[0].outcome, 'lost', 'handed back to the queue, not failed');
    await again.cli(['cancel', jobId]);
  });
});
