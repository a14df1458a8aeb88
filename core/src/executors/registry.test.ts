/**
 * Image pulls against a real local registry (Debian's docker-registry on 127.0.0.1:<free port>): progress
 * events with bytes, unknown image and stopped registry as 'pull-failed'. The engine treats 127.0.0.0/8
 * registries as insecure (plain HTTP) by default.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DockerExecutor } from './docker.ts';
import { basePolicy, dockerSkipReason, dockerSpec, recorder, TEST_IMAGE } from './test-support.ts';
import type { TaskEvent } from './types.ts';

const skip = await dockerSkipReason();
const executor = new DockerExecutor({ nodeId: `registry-test-${process.pid}` });
const docker = (...args: string[]) =>
  execFileSync('docker', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function waitForHttp(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 50;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 500);
  }
  throw new Error(`${url} did not come up in ${timeoutMs} ms`);
}

describe('DockerExecutor image pulls (local registry)', { skip }, () => {
  let dir: string;
  let registry: ChildProcess | null = null;
  let port: number;
  let image: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshrun-registry-'));
    port = await freePort();
    writeFileSync(
      join(dir, 'config.yml'),
      `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\nhttp:\n  addr: 127.0.0.1:${port}\n`,
    );
    registry = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: 'ignore' });
    await waitForHttp(`http://127.0.0.1:${port}/v2/`, 15_000);
    // A fresh layer (random bytes on top of the test image) so the pull really downloads something.
    image = `127.0.0.1:${port}/busybox:1`;
    writeFileSync(join(dir, 'blob'), randomBytes(2 * 1024 * 1024));
    const c = docker('create', TEST_IMAGE, 'true').trim();
    try {
      docker('cp', join(dir, 'blob'), `${c}:/blob`);
      docker('commit', c, image);
    } finally {
      docker('rm', '-f', c);
    }
    docker('push', image);
    docker('rmi', image);
  });

  after(async () => {
    try {
      docker('rmi', '-f', image);
    } catch {
      // already gone
    }
    registry?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    await executor.cleanupLeftovers();
  });

  it('pulls a missing image with progress events, then runs it; pull time is not task time', async () => {
    const rec = recorder();
    const r = await executor.run(
      dockerSpec({ image, command: ['sh', '-c', 'wc -c < /blob'], timeoutMs: 5000 }),
      {
        policy: basePolicy,
        onEvent: rec.onEvent,
      },
    );
    assert.equal(r.outcome, 'exited', r.reason);
    assert.equal(rec.text('stdout').trim(), String(2 * 1024 * 1024));
    const pulls = rec.events.filter((e): e is Extract<TaskEvent, { type: 'pull' }> => e.type === 'pull');
    assert.ok(pulls.length >= 3, `${pulls.length} pull events`);
    assert.ok(
      pulls.some((e) => e.layer && (e.totalBytes ?? 0) > 0 && (e.currentBytes ?? 0) > 0),
      'byte progress',
    );
    assert.ok(pulls.some((e) => /Pull complete|Download complete/.test(e.status)));
    const startedIdx = rec.events.findIndex((e) => e.type === 'started');
    assert.ok(
      startedIdx > rec.events.lastIndexOf(pulls[pulls.length - 1]),
      'all pull events come before started',
    );
  });

  it('cancels during a pull as cancelled, without starting the task', async () => {
    docker('rmi', '-f', image);
    const ac = new AbortController();
    const rec = recorder();
    const r = await executor.run(dockerSpec({ image, command: ['true'] }), {
      policy: basePolicy,
      signal: ac.signal,
      onEvent: (e) => {
        rec.onEvent(e);
        if (e.type === 'pull' && e.layer) ac.abort(); // mid-pull, once the engine reports layers
      },
    });
    assert.equal(r.outcome, 'cancelled', r.reason);
    assert.match(r.reason, /while pulling/);
    assert.ok(!rec.events.some((e) => e.type === 'started'));
  });

  it('fails an image the registry does not have as pull-failed', async () => {
    const r = await executor.run(
      dockerSpec({ image: `127.0.0.1:${port}/no-such-image:1`, command: ['true'] }),
      {
        policy: basePolicy,
        onEvent: () => {},
      },
    );
    assert.equal(r.outcome, 'pull-failed');
    assert.match(
      r.reason,
      /pull of 127\.0\.0\.1:\d+\/no-such-image:1 failed: image not found: .*(not found|unknown)/i,
    );
  });

  it('fails as pull-failed when the registry is stopped', async () => {
    docker('rmi', '-f', image);
    registry?.kill('SIGKILL');
    await new Promise((r) => registry?.once('exit', r));
    registry = null;
    const r = await executor.run(dockerSpec({ image, command: ['true'] }), {
      policy: basePolicy,
      onEvent: () => {},
    });
    assert.equal(r.outcome, 'pull-failed');
    assert.match(r.reason, /failed: registry unreachable: .*connection refused/i);
  });
});
