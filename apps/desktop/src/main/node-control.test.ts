import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ControlState, offerLimitsOf, planNodeActions } from './node-control.ts';
import type { Decision } from './rules.ts';

function decision(overrides: Partial<Decision> = {}): Decision {
  return {
    contribute: true,
    reasonCode: 'contributing',
    reason: 'Contributing.',
    offered: { cpus: 2, memoryBytes: 1024, gpu: false },
    executors: ['docker', 'wasm'],
    network: 'none',
    cpuShares: 2,
    userIdle: false,
    okSince: 0,
    ...overrides,
  };
}
const state = (overrides: Partial<ControlState> = {}): ControlState => ({
  nodeMode: 'active',
  pausedByRules: false,
  appliedLimits: null,
  ...overrides,
});
const stopped = (reasonCode: Decision['reasonCode']) =>
  decision({
    contribute: false,
    reasonCode,
    reason: reasonCode,
    offered: { cpus: 0, memoryBytes: 0, gpu: false },
  });

describe('planNodeActions', () => {
  it('applies the offer once and not again while unchanged', () => {
    const d = decision();
    const first = planNodeActions(d, state());
    assert.deepEqual(first, [{ kind: 'limits', limits: offerLimitsOf(d) }]);
    assert.deepEqual(planNodeActions(d, state({ appliedLimits: offerLimitsOf(d) })), []);
  });

  it('stops running tasks at once when the user returns, lets them finish when the schedule ends', () => {
    assert.deepEqual(planNodeActions(stopped('user-active'), state()), [
      { kind: 'pause', mode: 'now', reason: 'user-active' },
    ]);
    assert.deepEqual(planNodeActions(stopped('outside-schedule'), state()), [
      { kind: 'pause', mode: 'finish', reason: 'outside-schedule' },
    ]);
  });

  it('escalates a drain to an immediate stop when it gets hot', () => {
    assert.deepEqual(planNodeActions(stopped('too-hot'), state({ nodeMode: 'draining' })), [
      { kind: 'pause', mode: 'now', reason: 'too-hot' },
    ]);
    assert.deepEqual(planNodeActions(stopped('outside-schedule'), state({ nodeMode: 'draining' })), []);
  });

  it('resumes only a pause the rules made, never one the owner made elsewhere', () => {
    const d = decision();
    const limits = offerLimitsOf(d);
    assert.deepEqual(
      planNodeActions(d, state({ nodeMode: 'paused', pausedByRules: true, appliedLimits: limits })),
      [{ kind: 'resume' }],
    );
    assert.deepEqual(
      planNodeActions(d, state({ nodeMode: 'paused', pausedByRules: false, appliedLimits: limits })),
      [],
    );
  });

  it('maps the decision to the daemon offer limits', () => {
    assert.deepEqual(offerLimitsOf(decision({ network: 'bridge', executors: ['wasm'] })), {
      cpus: 2,
      memoryBytes: 1024,
      gpus: false,
      executors: ['wasm'],
      network: true,
    });
  });
});
