import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatBytes, schedule } from './scheduler.ts';
import type {
  NodeGpu,
  QueuedTask,
  RunningTask,
  ScheduleInput,
  ScheduleResult,
  SchedulerNode,
} from './types.ts';

const GiB = 1024 ** 3;

function node(id: string, over: Partial<SchedulerNode> = {}): SchedulerNode {
  return {
    id,
    up: true,
    mode: 'active',
    capacity: { cpus: 8, memoryBytes: 16 * GiB, diskBytes: 100 * GiB, gpus: [] },
    maxConcurrent: 8,
    arch: 'x64',
    os: 'linux',
    labels: {},
    docker: true,
    executors: ['docker', 'wasm'],
    ...over,
  };
}

function gpus(n: number, vendor = 'nvidia', vramGiB = 24): NodeGpu[] {
  return Array.from({ length: n }, () => ({ vendor, model: 'x', vramBytes: vramGiB * GiB }));
}

let seq = 0;
function task(over: Partial<QueuedTask> = {}): QueuedTask {
  const id = over.taskId ?? `t${seq++}`;
  return {
    taskId: id,
    jobId: over.jobId ?? 'job',
    submitter: 'alice',
    priority: 50,
    executor: 'docker',
    resources: { cpus: 1, memoryBytes: GiB },
    constraints: {},
    notBefore: 0,
    nextAttempt: 1,
    ...over,
  };
}

function tasks(n: number, over: Partial<QueuedTask> = {}, prefix = 't'): QueuedTask[] {
  return Array.from({ length: n }, (_, i) => task({ ...over, taskId: `${prefix}${i}` }));
}

function run(input: Partial<ScheduleInput>, opts = {}): ScheduleResult {
  return schedule({ now: 1000, nodes: [], tasks: [], running: [], ...input }, opts);
}

function placement(r: ScheduleResult): Record<string, string> {
  return Object.fromEntries(r.assignments.map((a) => [a.taskId, a.nodeId]));
}

function reasons(r: ScheduleResult): Record<string, string> {
  return Object.fromEntries(r.unplaced.map((u) => [u.taskId, u.reason]));
}

function perNode(r: ScheduleResult): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of r.assignments) out[a.nodeId] = (out[a.nodeId] ?? 0) + 1;
  return out;
}

describe('fit', () => {
  it('places a task only where its resources fit', () => {
    const r = run({
      nodes: [
        node('small', { capacity: { cpus: 2, memoryBytes: 4 * GiB, diskBytes: 10 * GiB, gpus: [] } }),
        node('big', { capacity: { cpus: 16, memoryBytes: 64 * GiB, diskBytes: 10 * GiB, gpus: [] } }),
      ],
      tasks: [task({ taskId: 'mem', resources: { cpus: 1, memoryBytes: 8 * GiB } })],
    });
    assert.deepEqual(placement(r), { mem: 'big' });
  });

  it('counts what is already running against capacity', () => {
    const r = run({
      nodes: [node('a', { capacity: { cpus: 4, memoryBytes: 8 * GiB, diskBytes: 0, gpus: [] } })],
      running: [{ nodeId: 'a', resources: { cpus: 3, memoryBytes: GiB } }],
      tasks: tasks(3, { resources: { cpus: 1, memoryBytes: GiB } }),
    });
    assert.equal(r.assignments.length, 1);
    assert.equal(r.unplaced.length, 2);
    assert.match(r.unplaced[0].reason, /all 1 matching node is busy/);
  });

  it('handles fractional cpus without rounding into over-commit', () => {
    const r = run({
      nodes: [node('a', { capacity: { cpus: 1, memoryBytes: 8 * GiB, diskBytes: 0, gpus: [] } })],
      tasks: tasks(5, { resources: { cpus: 0.3, memoryBytes: 1 } }),
    });
    assert.equal(r.assignments.length, 3);
  });

  it('honours disk requests', () => {
    const r = run({
      nodes: [node('a', { capacity: { cpus: 8, memoryBytes: 8 * GiB, diskBytes: 10 * GiB, gpus: [] } })],
      tasks: tasks(3, { resources: { cpus: 1, memoryBytes: 1, diskBytes: 4 * GiB } }),
    });
    assert.equal(r.assignments.length, 2);
  });

  it('enforces the per-node concurrency cap', () => {
    const r = run({
      nodes: [node('a', { maxConcurrent: 2 })],
      running: [{ nodeId: 'a', resources: { cpus: 0.1, memoryBytes: 1 } }],
      tasks: tasks(5, { resources: { cpus: 0.1, memoryBytes: 1 } }),
    });
    assert.equal(r.assignments.length, 1);
    assert.match(r.unplaced[0].reason, /1 at their task limit/);
  });

  it('counts a node listed twice only once', () => {
    const r = run({
      nodes: [node('a', { maxConcurrent: 2 }), node('a', { maxConcurrent: 2 })],
      tasks: tasks(4),
    });
    assert.equal(r.assignments.length, 2);
  });

  it('uses only up and active nodes', () => {
    const r = run({
      nodes: [
        node('down', { up: false }),
        node('paused', { mode: 'paused' }),
        node('draining', { mode: 'draining' }),
        node('ok'),
      ],
      tasks: tasks(4, { resources: { cpus: 0.5, memoryBytes: 1 } }),
    });
    assert.deepEqual(perNode(r), { ok: 4 });
    const none = run({
      nodes: [node('down', { up: false }), node('paused', { mode: 'paused' })],
      tasks: tasks(1),
    });
    assert.match(none.unplaced[0].reason, /no node is up and active \(1 down, 1 paused, 0 draining\)/);
    assert.match(run({ tasks: tasks(1) }).unplaced[0].reason, /no nodes in the cluster/);
  });
});

describe('constraints', () => {
  const nodes = [
    node('x64-linux', { labels: { zone: 'a' } }),
    node('arm-linux', { arch: 'arm64', labels: { zone: 'b', gpu: 'none' } }),
    node('x64-darwin', { os: 'darwin', docker: false, executors: ['wasm'] }),
    node('gpu-node', {
      capacity: { cpus: 8, memoryBytes: 16 * GiB, diskBytes: 0, gpus: gpus(2, 'NVIDIA', 40) },
    }),
  ];

  it('matches arch, os, labels, docker and executor', () => {
    const r = run({
      nodes,
      tasks: [
        task({ taskId: 'arm', constraints: { arch: 'arm64' } }),
        task({ taskId: 'darwin', executor: 'wasm', constraints: { os: 'darwin' } }),
        task({ taskId: 'zone-a', constraints: { labels: { zone: 'a' } } }),
        task({ taskId: 'wasm-no-docker', executor: 'wasm', constraints: { docker: false, os: 'darwin' } }),
      ],
    });
    assert.deepEqual(placement(r), {
      arm: 'arm-linux',
      darwin: 'x64-darwin',
      'zone-a': 'x64-linux',
      'wasm-no-docker': 'x64-darwin',
    });
  });

  it('never sends docker work to a node without docker, nor to one that does not run that executor', () => {
    const r = run({
      nodes: [
        node('wasm-only', { docker: false, executors: ['wasm'] }),
        node('claims-docker-executor', { docker: false }),
      ],
      tasks: [task({ taskId: 'd' })],
    });
    assert.deepEqual(r.assignments, []);
    assert.match(reasons(r).d, /no node has Docker/);
  });

  it('matches GPU vendor (case-insensitively) and minimum VRAM', () => {
    const r = run({
      nodes: [
        node('amd', { capacity: { cpus: 8, memoryBytes: 16 * GiB, diskBytes: 0, gpus: gpus(4, 'amd', 64) } }),
        node('small-nv', {
          capacity: { cpus: 8, memoryBytes: 16 * GiB, diskBytes: 0, gpus: gpus(4, 'nvidia', 16) },
        }),
        node('big-nv', {
          capacity: { cpus: 8, memoryBytes: 16 * GiB, diskBytes: 0, gpus: gpus(1, 'NVIDIA', 80) },
        }),
      ],
      tasks: [
        task({
          taskId: 'need-80',
          resources: {
            cpus: 1,
            memoryBytes: 1,
            gpus: { count: 1, vendor: 'nvidia', minVramBytes: 40 * GiB },
          },
        }),
        task({
          taskId: 'any-amd',
          resources: { cpus: 1, memoryBytes: 1, gpus: { count: 2, vendor: 'AMD' } },
        }),
      ],
    });
    assert.deepEqual(placement(r), { 'need-80': 'big-nv', 'any-amd': 'amd' });
    assert.deepEqual(r.assignments.find((a) => a.taskId === 'need-80')!.gpus, [0]);
    assert.equal(r.assignments.find((a) => a.taskId === 'any-amd')!.gpus!.length, 2);
  });

  it('explains why a task fits nowhere', () => {
    const r = run({
      nodes,
      tasks: [
        task({ taskId: 'mem', resources: { cpus: 1, memoryBytes: 64 * GiB } }),
        task({ taskId: 'label', constraints: { labels: { gpu: 'a100' } } }),
        task({ taskId: 'arch', constraints: { arch: 'riscv64' } }),
        task({ taskId: 'cpus', resources: { cpus: 100, memoryBytes: 1 } }),
        task({ taskId: 'gpu', resources: { cpus: 1, memoryBytes: 1, gpus: { count: 3, vendor: 'nvidia' } } }),
        task({
          taskId: 'vram',
          resources: { cpus: 1, memoryBytes: 1, gpus: { count: 1, minVramBytes: 80 * GiB } },
        }),
      ],
    });
    assert.deepEqual(reasons(r), {
      mem: 'no node offers 64 GiB memory (largest: 16 GiB)',
      label: 'no node matches label gpu=a100',
      arch: 'no node has arch riscv64 (available: arm64, x64)',
      cpus: 'no node offers 100 cpus (largest: 8)',
      gpu: 'no node has 3 nvidia GPUs (most: 2)',
      vram: 'no node has 1 GPU with ≥ 80 GiB VRAM (most: 0)',
    });
  });

  it('says when only inactive nodes would match', () => {
    const r = run({
      nodes: [
        node('a'),
        node('big', { up: false, capacity: { cpus: 64, memoryBytes: 256 * GiB, diskBytes: 0, gpus: [] } }),
      ],
      tasks: [task({ taskId: 'm', resources: { cpus: 1, memoryBytes: 128 * GiB } })],
    });
    assert.match(
      reasons(r).m,
      /^no node offers 128 GiB memory \(largest: 16 GiB\); a node that would match is down, paused or draining$/,
    );
  });
});

describe('scoring', () => {
  it('spreads CPU tasks over the least-loaded nodes', () => {
    const r = run({
      nodes: [node('a'), node('b'), node('c'), node('d')],
      tasks: tasks(8),
    });
    assert.deepEqual(perNode(r), { a: 2, b: 2, c: 2, d: 2 });
  });

  it('prefers the node with the lowest used fraction, counting running work', () => {
    const r = run({
      nodes: [node('busy'), node('idle')],
      running: [
        { nodeId: 'busy', resources: { cpus: 4, memoryBytes: GiB } },
        { nodeId: 'busy', resources: { cpus: 2, memoryBytes: GiB } },
      ],
      tasks: tasks(3),
    });
    assert.deepEqual(perNode(r), { idle: 3 });
  });

  it('keeps CPU work off GPU nodes while other nodes have room', () => {
    const r = run({
      nodes: [
        node('gpu', { capacity: { cpus: 64, memoryBytes: 256 * GiB, diskBytes: 0, gpus: gpus(4) } }),
        node('cpu'),
      ],
      tasks: tasks(6),
    });
    assert.deepEqual(perNode(r), { cpu: 6 });
  });

  it('spills CPU work onto GPU nodes only once the others are full, without slowing down', () => {
    const nodes = [
      ...Array.from({ length: 300 }, (_, i) => node(`cpu${i}`, { maxConcurrent: 20 })),
      ...Array.from({ length: 300 }, (_, i) =>
        node(`gpu${i}`, {
          maxConcurrent: 20,
          capacity: { cpus: 8, memoryBytes: 16 * GiB, diskBytes: 0, gpus: gpus(1) },
        }),
      ),
    ];
    const started = performance.now();
    const r = run({ nodes, tasks: tasks(9_000, { resources: { cpus: 0.1, memoryBytes: 1 } }) });
    const ms = performance.now() - started;
    const counts = perNode(r);
    assert.equal(r.assignments.length, 9_000);
    for (let i = 0; i < 300; i++) assert.equal(counts[`cpu${i}`], 20, `cpu${i} is full`);
    assert.equal(Object.keys(counts).filter((id) => id.startsWith('gpu')).length, 300, 'the spill is spread');
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  });

  it('bin-packs GPU tasks onto the node with the fewest free GPUs', () => {
    const cap = (n: number) => ({ cpus: 32, memoryBytes: 64 * GiB, diskBytes: 0, gpus: gpus(n) });
    const r = run({
      nodes: [
        node('empty4', { capacity: cap(4) }),
        node('half4', { capacity: cap(4) }),
        node('empty8', { capacity: cap(8) }),
      ],
      running: [
        { nodeId: 'half4', resources: { cpus: 1, memoryBytes: 1, gpus: { count: 2 } }, gpus: [0, 1] },
      ],
      tasks: tasks(3, { resources: { cpus: 1, memoryBytes: 1, gpus: { count: 1 } } }),
    });
    // half4's two free GPUs first, then the smallest empty node.
    assert.deepEqual(
      r.assignments.map((a) => [a.nodeId, a.gpus]),
      [
        ['half4', [2]],
        ['half4', [3]],
        ['empty4', [0]],
      ],
    );
  });

  it('never hands out a GPU that a running task holds', () => {
    const r = run({
      nodes: [node('g', { capacity: { cpus: 32, memoryBytes: 64 * GiB, diskBytes: 0, gpus: gpus(3) } })],
      running: [
        { nodeId: 'g', resources: { cpus: 1, memoryBytes: 1, gpus: { count: 1 } }, gpus: [1] },
        { nodeId: 'g', resources: { cpus: 1, memoryBytes: 1, gpus: { count: 1 } } }, // indices unknown: best-fit
      ],
      tasks: tasks(2, { resources: { cpus: 1, memoryBytes: 1, gpus: { count: 1 } } }),
    });
    assert.deepEqual(
      r.assignments.map((a) => a.gpus),
      [[2]],
    );
  });
});

describe('ordering', () => {
  it('places higher priority first, whatever the input order', () => {
    const r = run({
      nodes: [node('a', { maxConcurrent: 2 })],
      tasks: [
        task({ taskId: 'low1', priority: 10 }),
        task({ taskId: 'low2', priority: 10 }),
        task({ taskId: 'high', priority: 90 }),
        task({ taskId: 'mid', priority: 50 }),
      ],
    });
    assert.deepEqual(
      r.assignments.map((a) => a.taskId),
      ['high', 'mid'],
    );
  });

  it('backfills lower priority when the higher one fits nowhere', () => {
    const r = run({
      nodes: [node('a')],
      tasks: [
        task({ taskId: 'huge', priority: 90, resources: { cpus: 64, memoryBytes: 1 } }),
        task({ taskId: 'small', priority: 10 }),
      ],
    });
    assert.deepEqual(placement(r), { small: 'a' });
  });

  it('is fair between submitters: a 10,000-task sweep does not starve a single job', () => {
    const r = run({
      nodes: [
        node('a', {
          maxConcurrent: 10,
          capacity: { cpus: 100, memoryBytes: 100 * GiB, diskBytes: 0, gpus: [] },
        }),
      ],
      tasks: [
        ...tasks(10_000, { submitter: 'alice' }, 'sweep'),
        task({ taskId: 'bob-job', submitter: 'bob' }),
      ],
    });
    assert.equal(r.assignments.length, 10);
    assert.ok(placement(r)['bob-job'], 'bob got a slot');
  });

  it('splits scarce slots evenly, favouring submitters with less running', () => {
    const nodes = [
      node('a', {
        maxConcurrent: 12,
        capacity: { cpus: 100, memoryBytes: 100 * GiB, diskBytes: 0, gpus: [] },
      }),
    ];
    const queued = [
      ...tasks(50, { submitter: 'alice' }, 'a'),
      ...tasks(50, { submitter: 'bob' }, 'b'),
      ...tasks(50, { submitter: 'carol' }, 'c'),
    ];
    const count = (r: ScheduleResult, prefix: string) =>
      r.assignments.filter((a) => a.taskId.startsWith(prefix)).length;
    const even = run({ nodes, tasks: queued });
    assert.deepEqual([count(even, 'a'), count(even, 'b'), count(even, 'c')], [4, 4, 4]);

    const running: RunningTask[] = Array.from({ length: 4 }, () => ({
      nodeId: 'elsewhere',
      resources: { cpus: 1, memoryBytes: 1 },
      submitter: 'alice',
    }));
    const skewed = run({ nodes, tasks: queued, running });
    // alice already runs 4: bob and carol catch up to 4 first, then all three take turns.
    assert.deepEqual([count(skewed, 'a'), count(skewed, 'b'), count(skewed, 'c')], [2, 5, 5]);
    assert.equal(count(skewed, 'a') + count(skewed, 'b') + count(skewed, 'c'), 12);
  });

  it('keeps input (submission) order within a submitter', () => {
    const r = run({ nodes: [node('a', { maxConcurrent: 3 })], tasks: tasks(10, {}, 'x') });
    assert.deepEqual(
      r.assignments.map((a) => a.taskId),
      ['x0', 'x1', 'x2'],
    );
  });

  it('respects notBefore (retry backoff)', () => {
    const r = run({
      now: 1000,
      nodes: [node('a')],
      tasks: [task({ taskId: 'later', notBefore: 1500 }), task({ taskId: 'now', notBefore: 1000 })],
    });
    assert.deepEqual(placement(r), { now: 'a' });
    assert.equal(reasons(r).later, 'waiting for retry backoff (500 ms left)');
  });

  it('stops at maxAssignments and says why the rest waits', () => {
    const r = run(
      { nodes: [node('a')], tasks: tasks(5, { resources: { cpus: 0.1, memoryBytes: 1 } }) },
      { maxAssignments: 2 },
    );
    assert.equal(r.assignments.length, 2);
    assert.equal(r.unplaced.length, 3);
    assert.match(r.unplaced[0].reason, /limit of 2 assignments/);
  });

  it('is fast: 100,000 tasks on 1,000 nodes in well under the 10 s budget', () => {
    const nodes = Array.from({ length: 1000 }, (_, i) =>
      node(`n${i}`, {
        capacity: {
          cpus: 4 + (i % 8) * 4,
          memoryBytes: (8 + (i % 5) * 8) * GiB,
          diskBytes: 0,
          gpus: i % 10 === 0 ? gpus(4) : [],
        },
        maxConcurrent: 16 + (i % 4) * 16,
        arch: i % 5 === 0 ? 'arm64' : 'x64',
      }),
    );
    const queued: QueuedTask[] = [];
    for (let j = 0; j < 500; j++) {
      const resources =
        j % 17 === 0
          ? { cpus: 1, memoryBytes: GiB, gpus: { count: 1 } }
          : { cpus: 0.25 * (1 + (j % 4)), memoryBytes: (j % 3) * GiB + GiB };
      const constraints = j % 7 === 0 ? { arch: 'arm64' } : {};
      for (let k = 0; k < 200; k++) {
        queued.push(
          task({
            taskId: `j${j}/${k}`,
            jobId: `j${j}`,
            submitter: `u${j % 20}`,
            priority: j % 3,
            resources,
            constraints,
          }),
        );
      }
    }
    const started = performance.now();
    const r = run({ nodes, tasks: queued });
    const ms = performance.now() - started;
    assert.equal(r.assignments.length + r.unplaced.length, 100_000);
    assert.ok(r.assignments.length > 5_000, `placed ${r.assignments.length}`);
    assert.ok(ms < 5000, `took ${ms.toFixed(0)} ms`);
  });

  it('formats byte sizes for reasons', () => {
    assert.equal(formatBytes(64 * GiB), '64 GiB');
    assert.equal(formatBytes(1.5 * GiB), '1.5 GiB');
    assert.equal(formatBytes(512 * 1024 * 1024), '512 MiB');
    assert.equal(formatBytes(100), '100 bytes');
  });
});

// ---------------------------------------------------------------------------------------------------------
// Properties

/** `arb` one time in `oneIn`, else absent. */
function sometimes<T>(arb: fc.Arbitrary<T>, oneIn: number): fc.Arbitrary<T | undefined> {
  return fc.tuple(fc.nat(oneIn - 1), arb).map(([n, v]) => (n === 0 ? v : undefined));
}

function compact<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

const nodeArb: fc.Arbitrary<SchedulerNode> = fc.record({
  id: fc.string({ minLength: 1, maxLength: 6 }),
  up: fc.nat(7).map((n) => n !== 0),
  mode: fc.constantFrom(
    'active' as const,
    'active' as const,
    'active' as const,
    'paused' as const,
    'draining' as const,
  ),
  capacity: fc.record({
    cpus: fc.constantFrom(0, 0.5, 1, 2, 3.5, 8, 16),
    memoryBytes: fc.integer({ min: 0, max: 32 }).map((g) => g * GiB),
    diskBytes: fc.integer({ min: 0, max: 4 }).map((g) => g * 10 * GiB),
    gpus: fc.oneof(
      fc.constant<NodeGpu[]>([]),
      fc.array(
        fc.record({
          vendor: fc.constantFrom('nvidia', 'NVIDIA', 'amd'),
          model: fc.constant('m'),
          vramBytes: fc.constantFrom(8, 24, 80).map((g) => g * GiB),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    ),
  }),
  maxConcurrent: fc.integer({ min: 0, max: 6 }),
  arch: fc.constantFrom('x64', 'x64', 'arm64'),
  os: fc.constantFrom('linux', 'linux', 'darwin'),
  labels: fc.dictionary(fc.constantFrom('zone', 'ssd'), fc.constantFrom('a', 'b')),
  docker: fc.nat(4).map((n) => n !== 0),
  executors: fc.constantFrom<('docker' | 'wasm')[]>(
    ['docker', 'wasm'],
    ['docker', 'wasm'],
    ['wasm'],
    ['docker'],
    [],
  ),
});

const resourcesArb = fc
  .record({
    cpus: fc.constantFrom(0.1, 0.5, 1, 2, 4),
    memoryBytes: fc.constantFrom(0.5, 1, 4, 8).map((g) => g * GiB),
    diskBytes: sometimes(
      fc.constantFrom(0, 5, 20).map((g) => g * GiB),
      3,
    ),
    gpus: sometimes(
      fc
        .record({
          count: fc.integer({ min: 1, max: 3 }),
          vendor: sometimes(fc.constantFrom('nvidia', 'NVIDIA', 'amd'), 2),
          minVramBytes: sometimes(
            fc.constantFrom(8, 24, 80).map((g) => g * GiB),
            2,
          ),
        })
        .map(compact),
      4,
    ),
  })
  .map(compact);

const taskArb = (i: number): fc.Arbitrary<QueuedTask> =>
  fc.record({
    taskId: fc.constant(`t${i}`),
    jobId: fc.constantFrom('j1', 'j2'),
    submitter: fc.constantFrom('alice', 'bob', 'carol'),
    priority: fc.constantFrom(0, 50, 100),
    executor: fc.constantFrom('docker' as const, 'wasm' as const),
    resources: resourcesArb,
    constraints: fc
      .record({
        arch: sometimes(fc.constantFrom('x64', 'arm64'), 4),
        os: sometimes(fc.constantFrom('linux', 'darwin'), 4),
        labels: sometimes(
          fc.dictionary(fc.constantFrom('zone', 'ssd'), fc.constantFrom('a', 'b'), { maxKeys: 1 }),
          4,
        ),
        docker: sometimes(fc.boolean(), 4),
      })
      .map(compact),
    notBefore: fc.constantFrom(0, 0, 0, 2000),
    nextAttempt: fc.constant(1),
  });

const inputArb: fc.Arbitrary<ScheduleInput> = fc
  .tuple(
    fc.uniqueArray(nodeArb, { selector: (n) => n.id, minLength: 0, maxLength: 8 }),
    fc.integer({ min: 0, max: 40 }),
  )
  .chain(([nodes, taskCount]) =>
    fc.record({
      now: fc.constant(1000),
      nodes: fc.constant(nodes),
      tasks: fc.tuple(...Array.from({ length: taskCount }, (_, i) => taskArb(i))),
      running: fc.array(
        fc.record({
          nodeId: nodes.length > 0 ? fc.constantFrom(...nodes.map((n) => n.id)) : fc.constant('ghost'),
          resources: resourcesArb,
          submitter: fc.constantFrom('alice', 'bob'),
        }),
        { maxLength: 6 },
      ),
    }),
  );

function satisfies(n: SchedulerNode, t: QueuedTask): boolean {
  if (!n.executors.includes(t.executor)) return false;
  if ((t.executor === 'docker' || t.constraints.docker === true) && !n.docker) return false;
  if (t.constraints.arch !== undefined && t.constraints.arch !== n.arch) return false;
  if (t.constraints.os !== undefined && t.constraints.os !== n.os) return false;
  for (const [k, v] of Object.entries(t.constraints.labels ?? {})) if (n.labels[k] !== v) return false;
  return true;
}

describe('scheduler properties', () => {
  it('never over-commits, never uses inactive nodes, always satisfies constraints, accounts for every task', () => {
    let placedTotal = 0;
    let gpuPlaced = 0;
    fc.assert(
      fc.property(
        inputArb,
        fc.option(fc.integer({ min: 0, max: 10 }), { nil: undefined }),
        (input, maxAssignments) => {
          const r = schedule(input, { maxAssignments });
          const byId = new Map(input.nodes.map((n) => [n.id, n]));
          const taskById = new Map(input.tasks.map((t) => [t.taskId, t]));

          // Every task exactly once, in assignments or unplaced.
          const seen = [...r.assignments.map((a) => a.taskId), ...r.unplaced.map((u) => u.taskId)].sort();
          assert.deepEqual(seen, input.tasks.map((t) => t.taskId).sort());
          if (maxAssignments !== undefined) assert.ok(r.assignments.length <= maxAssignments);
          for (const u of r.unplaced) assert.ok(u.reason.length > 0);

          const load = new Map<
            string,
            { cpus: number; mem: number; disk: number; count: number; gpus: Set<number> }
          >();
          const loadOf = (id: string) => {
            let l = load.get(id);
            if (!l) {
              l = { cpus: 0, mem: 0, disk: 0, count: 0, gpus: new Set() };
              load.set(id, l);
            }
            return l;
          };
          for (const run of input.running) {
            const l = loadOf(run.nodeId);
            l.cpus += run.resources.cpus;
            l.mem += run.resources.memoryBytes;
            l.disk += run.resources.diskBytes ?? 0;
            l.count++;
          }
          placedTotal += r.assignments.length;
          gpuPlaced += r.assignments.filter((a) => a.gpus !== undefined).length;
          const touched = new Set<string>();
          for (const a of r.assignments) {
            const n = byId.get(a.nodeId)!;
            const t = taskById.get(a.taskId)!;
            assert.ok(n, 'assigned to a known node');
            assert.ok(n.up && n.mode === 'active', `node ${n.id} is up and active`);
            assert.ok(satisfies(n, t), `task ${t.taskId} satisfies constraints on ${n.id}`);
            assert.ok(t.notBefore <= input.now, 'not before its backoff');
            const l = loadOf(n.id);
            l.cpus += t.resources.cpus;
            l.mem += t.resources.memoryBytes;
            l.disk += t.resources.diskBytes ?? 0;
            l.count++;
            touched.add(n.id);
            const want = t.resources.gpus;
            if (want === undefined) assert.equal(a.gpus, undefined);
            else {
              assert.equal(a.gpus!.length, want.count);
              for (const g of a.gpus!) {
                const gpu = n.capacity.gpus[g];
                assert.ok(gpu, 'a real GPU index');
                assert.ok(!l.gpus.has(g), `GPU ${g} on ${n.id} handed out twice`);
                l.gpus.add(g);
                if (want.vendor) assert.equal(gpu.vendor.toLowerCase(), want.vendor.toLowerCase());
                assert.ok(gpu.vramBytes >= (want.minVramBytes ?? 0));
              }
            }
          }
          for (const id of touched) {
            const n = byId.get(id)!;
            const l = load.get(id)!;
            assert.ok(l.cpus <= n.capacity.cpus + 1e-6, `cpus on ${id}: ${l.cpus} > ${n.capacity.cpus}`);
            assert.ok(l.mem <= n.capacity.memoryBytes, `memory on ${id}`);
            assert.ok(l.disk <= n.capacity.diskBytes, `disk on ${id}`);
            assert.ok(l.count <= n.maxConcurrent, `concurrency on ${id}`);
          }
        },
      ),
      { numRuns: 400 },
    );
    // Random inputs must actually place work (CPU and GPU), or the checks above prove nothing.
    assert.ok(placedTotal > 250, `only ${placedTotal} placements`);
    assert.ok(gpuPlaced > 8, `only ${gpuPlaced} GPU placements`);
  });

  it('is work-conserving: no unplaced ready task would fit anywhere after the round', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const r = schedule(input);
        const free = new Map(
          input.nodes
            .filter((n) => n.up && n.mode === 'active')
            .map((n) => [
              n.id,
              {
                cpus: n.capacity.cpus,
                mem: n.capacity.memoryBytes,
                disk: n.capacity.diskBytes,
                slots: n.maxConcurrent,
              },
            ]),
        );
        const take = (nodeId: string, res: RunningTask['resources']) => {
          const f = free.get(nodeId);
          if (!f) return;
          f.cpus -= res.cpus;
          f.mem -= res.memoryBytes;
          f.disk -= res.diskBytes ?? 0;
          f.slots -= 1;
        };
        for (const run of input.running) take(run.nodeId, run.resources);
        const taskById = new Map(input.tasks.map((t) => [t.taskId, t]));
        for (const a of r.assignments) take(a.nodeId, taskById.get(a.taskId)!.resources);
        for (const u of r.unplaced) {
          const t = taskById.get(u.taskId)!;
          if (t.notBefore > input.now || t.resources.gpus) continue; // GPU fit depends on which GPUs are held
          for (const n of input.nodes) {
            const f = free.get(n.id);
            if (!f || !satisfies(n, t)) continue;
            const fitsHere =
              f.slots >= 1 &&
              f.cpus + 1e-6 >= t.resources.cpus &&
              f.mem >= t.resources.memoryBytes &&
              f.disk >= (t.resources.diskBytes ?? 0);
            // Milli-cpu rounding may leave < 0.001 cpu unusable; allow that slack only.
            assert.ok(
              !fitsHere || f.cpus - t.resources.cpus < 0.001,
              `${t.taskId} would fit on ${n.id}: ${u.reason}`,
            );
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('is deterministic', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        assert.deepEqual(schedule(input), schedule(structuredClone(input)));
      }),
      { numRuns: 100 },
    );
  });

  it('is max-min fair between submitters for identical tasks', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('alice', 'bob', 'carol', 'dave'), { minLength: 1, maxLength: 80 }),
        fc.integer({ min: 0, max: 40 }),
        (submitters, slots) => {
          const input: ScheduleInput = {
            now: 0,
            nodes: [
              node('n', {
                maxConcurrent: slots,
                capacity: { cpus: 1000, memoryBytes: 1000 * GiB, diskBytes: 0, gpus: [] },
              }),
            ],
            tasks: submitters.map((s, i) => task({ taskId: `t${i}`, submitter: s })),
            running: [],
          };
          const r = schedule(input);
          const placed = new Map<string, number>();
          const queued = new Map<string, number>();
          for (const s of submitters) queued.set(s, (queued.get(s) ?? 0) + 1);
          for (const a of r.assignments) {
            const s = input.tasks[Number(a.taskId.slice(1))].submitter;
            placed.set(s, (placed.get(s) ?? 0) + 1);
          }
          assert.equal(r.assignments.length, Math.min(slots, submitters.length));
          // A submitter left with unplaced tasks got at least as many as anyone else, minus one.
          const most = Math.max(0, ...placed.values());
          for (const [s, n] of queued) {
            const got = placed.get(s) ?? 0;
            if (got < n) assert.ok(got >= most - 1, `${s} got ${got}, someone got ${most}`);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
