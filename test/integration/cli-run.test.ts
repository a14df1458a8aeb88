// `meshrun run` as a user runs it in a terminal, against a real one-node cluster with the real Docker engine:
// Ctrl-C while attached stops the job, as `docker run` stops its container, instead of leaving it running on
// the cluster with nobody watching.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { P2pClient } from '@meshrun/headless/client.ts';
import {
  childEnv,
  type LoopbackCluster,
  MESHRUN_CLI,
  NODE_BIN,
  newLoopbackCluster,
  runCli,
} from '@meshrun/headless/local-cluster.ts';
import { JOB_LIMITS } from '@meshrun/protocol';
import { describeResult, waitFor } from '../src/proc.ts';
import { requireDocker, TEST_IMAGE } from './lib/docker.ts';
import { wasmOf } from './lib/wasm.ts';

const skip = requireDocker();
const HELLO_WAT = new URL('../../core/src/executors/testdata/hello.wat', import.meta.url);

/** `meshrun run … TEST_IMAGE -- sh -c SCRIPT` in its own process, its output collected as it comes. */
function startRun(dataDir: string, script: string) {
  const args = ['run', '--memory', '16M', TEST_IMAGE, '--', 'sh', '-c', script];
  const child = spawn(NODE_BIN, [MESHRUN_CLI, '--data-dir', dataDir, ...args], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => {
    out.stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out.stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out, exited };
}

describe('meshrun run in a terminal', { skip }, () => {
  let c: LoopbackCluster;
  before(async () => {
    c = await newLoopbackCluster({ prefix: 'meshrun-cli-run-' });
    await c.start(0, [], { MESHRUN_VOTERS: '1' });
    await waitFor(
      async () => {
        const r = await c.nodes[0]!.cli(['cluster', '--json']);
        return r.code === 0 && JSON.parse(r.stdout).leader;
      },
      { timeoutMs: 30_000, description: 'a one-node cluster with a leader' },
    );
  });
  after(async () => c?.destroy());

  it('Ctrl-C cancels the job, stops its container, and exits 130 once it has ended', async () => {
    const node = c.nodes[0]!;
    const script = 'echo started; sleep 60; echo never';
    const run = startRun(node.dataDir, script);
    try {
      await waitFor(() => run.out.stdout.includes('started'), {
        timeoutMs: 30_000,
        description: 'the task to print its first line',
      });
      const t0 = Date.now();
      run.child.kill('SIGINT');
      const code = await run.exited;
      assert.equal(code, 130, `${run.out.stdout}\n${run.out.stderr}`);
      assert.ok(Date.now() - t0 < 20_000, `exited ${Date.now() - t0} ms after Ctrl-C`);
      assert.match(run.out.stderr, /cancelling job \S+ \(Ctrl-C again to stop waiting for it\)/);
      assert.doesNotMatch(run.out.stdout, /never/);
      const jobs = await node.cli(['jobs', '--json']);
      assert.equal(jobs.code, 0, describeResult(jobs));
      const job = JSON.parse(jobs.stdout).at(-1);
      assert.equal(job.state, 'cancelled');
      const st = JSON.parse((await node.cli(['status', job.jobId, '--json'])).stdout);
      assert.equal(st.tasks[0].state, 'cancelled');
      assert.ok(st.tasks[0].attempts[0].endedAt - t0 < 20_000, 'the run ended at the cancel, not after 60 s');
    } finally {
      run.child.kill('SIGKILL');
    }
  });

  it('a 10,000-task job too big for one control message is paged: status and run --wait over libp2p', async () => {
    // Each task's view (attempts, output tails) is ~0.5 KB: the whole job is ~5 MB, over the 4 MiB a control
    // message may carry, so a reply that held every task was refused by the node.
    const node = c.nodes[0]!;
    const wasm = join(c.dir, 'hello.wasm');
    writeFileSync(wasm, await wasmOf(readFileSync(HELLO_WAT, 'utf8')));
    const peer = ['--peer', node.addr, '--cluster-key', c.clusterKey];
    const args = ['run', '--wait', '--count', '10000', '--cpus', '0.01', '--memory', '16M', '--wasm', wasm];
    const r = await runCli([...peer, ...args], { timeoutMs: 240_000 });
    assert.equal(r.code, 0, describeResult(r));
    assert.match(r.stdout, /succeeded — 10000 tasks: 10000 succeeded/);
    const jobId = /job (\S+)/.exec(r.stdout)![1]!;
    const st = await runCli([...peer, 'status', jobId, '--json'], { timeoutMs: 120_000 });
    assert.equal(st.code, 0, describeResult(st));
    const view = JSON.parse(st.stdout);
    assert.equal(view.tasks.length, 10_000);
    assert.deepEqual(
      view.tasks.map((t: { index: number }) => t.index),
      Array.from({ length: 10_000 }, (_, i) => i),
      'every task once, in order',
    );
    assert.ok(view.tasks.every((t: { stdoutTail: string }) => t.stdoutTail === 'hello stdout\n'));
    assert.equal(view.nextTaskFrom, undefined);
  });

  it('a list of jobs too big for one control message is paged: jobs over libp2p', async () => {
    // 4,500 queued jobs with the longest name and image the spec allows: ~1 KB each, 4.5 MB in all.
    const node = c.nodes[0]!;
    const client = await P2pClient.create(node.addr, c.clusterKey);
    const before = JSON.parse((await node.cli(['jobs', '--limit', '10000', '--json'])).stdout).length;
    try {
      const spec = (i: number) => ({
        name: `${String(i).padStart(5, '0')}-${'n'.repeat(JOB_LIMITS.maxNameLength - 6)}`,
        executor: 'docker',
        image: `registry.invalid/${'i'.repeat(JOB_LIMITS.maxImageLength - 17)}`,
        resources: { cpus: 1, memoryBytes: JOB_LIMITS.maxMemoryBytes }, // more than any node: stays queued
      });
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < 4500) await client.call('jobs.submit', { spec: spec(next++) }, { timeoutMs: 30_000 });
        }),
      );
    } finally {
      await client.close();
    }
    const peer = ['--peer', node.addr, '--cluster-key', c.clusterKey];
    const r = await runCli([...peer, 'jobs', '--limit', '10000', '--json'], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, describeResult(r));
    const jobs = JSON.parse(r.stdout) as { jobId: string; name: string }[];
    assert.equal(jobs.length, before + 4500);
    assert.equal(new Set(jobs.map((j) => j.jobId)).size, jobs.length, 'no job twice across pages');
    const ours = jobs.slice(before).map((j) => j.name.slice(0, 5));
    assert.deepEqual(
      [...ours].sort(),
      Array.from({ length: 4500 }, (_, i) => String(i).padStart(5, '0')),
      'every job submitted, and no older one among them',
    );
    // The newest three, as one small page, are the end of the long list: the pages join in order.
    const last = await runCli([...peer, 'jobs', '--limit', '3', '--json']);
    assert.deepEqual(
      JSON.parse(last.stdout).map((j: { jobId: string }) => j.jobId),
      jobs.slice(-3).map((j) => j.jobId),
    );
  });

  it('a second Ctrl-C stops waiting at once', async () => {
    const node = c.nodes[0]!;
    const run = startRun(node.dataDir, 'echo up; sleep 60');
    try {
      await waitFor(() => run.out.stdout.includes('up'), {
        timeoutMs: 30_000,
        description: 'the task to print its first line',
      });
      run.child.kill('SIGINT');
      await waitFor(() => run.out.stderr.includes('cancelling job'), {
        timeoutMs: 10_000,
        description: 'the first Ctrl-C to be taken',
      });
      const t0 = Date.now();
      run.child.kill('SIGINT');
      assert.equal(await run.exited, 130);
      assert.ok(Date.now() - t0 < 2000, `exited ${Date.now() - t0} ms after the second Ctrl-C`);
    } finally {
      run.child.kill('SIGKILL');
    }
  });
});
