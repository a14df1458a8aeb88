/**
 * The leader's placement: a pure function from (nodes, queued tasks, running tasks, now) to assignments.
 *
 * Rules, in order of precedence:
 *  - only nodes that are `up` and in mode `active` receive work;
 *  - a task fits a node when the node's constraints match (executor, docker, arch, os, labels, GPU vendor and
 *    VRAM) and its free capacity (offered capacity minus assigned/running tasks) covers the request, and the
 *    node is below its `maxConcurrent` cap;
 *  - tasks whose `notBefore` is in the future wait (retry backoff);
 *  - higher priority is placed first; within one priority, submitters take turns, the one with the fewest
 *    tasks running plus placed this round going next (so a 100,000-task sweep cannot starve a single job);
 *    within one submitter, input order (the state machine gives submission order);
 *  - CPU tasks spread: the least-loaded fitting node (load = the largest used fraction of cpu, memory, task
 *    slots), preferring nodes without GPUs so GPU nodes stay free for GPU work; GPU tasks bin-pack: the node
 *    with the fewest free matching GPUs that still fits, so whole GPU nodes stay free for big requests;
 *  - no reservations: when a high-priority task fits nowhere, lower-priority tasks that fit still go.
 *
 * Speed: tasks are grouped by shape (executor + constraints + resources). CPU shapes search a heap of the
 * nodes that could ever take them (shared by every shape with the same such set, re-ordered in place when a
 * placement raises a node's load), best-first, so a placement costs O(log nodes) rather than a scan. Free
 * capacity only shrinks during a round, so a node that stops fitting a shape is skipped for good, a heap
 * remembers bounds on its members' free capacity (hopeless shapes fail in O(1)), and a shape with no
 * candidate left makes all of its remaining tasks unplaced at once. The round also stops as soon as no
 * active node has a free task slot.
 */
import type {
  Assignment,
  NodeGpu,
  QueuedTask,
  Resources,
  RunningTask,
  ScheduleInput,
  ScheduleOptions,
  ScheduleResult,
  SchedulerNode,
  Unplaced,
} from './types.ts';

const MILLI = 1000;
/** Requests round up and capacities round down to whole milli-cpus, so rounding never over-commits. */
const CPU_EPSILON = 1e-6;

function requestMilliCpus(cpus: number): number {
  return Math.max(1, Math.ceil(cpus * MILLI - CPU_EPSILON));
}
function capacityMilliCpus(cpus: number): number {
  return Math.max(0, Math.floor(cpus * MILLI + CPU_EPSILON));
}

interface NodeState {
  readonly index: number;
  readonly node: SchedulerNode;
  readonly capMilliCpus: number;
  readonly capMemory: number;
  readonly capSlots: number;
  readonly gpuVendors: string[];
  freeMilliCpus: number;
  freeMemory: number;
  freeDisk: number;
  freeSlots: number;
  /** true where the GPU at that index is not held by any task. */
  gpuFree: boolean[];
  /** 1 for nodes with GPUs: CPU work goes there only when nodes without GPUs are full. */
  readonly tier: number;
  /** Largest used fraction of cpu, memory and task slots; updated on every placement. */
  load: number;
  /** The constraint-class heaps this node is in, re-ordered when its load changes. */
  heaps: ClassHeap[];
}

interface Shape {
  readonly executor: QueuedTask['executor'];
  readonly resources: Resources;
  readonly constraints: QueuedTask['constraints'];
  readonly milliCpus: number;
  readonly memory: number;
  readonly disk: number;
  readonly gpuCount: number;
  readonly gpuVendor: string | null;
  readonly gpuMinVram: number;
  /** Set when some node restricts submitters: tasks of different submitters are then different shapes. */
  readonly submitter: string | null;
  /** Spread heap (CPU shapes) or bin-pack list (GPU shapes); built on first use. */
  candidates: ShapeCandidates | null;
  /** Nodes that could take this shape when empty (set once candidates are built), for the reason text. */
  usable: UsableSet | null;
  exhausted: boolean;
  reason: string | null;
}

function loadOf(n: NodeState): number {
  const cpu = n.capMilliCpus > 0 ? 1 - n.freeMilliCpus / n.capMilliCpus : 1;
  const mem = n.capMemory > 0 ? 1 - n.freeMemory / n.capMemory : 1;
  const slots = n.capSlots > 0 ? 1 - n.freeSlots / n.capSlots : 1;
  return Math.max(cpu, mem, slots);
}

function gpuMatches(gpuVendor: string, gpu: NodeGpu, shape: Shape): boolean {
  return (shape.gpuVendor === null || gpuVendor === shape.gpuVendor) && gpu.vramBytes >= shape.gpuMinVram;
}

function freeMatchingGpus(n: NodeState, shape: Shape): number {
  let count = 0;
  const gpus = n.node.capacity.gpus;
  for (let i = 0; i < gpus.length; i++) {
    if (n.gpuFree[i] && gpuMatches(n.gpuVendors[i], gpus[i], shape)) count++;
  }
  return count;
}

function fits(n: NodeState, shape: Shape): boolean {
  if (
    n.freeSlots < 1 ||
    n.freeMilliCpus < shape.milliCpus ||
    n.freeMemory < shape.memory ||
    n.freeDisk < shape.disk
  )
    return false;
  return shape.gpuCount === 0 || freeMatchingGpus(n, shape) >= shape.gpuCount;
}

/** Best-fit GPU choice: the smallest matching free GPUs, so big ones stay for requests that need them. */
function takeGpus(n: NodeState, shape: Shape): number[] {
  const gpus = n.node.capacity.gpus;
  const options: number[] = [];
  for (let i = 0; i < gpus.length; i++) {
    if (n.gpuFree[i] && gpuMatches(n.gpuVendors[i], gpus[i], shape)) options.push(i);
  }
  options.sort((a, b) => gpus[a].vramBytes - gpus[b].vramBytes || a - b);
  const chosen = options.slice(0, shape.gpuCount).sort((a, b) => a - b);
  for (const i of chosen) n.gpuFree[i] = false;
  return chosen;
}

function place(n: NodeState, shape: Shape): number[] | undefined {
  n.freeMilliCpus -= shape.milliCpus;
  n.freeMemory -= shape.memory;
  n.freeDisk -= shape.disk;
  n.freeSlots -= 1;
  n.load = loadOf(n);
  for (const heap of n.heaps) heap.increased(n);
  return shape.gpuCount > 0 ? takeGpus(n, shape) : undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Candidate structures

interface UsableSet {
  readonly nodes: NodeState[];
  /** How many of them are at their task limit after the round (computed once, for reasons). */
  atLimit: number | null;
}

interface ShapeCandidates {
  /** The best node that fits right now, or null when none does (then none will for the rest of the round). */
  best(): NodeState | null;
}

/** No task can fit: every task needs a slot and at least one milli-cpu. */
function isFull(n: NodeState): boolean {
  return n.freeSlots < 1 || n.freeMilliCpus < 1;
}

function nodeLess(a: NodeState, b: NodeState): boolean {
  if (a.tier !== b.tier) return a.tier < b.tier;
  if (a.load !== b.load) return a.load < b.load;
  return a.index < b.index;
}

/**
 * All active nodes matching one constraint class (executor + constraints), in a min-heap on (tier, load).
 * Shared by every shape of the class, and updated in place when a placement raises a node's load, so one
 * placement costs O(log nodes) per class the node is in — not per shape.
 */
class ClassHeap {
  private readonly heap: NodeState[];
  /** Position of each node (by `NodeState.index`) in `heap`, or -1. */
  private readonly pos: Int32Array;
  /** Scratch frontier for `bestFit`, reused between calls. */
  private readonly frontier: number[] = [];
  /**
   * Upper bounds on any member's free capacity. Free capacity only shrinks during a round, so stale bounds
   * stay valid; they are tightened whenever a search visits every member, and let later shapes that
   * cannot fit anywhere fail in O(1) instead of searching the whole heap again.
   */
  private maxFreeMilliCpus = Number.POSITIVE_INFINITY;
  private maxFreeMemory = Number.POSITIVE_INFINITY;
  private maxFreeDisk = Number.POSITIVE_INFINITY;

  constructor(nodes: NodeState[], nodeCount: number) {
    this.heap = nodes.filter((n) => !isFull(n));
    this.pos = new Int32Array(nodeCount).fill(-1);
    this.heap.forEach((n, i) => {
      this.pos[n.index] = i;
    });
    for (let i = (this.heap.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
    for (const n of this.heap) n.heaps.push(this);
  }

  get size(): number {
    return this.heap.length;
  }

  /** false when no member can have room for the shape (cheap check against the bounds). */
  mayFit(shape: Shape): boolean {
    return (
      this.heap.length > 0 &&
      shape.milliCpus <= this.maxFreeMilliCpus &&
      shape.memory <= this.maxFreeMemory &&
      shape.disk <= this.maxFreeDisk
    );
  }

  /** The node's load went up: move it down, or out once it can take nothing at all. */
  increased(n: NodeState): void {
    const i = this.pos[n.index];
    if (i < 0) return;
    if (!isFull(n)) {
      this.siftDown(i);
      return;
    }
    // Full nodes would otherwise sit in every search's path (e.g. full nodes without GPUs ahead of
    // every node with GPUs), and a full node never gets room back during a round.
    const heap = this.heap;
    const pos = this.pos;
    const last = heap.pop()!;
    pos[n.index] = -1;
    if (i < heap.length) {
      heap[i] = last;
      pos[last.index] = i;
      this.siftUp(i);
      this.siftDown(pos[last.index]);
    }
  }

  private siftUp(start: number): void {
    const heap = this.heap;
    const pos = this.pos;
    let i = start;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!nodeLess(heap[i], heap[parent])) return;
      const tmp = heap[i];
      heap[i] = heap[parent];
      heap[parent] = tmp;
      pos[heap[i].index] = i;
      pos[heap[parent].index] = parent;
      i = parent;
    }
  }

  /**
   * The least-loaded node that fits `shape`, visiting heap nodes in key order (best-first over the heap
   * tree). `dead` marks nodes already found not to fit this shape: they never fit again this round.
   */
  bestFit(shape: Shape, dead: Uint8Array): NodeState | null {
    const heap = this.heap;
    if (!this.mayFit(shape)) return null;
    const frontier = this.frontier;
    frontier.length = 0;
    frontier.push(0);
    let maxCpu = 0;
    let maxMem = 0;
    let maxDisk = 0;
    while (frontier.length > 0) {
      const p = this.popFrontier();
      const n = heap[p];
      if (n.freeSlots > 0) {
        // Only nodes with a free slot can take anything: the bounds ignore full nodes.
        if (n.freeMilliCpus > maxCpu) maxCpu = n.freeMilliCpus;
        if (n.freeMemory > maxMem) maxMem = n.freeMemory;
        if (n.freeDisk > maxDisk) maxDisk = n.freeDisk;
      }
      if (dead[n.index] === 0) {
        if (fits(n, shape)) return n;
        dead[n.index] = 1;
      }
      const l = 2 * p + 1;
      if (l < heap.length) this.pushFrontier(l);
      if (l + 1 < heap.length) this.pushFrontier(l + 1);
    }
    // Every member was visited and none fits: what they have free now bounds every later search.
    this.maxFreeMilliCpus = maxCpu;
    this.maxFreeMemory = maxMem;
    this.maxFreeDisk = maxDisk;
    return null;
  }

  private pushFrontier(p: number): void {
    const f = this.frontier;
    const heap = this.heap;
    let i = f.length;
    f.push(p);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!nodeLess(heap[f[i]], heap[f[parent]])) break;
      const t = f[i];
      f[i] = f[parent];
      f[parent] = t;
      i = parent;
    }
  }

  private popFrontier(): number {
    const f = this.frontier;
    const heap = this.heap;
    const top = f[0];
    const last = f.pop()!;
    if (f.length > 0) {
      f[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= f.length) break;
        const r = l + 1;
        const c = r < f.length && nodeLess(heap[f[r]], heap[f[l]]) ? r : l;
        if (!nodeLess(heap[f[c]], heap[f[i]])) break;
        const t = f[i];
        f[i] = f[c];
        f[c] = t;
        i = c;
      }
    }
    return top;
  }

  private siftDown(start: number): void {
    const heap = this.heap;
    const pos = this.pos;
    const n = heap.length;
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) return;
      const r = l + 1;
      const c = r < n && nodeLess(heap[r], heap[l]) ? r : l;
      if (!nodeLess(heap[c], heap[i])) return;
      const tmp = heap[i];
      heap[i] = heap[c];
      heap[c] = tmp;
      pos[heap[i].index] = i;
      pos[heap[c].index] = c;
      i = c;
    }
  }
}

/** Spread (CPU shapes): the least-loaded fitting node of the shape's class heap. */
class SpreadCandidates implements ShapeCandidates {
  private readonly heap: ClassHeap;
  private readonly shape: Shape;
  private readonly nodeCount: number;
  /** Allocated on the first real search: many shapes are refused by the heap's bounds alone. */
  private dead: Uint8Array | null = null;

  constructor(heap: ClassHeap, shape: Shape, nodeCount: number) {
    this.heap = heap;
    this.shape = shape;
    this.nodeCount = nodeCount;
  }

  best(): NodeState | null {
    if (!this.heap.mayFit(this.shape)) return null;
    this.dead ??= new Uint8Array(this.nodeCount);
    return this.heap.bestFit(this.shape, this.dead);
  }
}

/**
 * Bin-pack (GPU shapes): nodes sorted once by free matching GPUs, fewest first, then by load; the cursor
 * stays on a node until it no longer fits. A node passed over never fits again this round (capacity only
 * shrinks), so the cursor only moves forward.
 */
class BinPackCandidates implements ShapeCandidates {
  private readonly order: NodeState[];
  private readonly shape: Shape;
  private cursor = 0;

  constructor(nodes: NodeState[], shape: Shape) {
    this.shape = shape;
    const keyed = nodes.map((node) => ({ node, free: freeMatchingGpus(node, shape), load: loadOf(node) }));
    keyed.sort((a, b) => a.free - b.free || a.load - b.load || a.node.index - b.node.index);
    this.order = keyed.map((k) => k.node);
  }

  best(): NodeState | null {
    while (this.cursor < this.order.length) {
      const node = this.order[this.cursor];
      if (fits(node, this.shape)) return node;
      this.cursor++;
    }
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Static matching (constraints and total capacity; independent of what is running)

function lower(s: string): string {
  return s.toLowerCase();
}

/**
 * A node owner's submitter allow-list matches a submitter by its full name (`key:alice:12D3…`), its key
 * name (`alice`) or its key ID.
 */
export function submitterAllowed(allowed: readonly string[] | undefined, submitter: string | null): boolean {
  if (allowed === undefined || submitter === null) return true;
  const parts = submitter.split(':');
  return allowed.some((a) => a === submitter || (parts[0] === 'key' && (a === parts[1] || a === parts[2])));
}

function matchesConstraints(n: SchedulerNode, shape: Shape): boolean {
  if (!n.executors.includes(shape.executor)) return false;
  if (!submitterAllowed(n.allowedSubmitters, shape.submitter)) return false;
  if (shape.executor === 'docker' && !n.docker) return false;
  const c = shape.constraints;
  if (c.docker === true && !n.docker) return false;
  if (c.arch !== undefined && n.arch !== c.arch) return false;
  if (c.os !== undefined && n.os !== c.os) return false;
  if (c.labels !== undefined) {
    for (const key in c.labels) {
      if (n.labels[key] !== c.labels[key]) return false;
    }
  }
  return true;
}

function totalMatchingGpus(n: NodeState, shape: Shape): number {
  let count = 0;
  const gpus = n.node.capacity.gpus;
  for (let i = 0; i < gpus.length; i++) if (gpuMatches(n.gpuVendors[i], gpus[i], shape)) count++;
  return count;
}

function fitsWhenEmpty(n: NodeState, shape: Shape): boolean {
  if (n.capSlots < 1 || n.capMilliCpus < shape.milliCpus || n.capMemory < shape.memory) return false;
  if (n.node.capacity.diskBytes < shape.disk) return false;
  return shape.gpuCount === 0 || totalMatchingGpus(n, shape) >= shape.gpuCount;
}

// ---------------------------------------------------------------------------------------------------------
// Reasons for tasks that were not placed (computed once per shape)

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export function formatBytes(n: number): string {
  const fmt = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(1));
  if (n >= GiB) return `${fmt(Math.round((n / GiB) * 10) / 10)} GiB`;
  if (n >= MiB) return `${fmt(Math.round((n / MiB) * 10) / 10)} MiB`;
  if (n >= KiB) return `${fmt(Math.round((n / KiB) * 10) / 10)} KiB`;
  return `${n} bytes`;
}

function fmtCpus(milli: number): string {
  return String(milli / MILLI);
}

function distinct(values: string[]): string {
  return [...new Set(values)].sort().join(', ') || 'none';
}

function gpuWords(shape: Shape): string {
  const vendor = shape.gpuVendor !== null ? `${shape.gpuVendor} ` : '';
  const vram = shape.gpuMinVram > 0 ? ` with ≥ ${formatBytes(shape.gpuMinVram)} VRAM` : '';
  return `${shape.gpuCount} ${vendor}GPU${shape.gpuCount === 1 ? '' : 's'}${vram}`;
}

/** Why no node in `pool` can ever take this shape, or null when some node could (when empty). */
function staticMismatch(pool: NodeState[], shape: Shape): string | null {
  let set = pool;
  const narrow = (keep: (n: NodeState) => boolean, why: (before: NodeState[]) => string): string | null => {
    const next = set.filter(keep);
    if (next.length === 0) return why(set);
    set = next;
    return null;
  };
  const c = shape.constraints;
  const checks: (() => string | null)[] = [
    () =>
      narrow(
        (n) => n.node.executors.includes(shape.executor),
        () => `no node runs ${shape.executor} tasks`,
      ),
    () =>
      shape.executor === 'docker' || c.docker === true
        ? narrow(
            (n) => n.node.docker,
            () => 'no node has Docker',
          )
        : null,
    () =>
      c.arch === undefined
        ? null
        : narrow(
            (n) => n.node.arch === c.arch,
            (b) => `no node has arch ${c.arch} (available: ${distinct(b.map((n) => n.node.arch))})`,
          ),
    () =>
      c.os === undefined
        ? null
        : narrow(
            (n) => n.node.os === c.os,
            (b) => `no node runs os ${c.os} (available: ${distinct(b.map((n) => n.node.os))})`,
          ),
    () => {
      for (const key of Object.keys(c.labels ?? {})) {
        const value = c.labels![key];
        const why = narrow(
          (n) => n.node.labels[key] === value,
          () => `no node matches label ${key}=${value}`,
        );
        if (why !== null) return why;
      }
      return null;
    },
    // Last of the static checks, so the reason names the owner's allow-list when it is what excludes the node.
    () =>
      narrow(
        (n) => submitterAllowed(n.node.allowedSubmitters, shape.submitter),
        () => `no node accepts jobs from ${shape.submitter}`,
      ),
    () =>
      shape.gpuCount === 0
        ? null
        : narrow(
            (n) => totalMatchingGpus(n, shape) >= shape.gpuCount,
            (b) => {
              const most = Math.max(0, ...b.map((n) => totalMatchingGpus(n, shape)));
              return `no node has ${gpuWords(shape)} (most: ${most})`;
            },
          ),
    () =>
      narrow(
        (n) => n.capMilliCpus >= shape.milliCpus,
        (b) =>
          `no node offers ${fmtCpus(shape.milliCpus)} cpus (largest: ${fmtCpus(Math.max(0, ...b.map((n) => n.capMilliCpus)))})`,
      ),
    () =>
      narrow(
        (n) => n.capMemory >= shape.memory,
        (b) =>
          `no node offers ${formatBytes(shape.memory)} memory (largest: ${formatBytes(Math.max(0, ...b.map((n) => n.capMemory)))})`,
      ),
    () =>
      narrow(
        (n) => n.node.capacity.diskBytes >= shape.disk,
        (b) =>
          `no node offers ${formatBytes(shape.disk)} disk (largest: ${formatBytes(Math.max(0, ...b.map((n) => n.node.capacity.diskBytes)))})`,
      ),
    () =>
      narrow(
        (n) => n.capSlots >= 1,
        () => 'every matching node has maxConcurrent 0',
      ),
  ];
  for (const check of checks) {
    const why = check();
    if (why !== null) return why;
  }
  return null;
}

function explain(shape: Shape, active: NodeState[], all: NodeState[]): string {
  if (active.length === 0) {
    const down = all.filter((n) => !n.node.up).length;
    const modes = (m: string) => all.filter((n) => n.node.up && n.node.mode === m).length;
    return all.length === 0
      ? 'no nodes in the cluster'
      : `no node is up and active (${down} down, ${modes('paused')} paused, ${modes('draining')} draining)`;
  }
  // A shape that some node could take when empty only waits for room: skip the (slower) static analysis.
  const why = shape.usable !== null && shape.usable.nodes.length > 0 ? null : staticMismatch(active, shape);
  if (why !== null) {
    const inactive = all.filter((n) => !(n.node.up && n.node.mode === 'active'));
    if (inactive.length > 0 && staticMismatch(inactive, shape) === null) {
      return `${why}; a node that would match is down, paused or draining`;
    }
    return why;
  }
  let usable = shape.usable;
  if (usable === null) {
    usable = {
      nodes: active.filter((n) => matchesConstraints(n.node, shape) && fitsWhenEmpty(n, shape)),
      atLimit: null,
    };
  }
  const matching = usable.nodes;
  usable.atLimit ??= matching.filter((n) => n.freeSlots < 1).length;
  const atLimit = usable.atLimit;
  const need = [`${fmtCpus(shape.milliCpus)} cpus`, `${formatBytes(shape.memory)} memory`];
  if (shape.disk > 0) need.push(`${formatBytes(shape.disk)} disk`);
  if (shape.gpuCount > 0) need.push(gpuWords(shape));
  return (
    `all ${matching.length} matching node${matching.length === 1 ? ' is' : 's are'} busy ` +
    `(${atLimit} at their task limit; need ${need.join(', ')} free)`
  );
}

// ---------------------------------------------------------------------------------------------------------
// Fair ordering across submitters

interface SubmitterQueue {
  readonly name: string;
  readonly order: number;
  allocated: number;
  readonly tasks: number[];
  next: number;
}

function submitterLess(a: SubmitterQueue, b: SubmitterQueue): boolean {
  return a.allocated !== b.allocated ? a.allocated < b.allocated : a.order < b.order;
}

class SubmitterHeap {
  readonly items: SubmitterQueue[];
  constructor(items: SubmitterQueue[]) {
    this.items = items;
    for (let i = (items.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }
  top(): SubmitterQueue | undefined {
    return this.items[0];
  }
  removeTop(): void {
    const last = this.items.pop()!;
    if (this.items.length > 0) {
      this.items[0] = last;
      this.siftDown(0);
    }
  }
  /** Call after the top's `allocated` grew. */
  topIncreased(): void {
    this.siftDown(0);
  }
  private siftDown(start: number): void {
    const h = this.items;
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) return;
      const r = l + 1;
      const c = r < h.length && submitterLess(h[r], h[l]) ? r : l;
      if (!submitterLess(h[c], h[i])) return;
      const tmp = h[i];
      h[i] = h[c];
      h[c] = tmp;
      i = c;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------

function resourcesKey(r: Resources): string {
  const g = r.gpus;
  return `${r.cpus}|${r.memoryBytes}|${r.diskBytes ?? 0}|${g ? `${g.count}|${g.vendor ?? ''}|${g.minVramBytes ?? 0}` : ''}`;
}

function constraintsKey(c: QueuedTask['constraints']): string {
  const labels = c.labels
    ? Object.keys(c.labels)
        .sort()
        .map((k) => `${k}=${c.labels![k]}`)
        .join('\u0000')
    : '';
  return `${c.arch ?? ''}|${c.os ?? ''}|${c.docker === true ? 1 : 0}|${labels}`;
}

function makeShape(task: QueuedTask, submitter: string | null = null): Shape {
  const r = task.resources;
  return {
    submitter,
    executor: task.executor,
    resources: r,
    constraints: task.constraints,
    milliCpus: requestMilliCpus(r.cpus),
    memory: r.memoryBytes,
    disk: r.diskBytes ?? 0,
    gpuCount: r.gpus?.count ?? 0,
    gpuVendor: r.gpus?.vendor !== undefined ? lower(r.gpus.vendor) : null,
    gpuMinVram: r.gpus?.minVramBytes ?? 0,
    candidates: null,
    usable: null,
    exhausted: false,
    reason: null,
  };
}

function nodeState(node: SchedulerNode, index: number): NodeState {
  return {
    index,
    node,
    capMilliCpus: capacityMilliCpus(node.capacity.cpus),
    capMemory: node.capacity.memoryBytes,
    capSlots: Math.max(0, Math.floor(node.maxConcurrent)),
    gpuVendors: node.capacity.gpus.map((g) => lower(g.vendor)),
    freeMilliCpus: capacityMilliCpus(node.capacity.cpus),
    freeMemory: node.capacity.memoryBytes,
    freeDisk: node.capacity.diskBytes,
    freeSlots: Math.max(0, Math.floor(node.maxConcurrent)),
    gpuFree: node.capacity.gpus.map(() => true),
    tier: node.capacity.gpus.length > 0 ? 1 : 0,
    load: 0,
    heaps: [],
  };
}

/** Subtract a task that already holds part of the node; GPUs without recorded indices are taken best-fit. */
function hold(n: NodeState, r: RunningTask): void {
  const shape = makeShape({
    taskId: '',
    jobId: '',
    submitter: '',
    priority: 0,
    executor: 'docker',
    resources: r.resources,
    constraints: {},
    notBefore: 0,
    nextAttempt: 1,
  });
  n.freeMilliCpus -= shape.milliCpus;
  n.freeMemory -= shape.memory;
  n.freeDisk -= shape.disk;
  n.freeSlots -= 1;
  let gpusLeft = shape.gpuCount;
  for (const i of r.gpus ?? []) {
    if (i >= 0 && i < n.gpuFree.length && n.gpuFree[i]) {
      n.gpuFree[i] = false;
      gpusLeft--;
    }
  }
  if (gpusLeft > 0 && r.gpus === undefined) {
    const gpus = n.node.capacity.gpus;
    const options: number[] = [];
    for (let i = 0; i < gpus.length; i++)
      if (n.gpuFree[i] && gpuMatches(n.gpuVendors[i], gpus[i], shape)) options.push(i);
    options.sort((a, b) => gpus[a].vramBytes - gpus[b].vramBytes || a - b);
    for (const i of options.slice(0, gpusLeft)) n.gpuFree[i] = false;
  }
}

export function schedule(input: ScheduleInput, opts: ScheduleOptions = {}): ScheduleResult {
  const maxAssignments = opts.maxAssignments ?? Number.POSITIVE_INFINITY;
  // A node listed twice would have its capacity counted twice: the first entry wins.
  const seenIds = new Set<string>();
  const uniqueNodes = input.nodes.filter((n) => !seenIds.has(n.id) && seenIds.add(n.id) !== undefined);
  const all = uniqueNodes.map(nodeState);
  const active = all.filter((n) => n.node.up && n.node.mode === 'active');
  const byId = new Map<string, NodeState>();
  for (const n of active) byId.set(n.node.id, n);

  const runningBySubmitter = new Map<string, number>();
  for (const r of input.running) {
    const n = byId.get(r.nodeId);
    if (n !== undefined) hold(n, r);
    if (r.submitter !== undefined)
      runningBySubmitter.set(r.submitter, (runningBySubmitter.get(r.submitter) ?? 0) + 1);
  }
  let freeSlotsTotal = 0;
  for (const n of active) {
    freeSlotsTotal += Math.max(0, n.freeSlots);
    n.load = loadOf(n);
  }

  const tasks = input.tasks;
  // Owners' submitter allow-lists make the submitter part of a task's shape (rare: keep the fast path).
  const restricted = input.nodes.some((n) => n.allowedSubmitters !== undefined);
  const assignments: Assignment[] = [];
  const unplaced: Unplaced[] = [];
  const taskShape: (Shape | null)[] = new Array(tasks.length).fill(null);
  const placed = new Uint8Array(tasks.length);

  // Group by shape. Tasks of one job usually share their resources/constraints objects, so cache the
  // string keys by object identity to avoid rebuilding them 10,000 times.
  const shapes = new Map<string, Shape>();
  const resKeys = new Map<Resources, string>();
  const conKeys = new Map<QueuedTask['constraints'], string>();
  const levels = new Map<number, Map<string, SubmitterQueue>>();
  let submitterOrder = 0;
  for (let i = 0; i < tasks.length; i++) {
    const t = tasks[i];
    if (t.notBefore > input.now) {
      unplaced.push({
        taskId: t.taskId,
        reason: `waiting for retry backoff (${t.notBefore - input.now} ms left)`,
      });
      placed[i] = 2;
      continue;
    }
    let rk = resKeys.get(t.resources);
    if (rk === undefined) {
      rk = resourcesKey(t.resources);
      resKeys.set(t.resources, rk);
    }
    let ck = conKeys.get(t.constraints);
    if (ck === undefined) {
      ck = constraintsKey(t.constraints);
      conKeys.set(t.constraints, ck);
    }
    if (restricted) ck = `${ck}\u0001${t.submitter}`;
    const key = `${t.executor}#${ck}#${rk}`;
    let shape = shapes.get(key);
    if (shape === undefined) {
      shape = makeShape(t, restricted ? t.submitter : null);
      shapes.set(key, shape);
    }
    taskShape[i] = shape;
    let level = levels.get(t.priority);
    if (level === undefined) {
      level = new Map();
      levels.set(t.priority, level);
    }
    let queue = level.get(t.submitter);
    if (queue === undefined) {
      queue = {
        name: t.submitter,
        order: submitterOrder++,
        allocated: runningBySubmitter.get(t.submitter) ?? 0,
        tasks: [],
        next: 0,
      };
      level.set(t.submitter, queue);
    }
    queue.tasks.push(i);
  }

  // Constraint matching is shared by shapes that differ only in resources. CPU shapes whose statically
  // usable nodes (matching, and big enough when empty) are the same set share one heap, so a search never
  // wades through nodes too small for the shape.
  const classNodes = new Map<string, NodeState[]>();
  const usableHeaps = new Map<string, { set: UsableSet; heap: ClassHeap }[]>();
  const candidatesFor = (shape: Shape, classKey: string): ShapeCandidates => {
    let matching = classNodes.get(classKey);
    if (matching === undefined) {
      matching = active.filter((n) => matchesConstraints(n.node, shape));
      classNodes.set(classKey, matching);
    }
    const usable = matching.filter((n) => fitsWhenEmpty(n, shape));
    if (shape.gpuCount > 0) {
      shape.usable = { nodes: usable, atLimit: null };
      return new BinPackCandidates(usable, shape);
    }
    let hash = 0x811c9dc5;
    for (const n of usable) hash = Math.imul(hash ^ n.index, 0x01000193) >>> 0;
    const key = `${classKey}#${usable.length}#${hash}`;
    let bucket = usableHeaps.get(key);
    if (bucket === undefined) {
      bucket = [];
      usableHeaps.set(key, bucket);
    }
    let entry = bucket.find(
      (e) => e.set.nodes.length === usable.length && e.set.nodes.every((n, i) => n === usable[i]),
    );
    if (entry === undefined) {
      entry = { set: { nodes: usable, atLimit: null }, heap: new ClassHeap(usable, all.length) };
      bucket.push(entry);
    }
    shape.usable = entry.set;
    return new SpreadCandidates(entry.heap, shape, all.length);
  };
  const classKeyOf = new Map<Shape, string>();
  for (const [key, shape] of shapes) classKeyOf.set(shape, key.slice(0, key.lastIndexOf('#')));

  // Allocated counts are shared across priority levels: what a submitter got at a higher priority counts.
  const allocatedBySubmitter = new Map<string, number>(runningBySubmitter);
  let stopped: string | null = null;
  const priorities = [...levels.keys()].sort((a, b) => b - a);
  for (const priority of priorities) {
    if (stopped !== null) break;
    const queues = [...levels.get(priority)!.values()];
    for (const q of queues) q.allocated = allocatedBySubmitter.get(q.name) ?? 0;
    const heap = new SubmitterHeap(queues);
    for (;;) {
      const q = heap.top();
      if (q === undefined) break;
      if (assignments.length >= maxAssignments) {
        stopped = `deferred: this round's limit of ${maxAssignments} assignments was reached`;
        break;
      }
      if (freeSlotsTotal <= 0) {
        stopped = 'every active node is at its task limit';
        break;
      }
      // Skip this submitter's tasks whose shape already fits nowhere.
      while (q.next < q.tasks.length && taskShape[q.tasks[q.next]]!.exhausted) q.next++;
      if (q.next >= q.tasks.length) {
        heap.removeTop();
        continue;
      }
      const i = q.tasks[q.next++];
      const shape = taskShape[i]!;
      if (shape.candidates === null) shape.candidates = candidatesFor(shape, classKeyOf.get(shape)!);
      const node = shape.candidates.best();
      if (node === null) {
        shape.exhausted = true;
        shape.candidates = null; // let its per-shape memory go; exhausted shapes are never searched again
        continue;
      }
      const gpus = place(node, shape);
      freeSlotsTotal--;
      placed[i] = 1;
      assignments.push(
        gpus !== undefined
          ? { taskId: tasks[i].taskId, nodeId: node.node.id, gpus }
          : { taskId: tasks[i].taskId, nodeId: node.node.id },
      );
      q.allocated++;
      allocatedBySubmitter.set(q.name, q.allocated);
      heap.topIncreased();
    }
  }

  for (let i = 0; i < tasks.length; i++) {
    if (placed[i] !== 0) continue;
    const shape = taskShape[i]!;
    let reason: string;
    if (!shape.exhausted && stopped !== null && assignments.length >= maxAssignments) {
      reason = stopped;
    } else {
      shape.reason ??= explain(shape, active, all);
      reason = shape.reason;
    }
    unplaced.push({ taskId: tasks[i].taskId, reason });
  }
  return { assignments, unplaced };
}
