import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { defaultPreferences, type Preferences, preferencesSchema } from './preferences.ts';
import { type Decision, decide, type MachineState, TASK_CPU_SHARES } from './rules.ts';

const GiB = 1024 ** 3;

const prefsArb: fc.Arbitrary<Preferences> = fc
  .record({
    contribute: fc.boolean(),
    cpuInUse: fc.integer({ min: 0, max: 100 }),
    cpuIdle: fc.integer({ min: 0, max: 100 }),
    memInUse: fc.integer({ min: 0, max: 100 }),
    memIdle: fc.integer({ min: 0, max: 100 }),
    gpu: fc.boolean(),
    gpuIdleOnly: fc.boolean(),
    onlyWhenIdle: fc.boolean(),
    idleMinutes: fc.integer({ min: 1, max: 240 }),
    grace: fc.integer({ min: 0, max: 600 }),
    requireAC: fc.boolean(),
    minBattery: fc.integer({ min: 0, max: 100 }),
    docker: fc.boolean(),
    wasm: fc.boolean(),
    network: fc.boolean(),
  })
  .map((r) => {
    const p = defaultPreferences();
    p.contribute = r.contribute;
    p.cpu = { inUsePercent: r.cpuInUse, idlePercent: r.cpuIdle };
    p.memory = { inUsePercent: r.memInUse, idlePercent: r.memIdle };
    p.gpu = { enabled: r.gpu, onlyWhenIdle: r.gpuIdleOnly };
    p.idle = { onlyWhenIdle: r.onlyWhenIdle, idleMinutes: r.idleMinutes };
    p.resumeGraceSeconds = r.grace;
    p.power = { requireAC: r.requireAC, minBatteryPercent: r.minBattery };
    p.executors = { docker: r.docker, wasm: r.wasm };
    p.taskNetworkAccess = r.network;
    return preferencesSchema.parse(p);
  });

const machineArb = (now: number): fc.Arbitrary<MachineState> =>
  fc.record({
    now: fc.constant(now),
    idleSeconds: fc.integer({ min: 0, max: 20_000 }),
    userActiveSince: fc.constant(null),
    onBattery: fc.boolean(),
    batteryPercent: fc.option(fc.integer({ min: 0, max: 100 }), { nil: null }),
    cpuTempC: fc.option(fc.integer({ min: 20, max: 110 }), { nil: null }),
    gpuTempC: fc.option(fc.integer({ min: 20, max: 110 }), { nil: null }),
    runningProcesses: fc.constant([]),
    hardware: fc.record({
      logicalCores: fc.integer({ min: 1, max: 256 }),
      memoryBytes: fc.integer({ min: 1, max: 1024 }).map((g) => g * GiB),
      gpuCount: fc.integer({ min: 0, max: 8 }),
    }),
  });

describe('decide: invariants over random preferences and machine sequences', () => {
  it('never offers more than the machine has or the volunteer allowed, and stops cleanly', () => {
    fc.assert(
      fc.property(
        prefsArb,
        fc
          .array(fc.integer({ min: 0, max: 120_000 }), { minLength: 1, maxLength: 12 })
          .chain((steps) => fc.tuple(...steps.map((_, i) => machineArb(1_800_000_000_000 + i * 5000)))),
        (prefs, machines) => {
          let previous: Decision | null = null;
          for (const m of machines) {
            const d = decide(prefs, m, previous);
            assert.equal(d.cpuShares, TASK_CPU_SHARES);
            assert.ok(d.offered.cpus <= m.hardware.logicalCores);
            assert.ok(d.offered.memoryBytes <= m.hardware.memoryBytes);
            if (!d.contribute) assert.deepEqual(d.offered, { cpus: 0, memoryBytes: 0, gpu: false });
            if (d.contribute) {
              assert.ok(prefs.contribute, 'master switch off never contributes');
              assert.ok(d.executors.length > 0);
              assert.ok(!(m.onBattery && prefs.power.requireAC), 'never on battery when AC is required');
              assert.ok(m.cpuTempC === null || m.cpuTempC < prefs.temperature.maxCpuC, 'never while too hot');
              if (prefs.idle.onlyWhenIdle)
                assert.ok(d.userIdle, 'idle-only never runs while the user is active');
              if (!prefs.gpu.enabled) assert.equal(d.offered.gpu, false);
            }
            assert.equal(d.network === 'bridge', prefs.taskNetworkAccess);
            previous = d;
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
