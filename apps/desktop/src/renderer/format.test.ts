import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventMatches, formatBytes, formatDuration, pushBounded, shortId } from './format.ts';

describe('format', () => {
  it('bytes', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(16 * 1024 ** 3), '16 GiB');
    assert.equal(formatBytes(-1), '—');
  });
  it('durations', () => {
    assert.equal(formatDuration(12_000), '12s');
    assert.equal(formatDuration(249_000), '4m 09s');
    assert.equal(formatDuration(3 * 3600_000 + 5 * 60_000), '3h 05m');
  });
  it('short ids keep the tail', () => {
    assert.equal(shortId('12D3KooWAbcdefghijklmnop'), '…ghijklmnop');
    assert.equal(shortId(null), '—');
  });
  it('pushBounded keeps only the newest items', () => {
    const list = [1, 2, 3];
    pushBounded(list, [4, 5], 4);
    assert.deepEqual(list, [2, 3, 4, 5]);
  });
  it('eventMatches filters by level and case-insensitive text', () => {
    const levels = new Set(['warn', 'error']);
    assert.equal(eventMatches({ level: 'warn', msg: 'Disk FULL' }, levels, 'full'), true);
    assert.equal(eventMatches({ level: 'info', msg: 'Disk FULL' }, levels, ''), false);
    assert.equal(eventMatches({ level: 'error', msg: 'boom' }, levels, 'disk'), false);
  });
});
