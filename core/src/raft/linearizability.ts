/**
 * A linearizability checker (Wing & Gong search with Lowe's memoization, as in Porcupine) for a
 * key-value register model, plus the model itself.
 *
 * History entries are operations with a call time and a return time (an operation whose outcome is
 * unknown — the client crashed or timed out — has `ret = Infinity`: it may have taken effect at any point
 * after its call, or never). The checker partitions by key (linearizability is compositional) and searches
 * for a total order consistent with real-time order in which every read returns the latest write.
 * Written values are assumed unique (the simulation guarantees it), which makes pruning unobserved
 * unacknowledged writes sound.
 */

export type KvOp =
  | { kind: 'put'; key: string; value: string; call: number; ret: number }
  | {
      kind: 'get';
      key: string /** value read (null = absent) */;
      value: string | null;
      call: number;
      ret: number;
    };

export interface CheckResult {
  ok: boolean;
  /** The first key whose history is not linearizable. */
  badKey?: string;
  /** Search was cut off (too many states): the result is "unknown", reported as not ok. */
  exhausted?: boolean;
}

interface Node {
  op: number;
  isCall: boolean;
  time: number;
  prev: Node | null;
  next: Node | null;
  match: Node | null;
}

/** Max distinct (linearized set, state) pairs explored per key before giving up. */
export const MAX_SEARCH_STATES = 2_000_000;

export function checkKvHistory(history: readonly KvOp[]): CheckResult {
  const byKey = new Map<string, KvOp[]>();
  for (const op of history) {
    // A read without an answer has no effect on anything: drop it.
    if (op.kind === 'get' && op.ret === Number.POSITIVE_INFINITY) continue;
    const list = byKey.get(op.key);
    if (list) list.push(op);
    else byKey.set(op.key, [op]);
  }
  for (const [key, all] of byKey) {
    // A write with unknown outcome whose value no read returned can always be placed "never" (or last):
    // dropping it keeps the answer and prunes the search a lot (values are unique per write).
    const observed = new Set<string | null>();
    for (const op of all) if (op.kind === 'get') observed.add(op.value);
    const ops = all.filter(
      (op) => !(op.kind === 'put' && op.ret === Number.POSITIVE_INFINITY && !observed.has(op.value)),
    );
    const r = checkRegister(ops);
    if (r !== 'ok') return { ok: false, badKey: key, exhausted: r === 'exhausted' };
  }
  return { ok: true };
}

function checkRegister(ops: KvOp[]): 'ok' | 'bad' | 'exhausted' {
  const events: { op: number; isCall: boolean; time: number }[] = [];
  ops.forEach((op, i) => {
    if (!(op.call < op.ret)) throw new RangeError(`operation ${i} returns before it is called`);
    events.push({ op: i, isCall: true, time: op.call });
    events.push({ op: i, isCall: false, time: op.ret });
  });
  // Calls before returns at equal times would wrongly allow overlap; returns first is the strict choice.
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? 0 : a.isCall ? 1 : -1));

  const head: Node = { op: -1, isCall: false, time: -1, prev: null, next: null, match: null };
  let tail = head;
  const callNode: Node[] = new Array(ops.length);
  for (const ev of events) {
    const n: Node = { op: ev.op, isCall: ev.isCall, time: ev.time, prev: tail, next: null, match: null };
    tail.next = n;
    tail = n;
    if (ev.isCall) callNode[ev.op] = n;
    else callNode[ev.op].match = n;
  }

  const lift = (n: Node) => {
    n.prev!.next = n.next;
    if (n.next) n.next.prev = n.prev;
    const m = n.match!;
    m.prev!.next = m.next;
    if (m.next) m.next.prev = m.prev;
  };
  const unlift = (n: Node) => {
    const m = n.match!;
    m.prev!.next = m;
    if (m.next) m.next.prev = m;
    n.prev!.next = n;
    if (n.next) n.next.prev = n;
  };

  const linearized = new Uint8Array(ops.length);
  const seen = new Set<string>();
  const stack: { node: Node; state: string | null }[] = [];
  let state: string | null = null;
  let entry: Node | null = head.next;
  while (head.next !== null) {
    if (entry === null) return 'bad';
    if (entry.isCall) {
      const op = ops[entry.op];
      let ok: boolean;
      let next: string | null = state;
      if (op.kind === 'put') {
        ok = true;
        next = op.value;
      } else {
        ok = op.value === state;
      }
      if (ok) {
        linearized[entry.op] = 1;
        const key = `${Buffer.from(linearized).toString('base64')}|${next === null ? '\u0000' : next}`;
        if (!seen.has(key)) {
          if (seen.size >= MAX_SEARCH_STATES) return 'exhausted';
          seen.add(key);
          stack.push({ node: entry, state });
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized[entry.op] = 0;
      }
      entry = entry.next;
    } else {
      // Reached a return whose call is not linearized yet: backtrack.
      const top = stack.pop();
      if (!top) return 'bad';
      state = top.state;
      linearized[top.node.op] = 0;
      unlift(top.node);
      entry = top.node.next;
    }
  }
  return 'ok';
}
