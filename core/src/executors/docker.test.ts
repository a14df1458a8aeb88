/** Docker executor against the real engine. Independent cases run concurrently to keep the file fast. */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Level } from 'level';
import { DockerExecutor, LABEL_NODE } from './docker.ts';
import { TaskLogStore } from './log-store.ts';
import { basePolicy, dockerSkipReason, dockerSpec, recorder } from './test-support.ts';

const skip = await dockerSkipReason();
const nodeId = `docker-test-${process.pid}`;
const executor = new DockerExecutor({ nodeId, stopGraceMs: 1000 });

async function ours(): Promise<{ containers: number; volumes: number }> {
  const filters = { label: [`${LABEL_NODE}=${nodeId}`] };
  const c = await executor.docker.listContainers({ all: true, filters });
  const v = await executor.docker.listVolumes({ filters });
  return { containers: c.length, volumes: (v.Volumes ?? []).length };
}

describe('DockerExecutor (real engine)', { skip, concurrency: 6 }, () => {
  before(async () => {
    await executor.cleanupLeftovers();
  });
  after(async () => {
    // Every run removes what it created: nothing of ours may be left.
    assert.deepEqual(await ours(), { containers: 0, volumes: 0 });
  });

  it('is available and reports the engine version', async () => {
    const a = await executor.available();
    assert.equal(a.ok, true);
    assert.match(a.version ?? '', /^\d+\./);
  });

  it('runs a command: exit code, env, default workdir, non-root user, per-stream order', async () => {
    const rec = recorder();
    const r = await executor.run(
      dockerSpec({
        command: [
          'sh',
          '-c',
          'echo "$GREETING"; pwd; id -u; for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 3',
        ],
        env: { GREETING: 'hello from env' },
      }),
      { policy: basePolicy, onEvent: rec.onEvent },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(r.exitCode, 3);
    assert.equal(rec.text('stdout'), 'hello from env\n/scratch\n65534\nout1\nout2\nout3\n');
    assert.equal(rec.text('stderr'), 'err1\nerr2\nerr3\n');
    assert.equal(rec.events[0].type, 'started', 'started comes before any output');
    assert.ok(r.startedAt && r.endedAt >= r.startedAt);
  });

  it('streams output as it is produced, not at the end', async () => {
    const rec = recorder();
    let firstSeenAt = 0;
    const r = await executor.run(dockerSpec({ command: ['sh', '-c', 'echo first; sleep 1; echo second'] }), {
      policy: basePolicy,
      onEvent: (e) => {
        if (e.type === 'output' && !firstSeenAt) firstSeenAt = Date.now();
        rec.onEvent(e);
      },
    });
    assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(rec.text('stdout'), 'first\nsecond\n');
    assert.ok(
      r.endedAt - firstSeenAt >= 800,
      `first line arrived ${r.endedAt - firstSeenAt} ms before the end`,
    );
  });

  it('times out (the timer starts at container start) and kills the task', async () => {
    const started = Date.now();
    const r = await executor.run(dockerSpec({ command: ['sleep', '60'], timeoutMs: 700 }), {
      policy: basePolicy,
      onEvent: () => {},
    });
    assert.equal(r.outcome, 'timeout', r.reason);
    assert.ok(Date.now() - started < 8000);
    assert.ok(r.endedAt - r.startedAt! >= 700);
  });

  it('cancels through the AbortSignal: stop with grace, then kill', async () => {
    const ac = new AbortController();
    const r = await executor.run(dockerSpec({ command: ['sh', '-c', 'echo ready; sleep 60'] }), {
      policy: basePolicy,
      signal: ac.signal,
      onEvent: (e) => {
        if (e.type === 'output') ac.abort();
      },
    });
    assert.equal(r.outcome, 'cancelled', r.reason);
    assert.ok(r.endedAt - r.startedAt! < 8000);
  });

  it("lets the image's own user stand when the operator allows it", async () => {
    const rec = recorder();
    const imageUser = new DockerExecutor({ nodeId, useImageUser: true });
    const r = await imageUser.run(
      dockerSpec({ command: ['sh', '-c', 'id -u; echo x > /tmp/t && echo tmp-ok'] }),
      {
        policy: basePolicy,
        onEvent: rec.onEvent,
      },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(rec.text('stdout'), '0\ntmp-ok\n'); // the test image has no USER: root, still without capabilities
  });

  it('reports an OOM kill when the task allocates past its memory cap', async () => {
    const r = await executor.run(
      dockerSpec({
        // Holds ~200 MB in a shell variable under a 32 MiB cap.
        command: [
          'sh',
          '-c',
          'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived $(echo "$x" | wc -c)',
        ],
        resources: { cpus: 1, memoryBytes: 32 * 1024 * 1024 },
      }),
      { policy: basePolicy, onEvent: () => {} },
    );
    assert.equal(r.outcome, 'oom', r.reason);
  });

  it('stops a fork bomb at the pids limit', async () => {
    const rec = recorder();
    const r = await executor.run(
      dockerSpec({
        command: [
          'sh',
          '-c',
          // Counting with builtins only: at the limit, a command substitution could not fork either.
          'i=0; f=0; while [ $i -lt 100 ]; do (sleep 30 &) 2>/dev/null || f=$((f+1)); i=$((i+1)); done; ' +
            'n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo procs=$n failed=$f',
        ],
        resources: { cpus: 0.5, memoryBytes: 64 * 1024 * 1024, pids: 16 },
      }),
      { policy: basePolicy, onEvent: rec.onEvent },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    const [, procs, failed] = (/procs=(\d+) failed=(\d+)/.exec(rec.text('stdout')) ?? []).map(Number);
    assert.ok(procs <= 16, `${procs} processes despite a limit of 16`);
    assert.ok(failed >= 80, `only ${failed} of 100 forks were refused`);
  });

  it('has no network by default (only loopback)', async () => {
    const rec = recorder();
    const r = await executor.run(
      dockerSpec({
        command: ['sh', '-c', 'ls /sys/class/net; nc -w 1 8.8.8.8 53 </dev/null && echo CONNECTED'],
      }),
      {
        policy: basePolicy,
        onEvent: rec.onEvent,
      },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(rec.text('stdout').trim(), 'lo');
  });

  it('gets a bridge network only when both the spec and the policy allow it', async () => {
    const rec = recorder();
    const r = await executor.run(dockerSpec({ command: ['ls', '/sys/class/net'], network: true }), {
      policy: { ...basePolicy, allowNetwork: true },
      onEvent: rec.onEvent,
    });
    assert.equal(r.outcome, 'exited', r.reason);
    assert.match(rec.text('stdout'), /eth0/);
  });

  it('has a read-only root filesystem; /scratch and /tmp are writable and /scratch is size-limited', async () => {
    const rec = recorder();
    const r = await executor.run(
      dockerSpec({
        command: [
          'sh',
          '-c',
          'touch /etc/evil 2>&1; touch /evil 2>&1; echo a > /scratch/ok && echo scratch-ok; echo b > /tmp/ok && echo tmp-ok; ' +
            'head -c 20000000 /dev/zero > /scratch/big 2>&1 || echo scratch-full',
        ],
      }),
      { policy: basePolicy, onEvent: rec.onEvent },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    const out = rec.text('stdout');
    assert.equal(out.match(/Read-only file system/g)?.length, 2, out);
    assert.match(out, /scratch-ok/);
    assert.match(out, /tmp-ok/);
    assert.match(out, /scratch-full/);
  });

  it('creates the container sandboxed (inspected while it runs)', async () => {
    let inspected: Record<string, unknown> | null = null;
    const r = await executor.run(
      dockerSpec({ command: ['sleep', '1'], resources: { cpus: 0.25, memoryBytes: 48 << 20 } }),
      {
        policy: basePolicy,
        onEvent: (e) => {
          if (e.type !== 'started') return;
          void executor.docker
            .listContainers({
              filters: { label: [`${LABEL_NODE}=${nodeId}`, 'meshrun.role=task'], status: ['running'] },
            })
            .then(async (list) => {
              for (const c of list) {
                // A container of an earlier test may be going away meanwhile (404): not the one we look for.
                const info = await executor.docker
                  .getContainer(c.Id)
                  .inspect()
                  .catch(() => null);
                if (info?.Config.Cmd?.join(' ') === 'sleep 1')
                  inspected = { ...info.HostConfig, User: info.Config.User };
              }
            });
        },
      },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    assert.ok(inspected, 'container seen while running');
    const h = inspected as Record<string, unknown>;
    assert.equal(h.Privileged, false);
    assert.deepEqual(h.CapDrop, ['ALL']);
    assert.deepEqual(h.SecurityOpt, ['no-new-privileges']);
    assert.equal(h.ReadonlyRootfs, true);
    assert.equal(h.NetworkMode, 'none');
    assert.equal(h.Memory, 48 << 20);
    assert.equal(h.MemorySwap, 48 << 20);
    assert.equal(h.PidsLimit, basePolicy.maxPids);
    assert.equal(h.CpuShares, 2);
    assert.equal(h.NanoCpus, 250_000_000);
    assert.equal(h.User, '65534:65534');
    assert.equal(h.OomScoreAdj, 1000);
    assert.deepEqual(h.Binds ?? [], []);
  });

  it('copies inputs into scratch and collects outputs (holder-kept scratch volume)', async () => {
    const rec = recorder();
    const r = await executor.run(
      dockerSpec({
        command: [
          'sh',
          '-c',
          'cat in/data.txt; tr a-z A-Z < in/data.txt > result.txt; mkdir -p out; echo 1 > out/x; echo 2 > out/y',
        ],
        inputs: [{ path: 'in/data.txt', content: Buffer.from('hello input\n') }],
        outputs: ['result.txt', 'out', 'never-written'],
      }),
      { policy: basePolicy, onEvent: rec.onEvent },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    // Every write into the shared scratch succeeded (a failed one would show here, not only as missing files).
    assert.equal(r.exitCode, 0, `stderr: ${rec.text('stderr')}`);
    assert.equal(rec.text('stdout'), 'hello input\n');
    const files = Object.fromEntries(
      (r.outputs ?? []).map((f) => [f.path, Buffer.from(f.content).toString()]),
    );
    assert.deepEqual(files, { 'result.txt': 'HELLO INPUT\n', 'out/x': '1\n', 'out/y': '2\n' }, r.reason);
  });

  it('outputs lost with a stopped holder are an error, not files that were never written', async () => {
    const spec = dockerSpec({
      command: ['sh', '-c', 'sleep 1; echo 1 > result.txt'],
      outputs: ['result.txt'],
    });
    let killed: Promise<unknown> | null = null;
    const r = await executor.run(spec, {
      policy: basePolicy,
      onEvent: (e) => {
        if (e.type !== 'started') return;
        // What an engine restart or a stray `docker kill` would do to the holder while the task runs.
        killed = executor.docker
          .listContainers({
            filters: {
              label: [`${LABEL_NODE}=${nodeId}`, `meshrun.task=${spec.taskId}`, 'meshrun.role=holder'],
            },
          })
          .then((list) => Promise.all(list.map((c) => executor.docker.getContainer(c.Id).kill())));
      },
    });
    assert.ok(killed, 'the task started');
    assert.equal(((await killed) as unknown[]).length, 1, 'one holder killed');
    assert.equal(r.outcome, 'error', r.reason);
    assert.match(r.reason, /holder container stopped .* before the outputs were read/);
    assert.equal(r.exitCode, 0, 'the task itself succeeded');
  });

  it('feeds the task log store live; follow() ends when the task ends', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'meshrun-docker-logs-'));
    const db = new Level<string, string>(dir);
    try {
      const store = new TaskLogStore(db, { maxBytesPerTask: 1024 });
      const spec = dockerSpec({
        command: ['sh', '-c', 'echo one; sleep 0.3; echo two >&2; head -c 5000 /dev/zero'],
      });
      const followed: string[] = [];
      const following = (async () => {
        for await (const e of store.follow(spec.taskId)) followed.push(e.stream);
      })();
      const r = await executor.run(spec, { policy: basePolicy, onEvent: store.sink(spec.taskId) });
      await store.end(spec.taskId); // queued after the sink's appends
      await following;
      assert.equal(r.outcome, 'exited', r.reason);
      const page = await store.read(spec.taskId);
      assert.equal(page.ended, true);
      assert.ok(page.droppedBytes > 0, 'the 5000 zero bytes overflowed the 1 KiB cap');
      // Cross-stream arrival order is not guaranteed, so check the accounting rather than which chunk survived.
      const stored = page.entries.reduce((n, e) => n + e.data.byteLength, 0);
      assert.ok(stored <= 1024);
      assert.equal(stored + page.droppedBytes, 4 + 4 + 5000);
      assert.ok(followed.includes('stdout') && followed.includes('stderr'));
    } finally {
      await db.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('measures CPU time and peak memory from engine stats', async () => {
    const r = await executor.run(
      dockerSpec({
        command: [
          'sh',
          '-c',
          'x=$(head -c 8000000 /dev/zero | tr "\\0" a); end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do :; done',
        ],
        resources: { cpus: 1, memoryBytes: 128 << 20 },
      }),
      { policy: basePolicy, onEvent: () => {} },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    assert.ok(r.usage.cpuMs > 300, `cpuMs ${r.usage.cpuMs}`);
    assert.ok(r.usage.peakMemoryBytes > 1 << 20, `peak ${r.usage.peakMemoryBytes}`);
  });

  it('reports a task killed by a signal as signaled', async () => {
    const r = await executor.run(dockerSpec({ command: ['sh', '-c', 'kill -TERM $$; sleep 5'] }), {
      policy: basePolicy,
      onEvent: () => {},
    });
    // PID 1 ignores SIGTERM by default; a child shell does not.
    const r2 = await executor.run(
      dockerSpec({ command: ['sh', '-c', 'sh -c "kill -KILL \\$\\$"; exit $?'] }),
      {
        policy: basePolicy,
        onEvent: () => {},
      },
    );
    assert.ok(['exited', 'signaled'].includes(r.outcome));
    assert.equal(r2.outcome, 'signaled', r2.reason);
    assert.equal(r2.signal, 'SIGKILL');
    assert.equal(r2.exitCode, 137);
  });

  it('refuses privileged, host-mount, host-network and disallowed-network specs before creating anything', async () => {
    for (const [extra, pattern] of [
      [{ privileged: true }, /privileged/],
      [{ binds: ['/:/host'] }, /host mounts/],
      [{ networkMode: 'host' }, /network mode/],
      [{ network: true }, /network access is not allowed/],
      [{ resources: { cpus: 8, memoryBytes: 1 << 20 } }, /CPUs/],
    ] as const) {
      const rec = recorder();
      // A missing image proves nothing was pulled or created: a non-refused spec would produce pull events.
      const spec = { ...dockerSpec({ image: 'meshrun-test/does-not-exist:1' }), ...extra };
      const r = await executor.run(spec as never, { policy: basePolicy, onEvent: rec.onEvent });
      assert.equal(r.outcome, 'refused');
      assert.match(r.reason, pattern);
      assert.equal(rec.events.length, 0);
    }
  });

  it('refuses GPU tasks with a clear reason when the node has none or the engine lacks the nvidia runtime', async () => {
    const spec = dockerSpec({
      command: ['true'],
      resources: { cpus: 1, memoryBytes: 1 << 24, gpus: { count: 1 } },
    });
    const policy = { ...basePolicy, allowGpu: true };
    const none = await executor.run(spec, { policy, onEvent: () => {} });
    assert.equal(none.outcome, 'refused');
    assert.match(none.reason, /no nvidia GPU/);
    const withGpu = new DockerExecutor({ nodeId, gpus: { nvidia: 1 } });
    const caps = await withGpu.caps();
    const r = await withGpu.run(spec, { policy, onEvent: () => {} });
    if (caps.nvidiaRuntime) assert.notEqual(r.outcome, 'refused');
    else {
      assert.equal(r.outcome, 'refused');
      assert.match(r.reason, /nvidia runtime/);
    }
  });

  it('fails an unknown local-only image as pull-failed, distinct from the task failing', async () => {
    const rec = recorder();
    const r = await executor.run(dockerSpec({ image: '127.0.0.1:1/meshrun-nothing:1', command: ['true'] }), {
      policy: basePolicy,
      onEvent: rec.onEvent,
    });
    assert.equal(r.outcome, 'pull-failed');
    assert.match(r.reason, /pull of 127\.0\.0\.1:1\/meshrun-nothing:1 failed: registry unreachable/);
    assert.equal(r.exitCode, null);
  });

  it("cleanupLeftovers removes only this node's labelled containers and volumes", async () => {
    const other = new DockerExecutor({ nodeId: `${nodeId}-other` });
    const labels = { 'meshrun.managed': 'true', 'meshrun.node': other.nodeId, 'meshrun.task': 'leftover' };
    const c = await other.docker.createContainer({
      Image: 'meshrun-test/busybox:1',
      Cmd: ['sleep', '60'],
      Labels: labels,
    });
    await c.start();
    await other.docker.createVolume({ Name: `meshrun-leftover-${process.pid}`, Labels: labels });
    assert.equal(await other.cleanupLeftovers(), 2);
    assert.equal(await other.cleanupLeftovers(), 0);
  });
});
