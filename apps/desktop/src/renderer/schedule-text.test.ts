import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatSchedule, parseSchedule } from './schedule-text.ts';

describe('schedule text', () => {
  it('parses lists, ranges and wrapping ranges', () => {
    assert.deepEqual(parseSchedule('mon-fri 09:00-17:00\nsat,sun 22:00-07:00\nfri-mon 00:00-06:00'), [
      { days: [1, 2, 3, 4, 5], start: '09:00', end: '17:00' },
      { days: [0, 6], start: '22:00', end: '07:00' },
      { days: [0, 1, 5, 6], start: '00:00', end: '06:00' },
    ]);
  });
  it('round-trips through formatSchedule', () => {
    const windows = [{ days: [1, 3], start: '08:30', end: '12:00' }];
    assert.deepEqual(parseSchedule(formatSchedule(windows)), windows);
  });
  it('rejects garbage with the line number', () => {
    assert.throws(() => parseSchedule('mon 9-5'), /line 1/);
    assert.throws(() => parseSchedule('mon 09:00-10:00\nfunday 09:00-10:00'), /line 2: unknown day/);
  });
  it('empty text is no windows', () => {
    assert.deepEqual(parseSchedule('  \n'), []);
  });
});
