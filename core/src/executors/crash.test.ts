/** Crash recovery: a node process killed with SIGKILL mid-task leaves containers; cleanupLeftovers removes them. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DockerExecutor, LABEL_NODE } from './docker.ts';
import { dockerSkipReason } from './test-support.ts';
import { WasmExecutor } from './wasm.ts';

const skip = await dockerSkipReason();

describe('crash recovery', { skip }, () => {
  it('removes the containers, holder and scratch volume of a SIGKILLed node, and its wasm temp dir', async () => {
    const nodeId = `crash-test-${process.pid}`;
    const tmpRoot = await mkdtemp(join(tmpdir(), 'meshrun-crash-'));
    const child = spawn(
      process.execPath,
      [new URL('./crash-child.ts', import.meta.url).pathname, nodeId, tmpRoot],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('child did not start its tasks in 30 s')), 30_000);
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('running')) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
      });
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((r) =>
      child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r),
    );

    const docker = new DockerExecutor({ nodeId });
    const filters = { label: [`${LABEL_NODE}=${nodeId}`] };
    const left = await docker.docker.listContainers({ all: true, filters });
    assert.equal(left.length, 2, 'task and holder containers outlived the killed node');
    assert.ok(left.some((c) => c.State === 'running'));
    assert.equal(((await docker.docker.listVolumes({ filters })).Volumes ?? []).length, 1);
    assert.equal((await readdir(tmpRoot)).length, 1, 'wasm temp dir left behind');

    assert.equal(await docker.cleanupLeftovers(), 3);
    assert.equal((await docker.docker.listContainers({ all: true, filters })).length, 0);
    assert.equal(((await docker.docker.listVolumes({ filters })).Volumes ?? []).length, 0);
    assert.equal(await new WasmExecutor({ tmpRoot }).cleanupLeftovers(), 1);
    assert.deepEqual(await readdir(tmpRoot), []);
    await rm(tmpRoot, { recursive: true });
  });
});
