import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_PREFERENCES, withPreferenceDefaults } from './constants.ts';

describe('withPreferenceDefaults', () => {
  it('completes a partial object field by field and ignores wrongly typed values', () => {
    const p = withPreferenceDefaults({
      cpu: { idlePercent: 10, inUsePercent: 'x' },
      theme: 'dark',
      pauseWhilePrograms: 'steam',
      snoozeUntil: 123,
      extra: true,
    });
    assert.deepEqual(p.cpu, { inUsePercent: DEFAULT_PREFERENCES.cpu.inUsePercent, idlePercent: 10 });
    assert.equal(p.theme, 'dark');
    assert.deepEqual(p.pauseWhilePrograms, []);
    assert.equal(p.snoozeUntil, 123);
    assert.equal('extra' in p, false);
  });
  it('returns the defaults for garbage', () => {
    assert.deepEqual(withPreferenceDefaults(null), DEFAULT_PREFERENCES);
    assert.deepEqual(withPreferenceDefaults([1]), DEFAULT_PREFERENCES);
  });
});
