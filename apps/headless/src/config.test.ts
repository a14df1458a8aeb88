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

describe('daemon config: raft log', () => {
  it('snapshots every 10,000 entries and keeps 1,000 behind by default (etcd: 10,000 and 5,000)', () => {
    assert.deepEqual(resolveConfig().raftLog, {
      snapshotEntries: 10_000,
      catchUpEntries: 1000,
      maxInflight: 256,
    });
  });

  it('reads MESHRUN_SNAPSHOT_ENTRIES, MESHRUN_CATCHUP_ENTRIES and MESHRUN_RAFT_MAX_INFLIGHT, and a partial raftLog from a file', () => {
    const env = configFromEnv({ MESHRUN_SNAPSHOT_ENTRIES: '500' });
    assert.deepEqual(resolveConfig(env).raftLog, {
      snapshotEntries: 500,
      catchUpEntries: 1000,
      maxInflight: 256,
    });
    const both = configFromEnv({ MESHRUN_SNAPSHOT_ENTRIES: '40', MESHRUN_CATCHUP_ENTRIES: '5' });
    assert.deepEqual(resolveConfig(both).raftLog, {
      snapshotEntries: 40,
      catchUpEntries: 5,
      maxInflight: 256,
    });
    const inflight = configFromEnv({ MESHRUN_RAFT_MAX_INFLIGHT: '2' });
    assert.deepEqual(resolveConfig(inflight).raftLog, {
      snapshotEntries: 10_000,
      catchUpEntries: 1000,
      maxInflight: 2,
    });
    const file = { raftLog: { snapshotEntries: 2000 } } as never;
    assert.deepEqual(resolveConfig(file).raftLog, {
      snapshotEntries: 2000,
      catchUpEntries: 1000,
      maxInflight: 256,
    });
  });

  it('refuses a snapshot interval too small to be useful', () => {
    assert.throws(
      () => resolveConfig(configFromEnv({ MESHRUN_SNAPSHOT_ENTRIES: '3' })),
      /raftLog\.snapshotEntries/,
    );
  });
});
