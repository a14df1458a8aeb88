import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { checkPolicy, safeRelativePath } from './policy.ts';
import type { ExecutorCaps, NodePolicy, TaskSpec } from './types.ts';

const policy: NodePolicy = {
  allowNetwork: false,
  allowGpu: false,
  allowedExecutors: ['docker', 'wasm'],
  maxMemoryBytes: 1 << 30,
  maxCpus: 2,
  maxPids: 128,
  scratchBytes: 64 << 20,
};
const caps: ExecutorCaps = { executors: ['docker', 'wasm'], gpus: {}, nvidiaRuntime: false };
const docker: TaskSpec = {
  taskId: 't',
  jobId: 'j',
  attempt: 0,
  executor: 'docker',
  image: 'meshrun-test/busybox:1',
  command: ['true'],
  resources: { cpus: 0.5, memoryBytes: 64 << 20 },
  timeoutMs: 1000,
};
const wasm: TaskSpec = {
  taskId: 't',
  jobId: 'j',
  attempt: 0,
  executor: 'wasm',
  wasm: { module: new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]) },
  resources: { cpus: 1, memoryBytes: 16 << 20 },
  timeoutMs: 1000,
};
const with_ = (spec: TaskSpec, extra: Record<string, unknown>) => ({ ...spec, ...extra }) as TaskSpec;

describe('checkPolicy', () => {
  it('accepts reasonable docker and wasm specs', () => {
    assert.equal(checkPolicy(docker, policy, caps), null);
    assert.equal(checkPolicy(wasm, policy, caps), null);
    assert.equal(
      checkPolicy(with_(docker, { image: `busybox@sha256:${'a'.repeat(64)}` }), policy, caps),
      null,
    );
    assert.equal(checkPolicy(with_(docker, { image: '127.0.0.1:5000/team/busybox:1' }), policy, caps), null);
  });

  it('refuses sandbox escapes by name, and unknown fields', () => {
    for (const [field, value, pattern] of [
      ['privileged', true, /privileged/],
      ['binds', ['/:/host'], /host mounts/],
      ['mounts', [{ Type: 'bind', Source: '/' }], /host mounts/],
      ['networkMode', 'host', /network mode/],
      ['capAdd', ['SYS_ADMIN'], /capabilities/],
      ['devices', ['/dev/sda'], /devices/],
      ['pidMode', 'host', /PID/],
      ['user', 'root', /user/],
      ['somethingNew', 1, /unsupported spec field 'somethingNew'/],
    ] as const) {
      assert.match(checkPolicy(with_(docker, { [field]: value }), policy, caps) ?? '', pattern, field);
    }
    assert.match(
      checkPolicy(with_(docker, { resources: { cpus: 1, memoryBytes: 1, shmSize: 1 } }), policy, caps) ?? '',
      /unsupported resource/,
    );
  });

  it('refuses what the node policy forbids', () => {
    assert.match(
      checkPolicy(with_(docker, { network: true }), policy, caps) ?? '',
      /network access is not allowed/,
    );
    assert.equal(
      checkPolicy(with_(docker, { network: true }), { ...policy, allowNetwork: true }, caps),
      null,
    );
    assert.match(checkPolicy(docker, { ...policy, allowedExecutors: ['wasm'] }, caps) ?? '', /not allowed/);
    assert.match(checkPolicy(docker, policy, { ...caps, executors: ['wasm'] }) ?? '', /not available/);
    assert.match(
      checkPolicy(with_(docker, { resources: { cpus: 4, memoryBytes: 1 } }), policy, caps) ?? '',
      /CPUs/,
    );
    assert.match(
      checkPolicy(with_(docker, { resources: { cpus: 1, memoryBytes: 2 << 30 } }), policy, caps) ?? '',
      /memory/,
    );
    assert.match(
      checkPolicy(with_(docker, { resources: { cpus: 1, memoryBytes: 1, pids: 1000 } }), policy, caps) ?? '',
      /processes/,
    );
    assert.match(
      checkPolicy(
        with_(docker, { resources: { cpus: 1, memoryBytes: 1, diskBytes: 1 << 30 } }),
        policy,
        caps,
      ) ?? '',
      /scratch/,
    );
    assert.match(checkPolicy(with_(docker, { timeoutMs: 0 }), policy, caps) ?? '', /timeoutMs/);
    assert.match(
      checkPolicy(with_(wasm, { network: true }), { ...policy, allowNetwork: true }, caps) ?? '',
      /wasm/,
    );
  });

  it('refuses GPUs unless allowed, present, nvidia and backed by the nvidia runtime', () => {
    const gpu = with_(docker, { resources: { cpus: 1, memoryBytes: 1, gpus: { count: 1 } } });
    const gpuPolicy = { ...policy, allowGpu: true };
    assert.match(checkPolicy(gpu, policy, caps) ?? '', /GPUs are not allowed/);
    assert.match(checkPolicy(gpu, gpuPolicy, caps) ?? '', /no nvidia GPU/);
    assert.match(checkPolicy(gpu, gpuPolicy, { ...caps, gpus: { nvidia: 1 } }) ?? '', /nvidia runtime/);
    assert.equal(checkPolicy(gpu, gpuPolicy, { ...caps, gpus: { nvidia: 1 }, nvidiaRuntime: true }), null);
    const two = with_(docker, { resources: { cpus: 1, memoryBytes: 1, gpus: { count: 2 } } });
    assert.match(
      checkPolicy(two, gpuPolicy, { ...caps, gpus: { nvidia: 1 }, nvidiaRuntime: true }) ?? '',
      /node has 1/,
    );
    const amd = with_(docker, { resources: { cpus: 1, memoryBytes: 1, gpus: { count: 1, vendor: 'amd' } } });
    assert.match(checkPolicy(amd, gpuPolicy, { ...caps, gpus: { amd: 1 } }) ?? '', /not supported/);
  });

  it('refuses malformed fields', () => {
    assert.match(checkPolicy(with_(docker, { image: 'UPPER/case' }), policy, caps) ?? '', /image/);
    assert.match(checkPolicy(with_(docker, { image: undefined }), policy, caps) ?? '', /image/);
    assert.match(checkPolicy(with_(docker, { command: 'sh -c x' }), policy, caps) ?? '', /command/);
    assert.match(checkPolicy(with_(docker, { env: { 'A=B': 'x' } }), policy, caps) ?? '', /env var name/);
    assert.match(checkPolicy(with_(docker, { env: { A: 1 } }), policy, caps) ?? '', /must be a string/);
    assert.match(checkPolicy(with_(docker, { workdir: 'relative' }), policy, caps) ?? '', /workdir/);
    assert.match(
      checkPolicy(
        with_(docker, { inputs: [{ path: '../etc/passwd', content: new Uint8Array() }] }),
        policy,
        caps,
      ) ?? '',
      /leaves the scratch/,
    );
    assert.match(
      checkPolicy(with_(docker, { outputs: ['/etc/shadow'] }), policy, caps) ?? '',
      /leaves the scratch/,
    );
    assert.match(
      checkPolicy(
        with_(docker, { inputs: [{ path: 'big', content: new Uint8Array(65 << 20) }] }),
        policy,
        caps,
      ) ?? '',
      /do not fit/,
    );
    assert.match(checkPolicy(with_(wasm, { wasm: undefined }), policy, caps) ?? '', /module/);
    assert.match(checkPolicy(with_(docker, { taskId: 'a\0b' }), policy, caps) ?? '', /taskId/);
    assert.match(checkPolicy(with_(docker, { taskId: 7 }), policy, caps) ?? '', /taskId/);
    assert.match(checkPolicy(with_(docker, { jobId: '' }), policy, caps) ?? '', /jobId/);
    assert.match(checkPolicy(with_(docker, { attempt: -1 }), policy, caps) ?? '', /attempt/);
    assert.match(checkPolicy(with_(docker, { stdin: new Uint8Array(1) }), policy, caps) ?? '', /stdin/);
  });

  it('never throws on arbitrary extra fields and values (property)', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.anything()), (extra) => {
        const r = checkPolicy(with_(docker, extra), policy, caps);
        assert.ok(r === null || typeof r === 'string');
      }),
      { numRuns: 300 },
    );
  });
});

describe('safeRelativePath', () => {
  it('normalizes harmless paths and rejects escapes', () => {
    assert.equal(safeRelativePath('a/./b//c'), 'a/b/c');
    for (const bad of ['', '/abs', '..', 'a/../../b', 'a/..', 'a\\b', 'nul\0', '.', 5])
      assert.equal(safeRelativePath(bad), null);
  });
  it('never returns a path containing .. or starting with / (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', '..', '.', '', 'b', '/', 'c.d'), { maxLength: 12 }),
        (parts) => {
          const p = safeRelativePath(parts.join('/'));
          if (p !== null) {
            assert.ok(!p.startsWith('/'));
            assert.ok(!p.split('/').includes('..'));
          }
        },
      ),
    );
  });
});
