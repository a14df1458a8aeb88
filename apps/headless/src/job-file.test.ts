// Job files: the shorthands `submit -f` resolves before sending, checked against the wire schema the node
// applies (validateJobSpec), and the errors that refuse a whole file before anything is sent.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateJobSpec } from '@meshrun/protocol';
import { DEFAULT_RESOURCES, specsFromJobFile } from './job-file.ts';

const MODULE = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
const reads: string[] = [];
const readModule = async (path: string) => {
  reads.push(path);
  if (path.endsWith('missing.wasm')) throw new Error('ENOENT: no such file');
  return MODULE;
};

describe('job files', () => {
  it('resolves the shorthands to a spec the node accepts', async () => {
    const yaml = [
      '- image: busybox',
      '  command: [echo, hi]',
      '  timeout: 10m',
      '  retries: 2',
      '- wasm: mods/task.wasm',
      '  resources: { cpus: 0.5, memory: 64M, disk: 1G }',
      '  count: 3',
    ].join('\n');
    const [docker, wasm] = (await specsFromJobFile(yaml, '/jobs/batch.yaml', readModule)) as Record<
      string,
      unknown
    >[];
    assert.deepEqual(reads.at(-1), '/jobs/mods/task.wasm', 'relative to the job file');
    const d = validateJobSpec(docker);
    assert.equal(d.executor, 'docker');
    assert.equal(d.name, 'busybox');
    assert.deepEqual(d.resources, DEFAULT_RESOURCES);
    assert.equal(d.timeoutMs, 600_000);
    assert.equal(d.retry.maxAttempts, 3);
    const w = validateJobSpec(wasm);
    assert.equal(w.executor, 'wasm');
    assert.equal(w.name, 'task.wasm');
    assert.deepEqual(w.wasm?.bytes, MODULE);
    assert.deepEqual(w.resources, { cpus: 0.5, memoryBytes: 64 * 1024 ** 2, diskBytes: 1024 ** 3 });
    assert.equal(w.count, 3);
  });

  it('leaves wire-format specs as they are, in a list, a single object or { jobs: [...] }', async () => {
    const spec = {
      name: 'x',
      executor: 'docker',
      image: 'busybox',
      resources: { cpus: 1, memoryBytes: 1e6, gpus: { count: 1, minVramBytes: 1e9 } },
      retry: { maxAttempts: 2, backoffMs: 10 },
      timeoutMs: 5000,
    };
    for (const text of [JSON.stringify(spec), JSON.stringify([spec]), JSON.stringify({ jobs: [spec] })]) {
      assert.deepEqual(await specsFromJobFile(text, 'a.json', readModule), [spec]);
    }
    const gpus = (await specsFromJobFile(
      'image: cuda\nresources: { cpus: 1, memory: 1G, gpus: { count: 1, minVram: 8G } }',
      'g.yaml',
      readModule,
    )) as { resources: { gpus: unknown } }[];
    assert.deepEqual(gpus[0]!.resources.gpus, { count: 1, minVramBytes: 8 * 1024 ** 3 });
  });

  it('refuses the whole file, naming the job, for an unreadable module or a shorthand beside its wire field', async () => {
    const cases: [string, RegExp][] = [
      [
        '- image: a\n- name: second\n  wasm: missing.wasm',
        /job 2 \(second\): cannot read the wasm module .*missing\.wasm: ENOENT/,
      ],
      [
        'image: a\nresources: { cpus: 1, memory: 1G, memoryBytes: 5 }',
        /job 1: give memory or memoryBytes, not both/,
      ],
      ['image: a\nresources: { cpus: 1, memory: lots }', /job 1: "lots" is not a size/],
      ['image: a\ntimeout: 30s\ntimeoutMs: 5', /give timeout or timeoutMs, not both/],
      ['image: a\ntimeout: 30', /timeout takes a duration/],
      ['image: a\nretries: -1', /retries takes a whole number/],
      ['image: a\nretries: 1\nretry: { maxAttempts: 4 }', /give retries or retry.maxAttempts, not both/],
      ['image: [unclosed', /f\.yaml is not valid YAML/],
    ];
    for (const [text, pattern] of cases) {
      await assert.rejects(specsFromJobFile(text, 'f.yaml', readModule), pattern, text);
    }
  });

  it('infers no executor when both or neither of image and wasm are given: the node names the problem', async () => {
    const [both] = (await specsFromJobFile('image: a\nwasm: m.wasm', 'f.yaml', readModule)) as object[];
    assert.throws(() => validateJobSpec(both), /executor/);
    const [neither] = (await specsFromJobFile('name: x', 'f.yaml', readModule)) as object[];
    assert.throws(() => validateJobSpec(neither), /executor/);
  });
});
