import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { KvOp } from './linearizability.ts';
import { checkKvHistory } from './linearizability.ts';

const INF = Number.POSITIVE_INFINITY;

describe('linearizability checker', () => {
  it('accepts a sequential history', () => {
    const h: KvOp[] = [
      { kind: 'put', key: 'a', value: '1', call: 0, ret: 1 },
      { kind: 'get', key: 'a', value: '1', call: 2, ret: 3 },
      { kind: 'put', key: 'a', value: '2', call: 4, ret: 5 },
      { kind: 'get', key: 'a', value: '2', call: 6, ret: 7 },
    ];
    assert.equal(checkKvHistory(h).ok, true);
  });

  it('accepts concurrent operations in either order', () => {
    const h: KvOp[] = [
      { kind: 'put', key: 'a', value: '1', call: 0, ret: 10 },
      { kind: 'put', key: 'a', value: '2', call: 1, ret: 9 },
      { kind: 'get', key: 'a', value: '1', call: 11, ret: 12 },
      { kind: 'get', key: 'a', value: null, call: 0, ret: 2 },
    ];
    assert.equal(checkKvHistory(h).ok, true);
  });

  it('rejects a stale read after a completed write (non-linearizable)', () => {
    const h: KvOp[] = [
      { kind: 'put', key: 'a', value: '1', call: 0, ret: 1 },
      { kind: 'put', key: 'a', value: '2', call: 2, ret: 3 },
      { kind: 'get', key: 'a', value: '1', call: 4, ret: 5 },
    ];
    const r = checkKvHistory(h);
    assert.equal(r.ok, false);
    assert.equal(r.badKey, 'a');
  });

  it('rejects reads that observe values going back in time', () => {
    const h: KvOp[] = [
      { kind: 'put', key: 'k', value: 'x', call: 0, ret: 100 },
      { kind: 'get', key: 'k', value: 'x', call: 1, ret: 2 },
      { kind: 'get', key: 'k', value: null, call: 3, ret: 4 },
    ];
    assert.equal(checkKvHistory(h).ok, false);
  });

  it('rejects a read of a value that was never written', () => {
    const h: KvOp[] = [{ kind: 'get', key: 'k', value: 'ghost', call: 0, ret: 1 }];
    assert.equal(checkKvHistory(h).ok, false);
  });

  it('lets an unacknowledged write take effect late or never', () => {
    const late: KvOp[] = [
      { kind: 'put', key: 'k', value: 'x', call: 0, ret: INF },
      { kind: 'get', key: 'k', value: null, call: 1, ret: 2 },
      { kind: 'get', key: 'k', value: 'x', call: 5, ret: 6 },
    ];
    assert.equal(checkKvHistory(late).ok, true);
    const never: KvOp[] = [
      { kind: 'put', key: 'k', value: 'x', call: 0, ret: INF },
      { kind: 'get', key: 'k', value: null, call: 5, ret: 6 },
    ];
    assert.equal(checkKvHistory(never).ok, true);
    // ...but once observed it cannot disappear again.
    const flicker: KvOp[] = [...late, { kind: 'get', key: 'k', value: null, call: 7, ret: 8 }];
    assert.equal(checkKvHistory(flicker).ok, false);
  });

  it('checks keys independently', () => {
    const h: KvOp[] = [
      { kind: 'put', key: 'a', value: '1', call: 0, ret: 1 },
      { kind: 'get', key: 'b', value: '1', call: 2, ret: 3 },
    ];
    const r = checkKvHistory(h);
    assert.equal(r.ok, false);
    assert.equal(r.badKey, 'b');
  });
});
