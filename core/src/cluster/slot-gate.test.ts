// SlotGate: which of a node's runs hold a slot. Pure bookkeeping, so plain claims and a settable offer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Admission, type SlotClaim, SlotGate, type SlotOffer } from './slot-gate.ts';

const GiB = 1024 ** 3;
const claim = (cpus: number, memoryBytes = GiB): SlotClaim => ({ cpus, memoryBytes, admitted: false });
/** Lets pending promise callbacks run. */
const settle = () => new Promise((r) => setImmediate(r));

function track(p: Promise<Admission>): { how: Admission | null } {
  const t = { how: null as Admission | null };
  void p.then((how) => {
    t.how = how;
  });
  return t;
}

describe('SlotGate', () => {
  it('admits within maxConcurrent, CPUs and memory at once; the rest wait in order and start as slots free', async () => {
    const offer: SlotOffer = { maxConcurrent: 3, cpus: 2, memoryBytes: 4 * GiB };
    const gate = new SlotGate(() => offer);
    const a = claim(1);
    const b = claim(1);
    assert.equal(await gate.admit(a), 'now');
    assert.equal(await gate.admit(b), 'now');
    // CPUs are full (2 of 2): the next waits although a slot is free by count.
    const c = claim(0.5);
    const d = claim(0.5);
    const tc = track(gate.admit(c));
    const td = track(gate.admit(d));
    await settle();
    assert.deepEqual([tc.how, td.how], [null, null]);
    assert.equal(gate.waiting, 2);
    assert.deepEqual({ ...gate.held }, { count: 2, cpus: 2, memoryBytes: 2 * GiB });
    // One CPU back: c and d both fit (1 + 0.5 + 0.5 = 2 CPUs, 3 runs).
    gate.release(a);
    await settle();
    assert.deepEqual([tc.how, td.how], ['waited', 'waited']);
    assert.equal(a.admitted, false);
    assert.equal(c.admitted, true);
    assert.deepEqual({ ...gate.held }, { count: 3, cpus: 2, memoryBytes: 3 * GiB });
    // Now the count is full: a claim that needs no CPU at all still waits for a run to end.
    const e = claim(0, 0);
    const te = track(gate.admit(e));
    await settle();
    assert.equal(te.how, null);
    gate.release(b);
    await settle();
    assert.equal(te.how, 'waited');
    assert.deepEqual({ ...gate.held }, { count: 3, cpus: 1, memoryBytes: 2 * GiB });
    // A second release of the same claim changes nothing.
    gate.release(b);
    assert.equal(gate.held.count, 3);
  });

  it('keeps arrival order: a small claim does not pass a big one waiting ahead of it', async () => {
    const gate = new SlotGate(() => ({ maxConcurrent: 10, cpus: 2, memoryBytes: 64 * GiB }));
    const running = claim(1.5);
    await gate.admit(running);
    const big = track(gate.admit(claim(2)));
    const small = track(gate.admit(claim(0.1)));
    await settle();
    assert.deepEqual([big.how, small.how], [null, null], 'the small one would fit, but waits its turn');
    gate.release(running);
    await settle();
    assert.deepEqual([big.how, small.how], ['waited', null]);
  });

  it('never waits while nothing holds a slot, even for a claim bigger than the offer', async () => {
    const offer = { maxConcurrent: 4, cpus: 4, memoryBytes: 8 * GiB };
    const gate = new SlotGate(() => offer);
    const placedEarlier = claim(3);
    await gate.admit(placedEarlier);
    // The owner lowers the caps: the next one waits until the node is empty, then runs anyway.
    offer.cpus = 1;
    const next = track(gate.admit(claim(3)));
    await settle();
    assert.equal(next.how, null);
    gate.release(placedEarlier);
    await settle();
    assert.equal(next.how, 'waited');
  });

  it('a claim stopped while waiting leaves the queue and resolves as aborted; others move up', async () => {
    const gate = new SlotGate(() => ({ maxConcurrent: 1, cpus: 8, memoryBytes: 8 * GiB }));
    const first = claim(1);
    await gate.admit(first);
    const stop = new AbortController();
    const stopped = claim(1);
    const ts = track(gate.admit(stopped, stop.signal));
    const tn = track(gate.admit(claim(1)));
    stop.abort();
    await settle();
    assert.equal(ts.how, 'aborted');
    assert.equal(stopped.admitted, false);
    assert.equal(gate.waiting, 1);
    gate.release(first);
    await settle();
    assert.equal(tn.how, 'waited');
  });

  it('an abort after admission changes nothing: the holder gives its slot back itself', async () => {
    const gate = new SlotGate(() => ({ maxConcurrent: 1, cpus: 8, memoryBytes: 8 * GiB }));
    const stop = new AbortController();
    const holder = claim(1);
    assert.equal(await gate.admit(holder, stop.signal), 'now');
    stop.abort();
    assert.equal(gate.held.count, 1);
    gate.release(claim(1)); // a claim that holds no slot is ignored
    assert.equal(gate.held.count, 1);
    gate.release(holder);
    assert.deepEqual({ ...gate.held }, { count: 0, cpus: 0, memoryBytes: 0 });
  });
});
