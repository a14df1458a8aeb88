// Node owners may restrict their machine to named submitters; the scheduler honours it exactly.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { schedule, submitterAllowed } from './scheduler.ts';
import type { QueuedTask, SchedulerNode } from './types.ts';

const node = (id: string, allowedSubmitters?: string[]): SchedulerNode => ({
  id,
  up: true,
  mode: 'active',
  capacity: { cpus: 8, memoryBytes: 8e9, diskBytes: 1e11, gpus: [] },
  maxConcurrent: 100,
  arch: 'x64',
  os: 'linux',
  labels: {},
  docker: true,
  executors: ['docker', 'wasm'],
  ...(allowedSubmitters ? { allowedSubmitters } : {}),
});
const task = (i: number, submitter: string): QueuedTask => ({
  taskId: `j/${i}`,
  jobId: 'j',
  submitter,
  priority: 50,
  executor: 'docker',
  resources: { cpus: 1, memoryBytes: 1e8 },
  constraints: {},
  notBefore: 0,
  nextAttempt: 1,
});

describe('submitter allow-lists', () => {
  it('matches by full submitter, key name or key ID', () => {
    assert.ok(submitterAllowed(['alice'], 'key:alice:12D3KooWA'));
    assert.ok(submitterAllowed(['12D3KooWA'], 'key:alice:12D3KooWA'));
    assert.ok(submitterAllowed(['local:n1'], 'local:n1'));
    assert.ok(!submitterAllowed(['alice'], 'key:bob:12D3KooWB'));
    assert.ok(!submitterAllowed(['alice'], 'peer:alice'));
    assert.ok(submitterAllowed(undefined, 'anyone'));
  });

  it("places a submitter's tasks only on nodes that accept it", () => {
    const tasks = [
      ...Array.from({ length: 6 }, (_, i) => task(i, 'key:bob:B')),
      ...Array.from({ length: 6 }, (_, i) => task(10 + i, 'key:alice:A')),
    ];
    const r = schedule({ now: 0, nodes: [node('open'), node('alice-only', ['alice'])], tasks, running: [] });
    assert.equal(r.assignments.length, 12);
    for (const a of r.assignments) {
      if (a.nodeId === 'alice-only')
        assert.ok(Number(a.taskId.split('/')[1]) >= 10, `${a.taskId} (bob) on alice-only`);
    }
    assert.ok(
      r.assignments.some((a) => a.nodeId === 'alice-only'),
      'alice’s tasks may use her node',
    );
  });

  it('says why when no node accepts a submitter', () => {
    const r = schedule({ now: 0, nodes: [node('a', ['alice'])], tasks: [task(1, 'key:bob:B')], running: [] });
    assert.equal(r.assignments.length, 0);
    assert.match(r.unplaced[0]!.reason, /no node accepts jobs from key:bob:B/);
  });
});
