/**
 * Deterministic simulation tests (see sim/cluster.ts for the fault model and the invariants checked).
 *
 *   RAFT_SIM_SEEDS=N   run seeds 1..N (default 2000)
 *   RAFT_SIM_SEED=s    run only seed s (to reproduce a failure; runs identically every time)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runSeed, SimFailure } from './sim/cluster.ts';

const DEFAULT_SEEDS = 2000;
/** Failures printed in full before the rest are only counted (bounded test output). */
const MAX_REPORTED_FAILURES = 5;

function seedsToRun(): number[] {
  const one = process.env.RAFT_SIM_SEED;
  if (one !== undefined && one !== '') return [Number.parseInt(one, 10)];
  const n = Number.parseInt(process.env.RAFT_SIM_SEEDS ?? String(DEFAULT_SEEDS), 10);
  return Array.from({ length: n }, (_, i) => i + 1);
}

describe('raft deterministic simulation', () => {
  it('keeps election safety, log matching, leader completeness, state machine safety, durability of acknowledged writes and linearizability under faults', () => {
    const seeds = seedsToRun();
    const failures: string[] = [];
    const totals = { leaders: 0, acked: 0, ops: 0, snapshotsSent: 0, confChanges: 0, crashes: 0 };
    for (const seed of seeds) {
      try {
        const s = runSeed(seed);
        totals.leaders += s.leaders;
        totals.acked += s.acked;
        totals.ops += s.ops;
        totals.snapshotsSent += s.snapshotsSent;
        totals.confChanges += s.confChanges;
        totals.crashes += s.crashes;
      } catch (err) {
        if (!(err instanceof SimFailure)) throw err;
        if (failures.length < MAX_REPORTED_FAILURES) console.error(err.message.slice(0, 4000));
        failures.push(`seed ${err.seed} step ${err.step}`);
      }
    }
    console.log(`raft sim: ${seeds.length} seeds, ${JSON.stringify(totals)}`);
    assert.deepEqual(failures, [], `${failures.length} of ${seeds.length} seeds failed`);
    // The scenarios must actually exercise what they claim to.
    if (seeds.length >= 100) {
      assert.ok(totals.snapshotsSent > 0 && totals.confChanges > 0 && totals.crashes > 0 && totals.acked > 0);
    }
  });

  it('the same seed runs identically', () => {
    assert.deepEqual(runSeed(7), runSeed(7));
  });

  it('the checkers catch a driver that sends messages before persisting (sabotaged environment)', () => {
    let caught = 0;
    for (let seed = 1; seed <= 400 && caught === 0; seed++) {
      try {
        runSeed(seed, 'sendBeforePersist');
      } catch (err) {
        if (!(err instanceof SimFailure)) throw err;
        caught++;
      }
    }
    assert.ok(caught > 0, 'no seed detected the broken persistence order');
  });
});
