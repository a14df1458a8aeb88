// Daemon configuration: env parsing and validation of the failure-detection settings.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configFromEnv, DEFAULTS, resolveConfig } from './config.ts';

describe('daemon config: liveness', () => {
  it('defaults keep Raft failover under 1.5 s (randomized election timeout is 1-2x electionMs)', () => {
    const c = resolveConfig();
    assert.ok(c.liveness.electionMs * 2 <= 1500, `election timeout up to ${c.liveness.electionMs * 2} ms`);
  });

  it('reads MESHRUN_ELECTION_MS and keeps the other liveness defaults', () => {
    const c = resolveConfig(configFromEnv({ MESHRUN_ELECTION_MS: '900' }));
    assert.equal(c.liveness.electionMs, 900);
    assert.equal(c.liveness.deadVoterMs, DEFAULTS.liveness.deadVoterMs);
  });

  it('refuses an election timeout out of bounds with a clear error', () => {
    assert.throws(() => resolveConfig(configFromEnv({ MESHRUN_ELECTION_MS: '50' })), /electionMs/);
  });
});
