// Jobs end to end on real daemons in network namespaces, with the real Docker engine and the embedded WASM
// executor: submit anywhere, run elsewhere, read everywhere; placement by resources and labels; a node takes
// its job's next task as it reports one done; node loss with fencing of the stale attempt; leader loss under
// load; live logs; malformed specs refused.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Cluster, ClusterNode } from '../src/cluster.ts';
import { requireNetns } from '../src/netns.ts';
import { waitFor } from '../src/proc.ts';
import { requireDocker, TEST_IMAGE } from './lib/docker.ts';
import { cli, cliJson, type Json, jobEnded, newClusterKey, startDaemons } from './lib/namespaced.ts';
import { detachedWasmRun, NOOP_WAT, sleepWat, wasmOf } from './lib/wasm.ts';

const skip = requireNetns() ?? requireDocker();
const HELLO_WAT = new URL('../../core/src/executors/testdata/hello.wat', import.meta.url);
const dir = mkdtempSync(`${tmpdir()}/meshrun-jobs-`);

describe('jobs end to end', { skip, timeout: 420_000 }, () => {
  let c: Cluster;
  let byId: Map<string, ClusterNode>;

  before(async () => {
    c = await startDaemons({
      name: 'jobs',
      hosts: 3,
      keyFile: await newClusterKey('meshrun-jobs-'),
      args: (host) => ['--label', `host=${host.name}`, '--max-concurrent', '60'],
      env: { MESHRUN_NODE_TTL_MS: '2000', MESHRUN_NODE_GRACE_MS: '1000' },
    });
    // Cluster formed: one leader, three voters, seen from every node.
    const status = await waitFor(
      async () => {
        const all = await Promise.all(c.nodes.map((n) => cliJson(n, ['cluster'])));
        return all.every((s) => s.leader && s.leader === all[0]!.leader && s.voters.length === 3)
          ? all[0]
          : null;
      },
      { timeoutMs: 90_000, intervalMs: 300, description: 'a 3-voter cluster with one leader' },
    );
    byId = new Map();
    for (const n of c.nodes) byId.set((await cliJson(n, ['cluster'])).id, n);
    assert.ok(byId.has(status.leader));
  });
  after(async () => c?.destroy());

  /** `meshrun run FLAGS --memory 16M TEST_IMAGE -- sh -c SCRIPT` on node `n`. */
  const shRun = (n: ClusterNode, flags: string[], script: string) =>
    cli(n, ['run', ...flags, '--memory', '16M', TEST_IMAGE, '--', 'sh', '-c', script]);
  const leaderNode = async () => byId.get((await cliJson(c.nodes[0]!, ['cluster'])).leader)!;
  const followers = async () => {
    const l = await leaderNode();
    return c.nodes.filter((n) => n !== l);
  };

  it('a job submitted on a follower runs on another node; status on a third shows the same result', async () => {
    const [f1, f2] = await followers();
    const l = await leaderNode();
    // Pin the task to the leader's host so submitter, runner and reader are three different nodes.
    const r = await cli(f1!, [
      'run',
      '--label-constraint',
      `host=${l.host.name}`,
      '--memory',
      '32M',
      TEST_IMAGE,
      '--',
      'sh',
      '-c',
      'echo ran on $(hostname); exit 3',
    ]);
    assert.equal(r.code, 3, `exit code follows the task's: ${r.stderr}`);
    assert.match(r.stdout, /ran on/);
    const jobs = await cliJson(f2!, ['jobs']);
    const job = jobs.at(-1);
    const st = await cliJson(f2!, ['status', job.jobId]);
    assert.equal(st.state, 'failed');
    assert.equal(st.tasks[0].exitCode, 3);
    assert.equal(byId.get(st.tasks[0].nodeId), l, 'ran on the leader’s host as constrained');
    assert.match(st.tasks[0].stdoutTail, /ran on/);
  });

  it('exit codes follow docker run: 127 command not found, 125 meshrun refused or could not run the job', async () => {
    const n = c.nodes[0]!;
    const missing = await cli(n, ['run', '--memory', '16M', TEST_IMAGE, '--', 'no-such-command']);
    assert.equal(missing.code, 127, missing.stderr);
    const refused = await cli(n, ['run', '--memory', '-5', TEST_IMAGE, '--', 'true']);
    assert.equal(refused.code, 125, refused.stderr);
    const noImage = await cli(n, ['run', '--memory', '16M', '127.0.0.1:1/no-such-image:1', '--', 'true']);
    assert.equal(noImage.code, 125, noImage.stderr);
    assert.match(noImage.stderr, /pull|image/i);
  });

  it('a job needing more memory than any node offers stays queued with a reason', async () => {
    const n = c.nodes[0]!;
    const r = await cli(n, ['run', '--detach', '--memory', '4096G', TEST_IMAGE, '--', 'true']);
    assert.equal(r.code, 0, r.stderr);
    const jobId = r.stdout.trim();
    const st = await waitFor(
      async () => {
        const s = await cliJson(n, ['status', jobId]);
        return s.tasks[0].unplacedReason ? s : null;
      },
      { timeoutMs: 10_000, description: 'an unplaced reason' },
    );
    assert.equal(st.state, 'queued');
    assert.match(st.tasks[0].unplacedReason, /memory/);
    await cli(n, ['cancel', jobId]);
  });

  it('a label constraint places every task only on the matching node', async () => {
    const target = c.nodes[2]!;
    const r = await cli(c.nodes[0]!, [
      'run',
      '--count',
      '4',
      '--label-constraint',
      `host=${target.host.name}`,
      '--memory',
      '16M',
      TEST_IMAGE,
      '--',
      'true',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const job = (await cliJson(c.nodes[0]!, ['jobs'])).at(-1);
    const st = await cliJson(c.nodes[1]!, ['status', job.jobId]);
    assert.equal(st.tasks.length, 4);
    for (const t of st.tasks) assert.equal(byId.get(t.nodeId), target);
  });

  it('logs --follow streams live output and returns when the task ends; finished logs are readable from any peer, also as JSON', async () => {
    const n = c.nodes[1]!;
    const r = await cli(n, [
      'run',
      '--detach',
      '--label-constraint',
      `host=${c.nodes[0]!.host.name}`,
      '--memory',
      '16M',
      TEST_IMAGE,
      '--',
      'sh',
      '-c',
      'for i in 1 2 3 4 5; do echo line-$i; sleep 0.4; done',
    ]);
    const jobId = r.stdout.trim();
    const t0 = Date.now();
    const f = await cli(c.nodes[2]!, ['logs', '--follow', jobId]);
    assert.equal(f.code, 0, f.stderr);
    assert.deepEqual(f.stdout.trim().split('\n'), ['line-1', 'line-2', 'line-3', 'line-4', 'line-5']);
    assert.ok(Date.now() - t0 < 30_000, 'follow returned when the task ended');
    for (const reader of c.nodes) {
      const again = await cli(reader, ['logs', jobId]);
      assert.match(again.stdout, /line-5/, `readable from ${reader.host.name}`);
    }
    // --json: one object per chunk and line, for machines.
    const js = await cli(c.nodes[1]!, ['logs', jobId, '--json']);
    assert.equal(js.code, 0, js.stderr);
    const chunks = js.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.ok(chunks.every((x) => x.taskId === `${jobId}/0` && x.stream === 'stdout' && x.at > 0));
    assert.equal(chunks.map((x) => x.data).join(''), 'line-1\nline-2\nline-3\nline-4\nline-5\n');
  });

  it('run --follow labels every task’s lines; --wait prints the status, not the output; flags that conflict submit nothing', async () => {
    const n = c.nodes[0]!;
    const sh =
      'echo out-$MESHRUN_TASK_INDEX; sleep 0.2; echo err-$MESHRUN_TASK_INDEX >&2; printf tail-$MESHRUN_TASK_INDEX';
    const f = await shRun(n, ['--follow', '--count', '3'], sh);
    assert.equal(f.code, 0, f.stderr);
    // Lines of different tasks interleave; each task's own lines keep their order, the unfinished last one too.
    const out = f.stdout.trim().split('\n');
    assert.deepEqual(
      [...out].sort(),
      ['[0] out-0', '[0] tail-0', '[1] out-1', '[1] tail-1', '[2] out-2', '[2] tail-2'],
      f.stdout,
    );
    for (const i of [0, 1, 2]) assert.ok(out.indexOf(`[${i}] out-${i}`) < out.indexOf(`[${i}] tail-${i}`));
    for (const i of [0, 1, 2]) assert.match(f.stderr, new RegExp(`^\\[${i}\\] err-${i}$`, 'm'));

    const w = await shRun(n, ['--wait'], 'echo hidden; exit 4');
    assert.equal(w.code, 4, w.stderr);
    assert.doesNotMatch(w.stdout, /hidden/);
    assert.match(w.stdout, /failed/);
    assert.match(w.stdout, /exited with code 4/);

    // A retried task: the first attempt streams live, the last one's output follows when the job ends.
    const retried = await shRun(n, ['--retries', '1'], 'echo try; exit 3');
    assert.equal(retried.code, 3, retried.stderr);
    assert.deepEqual(retried.stdout.trim().split('\n'), ['try', 'try'], retried.stdout);
    assert.match(retried.stderr, /attempt 1 ended \(exited with code 3\); the task runs again/);
    assert.match(retried.stderr, /output of attempt 2, the last/);

    const before = (await cliJson(n, ['jobs', '--limit', '10000'])).length;
    const both = await cli(n, ['run', '--detach', '--wait', '--memory', '16M', TEST_IMAGE, '--', 'true']);
    assert.equal(both.code, 125);
    assert.match(both.stderr, /choose one of --detach, --wait and --follow/);
    assert.equal((await cliJson(n, ['jobs', '--limit', '10000'])).length, before, 'nothing was submitted');
  });

  it('submit --follow streams every job’s output labelled NAME/N, WASM jobs from a file too; --wait exits 1 when a job failed or was refused', async () => {
    const n = c.nodes[1]!;
    const file = join(dir, 'batch.yaml');
    const job = (name: string, cmd: string, count = 1) =>
      `- name: ${name}\n  executor: docker\n  image: ${TEST_IMAGE}\n  count: ${count}\n` +
      `  command: [sh, -c, '${cmd}']\n  resources: { cpus: 0.1, memoryBytes: 16777216 }\n`;
    // The third job uses the file shorthands: executor implied, module path relative to the file, sizes.
    mkdirSync(join(dir, 'mods'), { recursive: true });
    writeFileSync(join(dir, 'mods', 'hello.wasm'), await wasmOf(readFileSync(HELLO_WAT, 'utf8')));
    const wasmJob = '- wasm: mods/hello.wasm\n  resources: { cpus: 0.1, memory: 16M }\n  timeout: 30s\n';
    writeFileSync(
      file,
      job('good', 'echo a-$MESHRUN_TASK_INDEX', 2) + job('bad', 'echo b; exit 2') + wasmJob,
    );
    const f = await cli(n, ['submit', '-f', file, '--follow']);
    assert.equal(f.code, 1, 'one job failed');
    const lines = f.stdout.split('\n').filter((l) => l.startsWith('['));
    assert.deepEqual(
      lines.sort(),
      ['[bad/0] b', '[good/0] a-0', '[good/1] a-1', '[hello.wasm/0] hello stdout'],
      f.stdout,
    );
    assert.match(f.stderr, /^\[hello\.wasm\/0\] hello stderr$/m);
    assert.match(f.stdout, /good\s+succeeded/);
    assert.match(f.stdout, /bad\s+failed/);
    assert.match(f.stdout, /hello\.wasm\s+succeeded/);

    // A module that cannot be read refuses the whole file: nothing is submitted.
    const before = (await cliJson(n, ['jobs', '--limit', '10000'])).length;
    writeFileSync(file, job('first', 'true') + '- wasm: mods/missing.wasm\n');
    const missing = await cli(n, ['submit', '-f', file]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /job 2: cannot read the wasm module .*missing\.wasm/);
    assert.equal((await cliJson(n, ['jobs', '--limit', '10000'])).length, before, 'nothing was submitted');

    writeFileSync(file, job('fine', 'true') + '- name: broken\n  executor: docker\n');
    const w = await cli(n, ['submit', '-f', file, '--wait', '--json']);
    assert.equal(w.code, 1, 'one job was refused');
    const results = JSON.parse(w.stdout);
    assert.equal(results.length, 2);
    assert.equal(results[0].state, 'succeeded', 'waited for the accepted job to end');
    assert.match(results[1].error, /image|resources|invalid/i);

    writeFileSync(file, job('fine', 'true'));
    const ok = await cli(n, ['submit', '-f', file, '--wait']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /fine\s+succeeded/);
  });

  it('logs --follow of a task that never gets a node returns as soon as its job is cancelled', async () => {
    const n = c.nodes[2]!;
    const r = await cli(n, ['run', '--detach', '--memory', '4096G', TEST_IMAGE, '--', 'true']);
    assert.equal(r.code, 0, r.stderr);
    const jobId = r.stdout.trim();
    const following = cli(c.nodes[0]!, ['logs', '--follow', jobId], 120_000);
    await new Promise((res) => setTimeout(res, 2000));
    const t0 = Date.now();
    assert.equal((await cli(n, ['cancel', jobId])).code, 0);
    const f = await following;
    assert.equal(f.code, 0, f.stderr);
    assert.equal(f.stdout, '');
    assert.ok(Date.now() - t0 < 10_000, `follow returned ${Date.now() - t0} ms after the cancel`);
  });

  it('drain stops new assignments to a node and lets its running task finish; resume takes work again', async () => {
    const target = c.nodes[1]!;
    const targetId = [...byId].find(([, n]) => n === target)![0];
    const pinned = await cli(c.nodes[0]!, [
      'run',
      '--detach',
      '--label-constraint',
      `host=${target.host.name}`,
      '--memory',
      '16M',
      TEST_IMAGE,
      '--',
      'sh',
      '-c',
      'sleep 3; echo drained-ok',
    ]);
    const pinnedId = pinned.stdout.trim();
    await waitFor(
      async () => (await cliJson(c.nodes[0]!, ['status', pinnedId])).tasks[0].state === 'running',
      { timeoutMs: 20_000, description: 'the pinned task to run' },
    );
    const d = await cli(target, ['node', 'drain']);
    assert.equal(d.code, 0, d.stderr);
    const spread = await cli(c.nodes[2]!, [
      'run',
      '--count',
      '6',
      '--memory',
      '16M',
      TEST_IMAGE,
      '--',
      'true',
    ]);
    assert.equal(spread.code, 0, spread.stderr);
    const job = (await cliJson(c.nodes[2]!, ['jobs'])).at(-1);
    const st = await cliJson(c.nodes[2]!, ['status', job.jobId]);
    for (const t of st.tasks) assert.notEqual(t.nodeId, targetId, 'no new task on the draining node');
    const done = await waitFor(
      async () => {
        const s = await cliJson(c.nodes[0]!, ['status', pinnedId]);
        return s.state === 'succeeded' ? s : null;
      },
      { timeoutMs: 20_000, description: 'the running task to finish on the draining node' },
    );
    assert.equal(done.tasks[0].nodeId, targetId);
    assert.equal((await cli(target, ['node', 'resume'])).code, 0);
    const back = await cli(c.nodes[0]!, [
      'run',
      '--label-constraint',
      `host=${target.host.name}`,
      '--memory',
      '16M',
      TEST_IMAGE,
      '--',
      'echo',
      'back',
    ]);
    assert.equal(back.code, 0, back.stderr);
    assert.match(back.stdout, /back/);
  });

  it('malformed job specs are refused with a clear error and nothing is committed', async () => {
    const n = c.nodes[0]!;
    const before = (await cliJson(n, ['jobs', '--limit', '10000'])).length;
    const bad: [string, Json, RegExp][] = [
      [
        'unknown executor',
        { name: 'x', executor: 'qemu', image: TEST_IMAGE, resources: { cpus: 1, memoryBytes: 1e6 } },
        /executor/,
      ],
      [
        'negative memory',
        { name: 'x', executor: 'docker', image: TEST_IMAGE, resources: { cpus: 1, memoryBytes: -5 } },
        /memory/i,
      ],
      [
        '10 MB env',
        {
          name: 'x',
          executor: 'docker',
          image: TEST_IMAGE,
          resources: { cpus: 1, memoryBytes: 1e6 },
          env: { BIG: 'x'.repeat(10 * 1024 * 1024) },
        },
        /env|exceeds|large|bytes/i,
      ],
      [
        '1,000,000-task sweep',
        {
          name: 'x',
          executor: 'docker',
          image: TEST_IMAGE,
          resources: { cpus: 1, memoryBytes: 1e6 },
          params: { i: { from: 1, to: 1_000_000 } },
        },
        /tasks|sweep|limit/i,
      ],
    ];
    for (const [what, spec, pattern] of bad) {
      const file = `${dir}/${what.replace(/\W+/g, '-')}.json`;
      writeFileSync(file, JSON.stringify(spec));
      const r = await cli(n, ['submit', '-f', file, '--json']);
      assert.notEqual(r.code, 0, `${what} accepted`);
      assert.match(r.stdout + r.stderr, pattern, what);
    }
    assert.equal((await cliJson(n, ['jobs', '--limit', '10000'])).length, before, 'nothing committed');
  });

  it("finish-and-take-next with prefetch: a node that completes a task takes the job's next ones itself, never runs beyond its offer", async () => {
    // Tasks as big as a node's whole CPU offer: one at a time per node, so 3 of the 30 are placed by the leader
    // and every later one must be taken by a node in the report of a task it just finished, in that same log
    // entry: its assignedAt is then exactly that task's endedAt on the same node. The tasks are short, so a
    // report asks for more than its successor (prefetch): those wait on the node, assigned, for its one slot.
    const nodes = (await cliJson(c.nodes[0]!, ['nodes'])) as Json[];
    const cpus = Math.min(...nodes.map((n) => n.offered.cpus as number));
    const wasm = join(dir, 'noop.wasm');
    writeFileSync(wasm, await wasmOf(NOOP_WAT));
    const count = 30;
    const r = await cli(c.nodes[1]!, detachedWasmRun(wasm, count, cpus));
    assert.equal(r.code, 0, r.stderr);
    const jobId = r.stdout.trim();
    await jobEnded(c.nodes[2]!, jobId);
    const done = await cliJson(c.nodes[2]!, ['status', jobId]);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.counts));
    const attempts = (done.tasks as Json[]).map((t) => {
      assert.equal(t.attempts.length, 1, `task ${t.taskId} ran once`);
      return t.attempts[0] as { nodeId: string; assignedAt: number; startedAt: number; endedAt: number };
    });
    let taken = 0;
    let heldReady = 0;
    let mostInOneReport = 0;
    for (const nodeId of new Set(attempts.map((a) => a.nodeId))) {
      const mine = attempts.filter((a) => a.nodeId === nodeId).sort((a, b) => a.startedAt - b.startedAt);
      for (let i = 1; i < mine.length; i++) {
        // Never two running at once on one node: the offer holds one such task.
        assert.ok(mine[i]!.startedAt >= mine[i - 1]!.endedAt, `two tasks at once on ${nodeId}`);
        if (mine[i]!.assignedAt < mine[i - 1]!.endedAt) heldReady++;
      }
      const grantsByReport = new Map<number, number>();
      for (const a of mine) {
        if (!mine.some((b) => b !== a && b.endedAt === a.assignedAt)) continue;
        taken++;
        grantsByReport.set(a.assignedAt, (grantsByReport.get(a.assignedAt) ?? 0) + 1);
      }
      mostInOneReport = Math.max(mostInOneReport, ...grantsByReport.values());
    }
    const byLeader = count - taken;
    assert.ok(
      byLeader <= 3,
      `${byLeader} of ${count} tasks were placed by the leader, expected one per node`,
    );
    assert.ok(heldReady > 0, 'no task was held ready on a node while its slot was busy');
    assert.ok(mostInOneReport > 1, 'no finish report took more than its successor');
  });

  it('draining a node hands back the tasks it held ready, at no cost to them, and another node runs them', async () => {
    // Short tasks as big as a node's CPU offer: each node runs one at a time and holds a few more ready
    // (prefetch). Those are assigned to it in the log but never started: drained, it must give them back
    // so they run elsewhere, without using up their one attempt.
    const nodes = (await cliJson(c.nodes[0]!, ['nodes'])) as Json[];
    const cpus = Math.min(...nodes.map((n) => n.offered.cpus as number));
    const wasm = join(dir, 'sleep.wasm');
    writeFileSync(wasm, await wasmOf(sleepWat(0.5)));
    const target = c.nodes[1]!;
    const targetId = [...byId].find(([, n]) => n === target)![0];
    const r = await cli(c.nodes[0]!, detachedWasmRun(wasm, 60, cpus));
    assert.equal(r.code, 0, r.stderr);
    const jobId = r.stdout.trim();
    const heldOnTarget = await waitFor(
      async () => {
        const s = await cliJson(c.nodes[0]!, ['status', jobId]);
        const held = (s.tasks as Json[]).filter((t) => t.nodeId === targetId && t.state === 'assigned');
        return held.length >= 3 ? held.map((t) => t.taskId as string) : null;
      },
      { timeoutMs: 30_000, intervalMs: 50, description: 'the target node to hold tasks ready' },
    );
    const drained = Date.now();
    assert.equal((await cli(target, ['node', 'drain'])).code, 0);
    try {
      const done = await jobEnded(c.nodes[2]!, jobId);
      assert.equal(done.state, 'succeeded', JSON.stringify(done.counts));
      assert.deepEqual(done.attemptOutcomes, { succeeded: 60 }, 'no attempt was lost or failed');
      const st = await cliJson(c.nodes[2]!, ['status', jobId]);
      const tasks = new Map((st.tasks as Json[]).map((t) => [t.taskId as string, t]));
      // The one it was running when drained may have finished there; at least one other went elsewhere.
      const movedElsewhere = heldOnTarget.filter((id) => tasks.get(id)!.attempts[0].nodeId !== targetId);
      assert.ok(movedElsewhere.length >= 1, `held ${heldOnTarget.join(', ')}; none ran elsewhere`);
      for (const t of tasks.values()) {
        assert.equal(t.attempts.length, 1, `${t.taskId} ran once`);
        const a = t.attempts[0] as { nodeId: string; startedAt: number };
        // A second of slack: the drain is applied a little after the CLI was started.
        if (a.nodeId === targetId)
          assert.ok(a.startedAt < drained + 1000, `${t.taskId} started after the drain`);
      }
    } finally {
      assert.equal((await cli(target, ['node', 'resume'])).code, 0);
    }
  });

  it('the whole machine stalls past the node TTL (every daemon stopped, then resumed): no running task is re-queued', async () => {
    // A laptop that sleeps, or a host swamped for a while: the leader could not run either, so the time it
    // did not hear from the others says nothing about them (and their heartbeats are still unread when its
    // timers fire first on resume).
    const submitter = c.nodes[0]!;
    const r = await cli(submitter, [
      'run',
      '--detach',
      '--count',
      '6',
      '--memory',
      '16M',
      TEST_IMAGE,
      '--',
      'sleep',
      '8',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const jobId = r.stdout.trim();
    await waitFor(
      async () => {
        const s = await cliJson(submitter, ['status', jobId]);
        return (s.tasks as Json[]).every((t) => t.state === 'running');
      },
      { timeoutMs: 30_000, intervalMs: 200, description: 'all six tasks to run' },
    );
    for (const n of c.nodes) n.proc.kill('SIGSTOP');
    // Past TTL + grace (2 s + 1 s here), with margin.
    await new Promise((resolve) => setTimeout(resolve, 5000));
    for (const n of c.nodes) n.proc.kill('SIGCONT');
    const done = await jobEnded(submitter, jobId);
    assert.equal(done.state, 'succeeded', JSON.stringify(done.counts));
    assert.deepEqual(done.attemptOutcomes, { succeeded: 6 }, 'no attempt was declared lost');
  });

  it('kill -9 of the node running a long task: it re-runs elsewhere and succeeds (a lost attempt is not a retry); the old node does not report the stale attempt', async () => {
    const submitter = c.nodes[0]!;
    const victim = c.nodes[2]!;
    // No retries: losing its node uses up none of the task's attempts.
    const r = await cli(submitter, [
      'run',
      '--detach',
      '--memory',
      '16M',
      TEST_IMAGE,
      '--',
      'sh',
      '-c',
      'echo start; sleep 6; echo done',
    ]);
    const jobId = r.stdout.trim();
    // Wait until it runs, then kill whichever node runs it (not the submitter if we can help it).
    const running = await waitFor(
      async () => {
        const s = await cliJson(submitter, ['status', jobId]);
        return s.tasks[0].state === 'running' ? s : null;
      },
      { timeoutMs: 20_000, description: 'the task to run' },
    );
    const runner = byId.get(running.tasks[0].nodeId)!;
    const reader = c.nodes.find((n) => n !== runner)!;
    runner.proc.kill('SIGKILL');
    await runner.proc.exited;
    const done = await waitFor(
      async () => {
        const s = await cliJson(reader, ['status', jobId]);
        return s.state === 'succeeded' ? s : null;
      },
      { timeoutMs: 60_000, intervalMs: 500, description: 'the task to succeed elsewhere' },
    );
    const t = done.tasks[0];
    assert.ok(t.attempt >= 2, 'a second attempt ran');
    assert.deepEqual(
      t.attempts.map((a: { outcome: string }) => a.outcome).slice(-1),
      ['succeeded'],
      'the job had one attempt to spend and spent it on the run that succeeded',
    );
    assert.notEqual(byId.get(t.nodeId), runner, 'it ran on another node');
    assert.equal(t.attempts[0].outcome, 'lost');
    await runner.restart();
    await new Promise((res) => setTimeout(res, 4000));
    const after = await cliJson(reader, ['status', jobId]);
    assert.equal(after.state, 'succeeded');
    assert.equal(after.tasks[0].attempt, t.attempt, 'no new attempt');
    assert.equal(
      after.tasks[0].attempts[0].outcome,
      'lost',
      'the stale attempt was not reported as a result',
    );
    void victim;
  });

  it('kill -9 of the leader while 200 jobs are queued and running: all 200 finish exactly once', async () => {
    const l = await leaderNode();
    const submitter = c.nodes.find((n) => n !== l)!;
    const specs = Array.from({ length: 200 }, (_, i) => ({
      name: `bulk-${i}`,
      executor: 'docker',
      image: TEST_IMAGE,
      command: ['sh', '-c', `echo bulk-${i}`],
      resources: { cpus: 0.1, memoryBytes: 16 * 1024 * 1024 },
      retry: { maxAttempts: 3, backoffMs: 200 },
    }));
    const file = `${dir}/bulk.json`;
    writeFileSync(file, JSON.stringify(specs));
    const sub = await cli(submitter, ['submit', '-f', file, '--json'], 120_000);
    assert.equal(sub.code, 0, sub.stderr);
    const ids = (JSON.parse(sub.stdout) as { jobId: string }[]).map((x) => x.jobId);
    assert.equal(ids.length, 200);
    l.proc.kill('SIGKILL');
    await l.proc.exited;
    const survivor = c.nodes.find((n) => n !== l && n.proc.exitInfo === undefined)!;
    await waitFor(
      async () => {
        const s = await cliJson(survivor, ['cluster']);
        return s.leader && byId.get(s.leader) !== l;
      },
      { timeoutMs: 20_000, description: 'a new leader' },
    );
    await l.restart();
    const jobs = await waitFor(
      async () => {
        const all = (await cliJson(survivor, ['jobs', '--limit', '10000'])) as Json[];
        const mine = all.filter((j) => ids.includes(j.jobId));
        return mine.length === 200 && mine.every((j) => j.state === 'succeeded') ? mine : null;
      },
      { timeoutMs: 240_000, intervalMs: 1000, description: 'all 200 jobs to succeed' },
    );
    assert.equal(jobs.length, 200);
    for (const j of jobs) {
      assert.equal(
        j.attemptOutcomes.succeeded,
        1,
        `${j.jobId} succeeded exactly once: ${JSON.stringify(j.attemptOutcomes)}`,
      );
    }
  });
});
