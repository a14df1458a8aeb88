import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultPreferences, type Preferences } from './preferences.ts';
import {
  type Decision,
  decide,
  findListedProgram,
  insideSchedule,
  type MachineState,
  shareOfCores,
  TASK_CPU_SHARES,
} from './rules.ts';

const GiB = 1024 ** 3;
// Local-time constructor keeps the schedule tests independent of the machine's time zone.
const MONDAY_10AM = new Date(2026, 10, 23, 10, 0).getTime();

function machine(overrides: Partial<MachineState> = {}): MachineState {
  return {
    now: MONDAY_10AM,
    idleSeconds: 0,
    userActiveSince: MONDAY_10AM - 60_000,
    onBattery: false,
    batteryPercent: null,
    cpuTempC: 50,
    gpuTempC: 45,
    runningProcesses: ['bash', 'firefox'],
    hardware: { logicalCores: 8, memoryBytes: 16 * GiB, gpuCount: 1 },
    ...overrides,
  };
}

function prefs(patch: (p: Preferences) => void = () => {}): Preferences {
  const p = defaultPreferences();
  patch(p);
  return p;
}

/** Run a sequence of samples through decide(), threading the previous decision like the app does. */
function run(p: Preferences, samples: Partial<MachineState>[]): Decision[] {
  const out: Decision[] = [];
  let previous: Decision | null = null;
  for (const s of samples) {
    previous = decide(p, machine(s), previous);
    out.push(previous);
  }
  return out;
}

describe('decide: capacity', () => {
  it('offers the in-use share while the user is active and the idle share when idle', () => {
    const active = decide(prefs(), machine({ idleSeconds: 10 }), null);
    assert.equal(active.contribute, true);
    assert.equal(active.userIdle, false);
    assert.deepEqual(active.offered, { cpus: 2, memoryBytes: Math.floor(16 * GiB * 0.2), gpu: false });

    const idle = decide(prefs(), machine({ idleSeconds: 5 * 60 }), null);
    assert.equal(idle.userIdle, true);
    assert.deepEqual(idle.offered, { cpus: 6, memoryBytes: Math.floor(16 * GiB * 0.5), gpu: false });
  });

  it('drops to the in-use share on the first sample after the user returns (no grace when shrinking)', () => {
    const [idle, back] = run(prefs(), [{ idleSeconds: 600 }, { idleSeconds: 1, now: MONDAY_10AM + 5000 }]);
    assert.equal(idle.offered.cpus, 6);
    assert.equal(back.contribute, true);
    assert.equal(back.offered.cpus, 2);
  });

  it('always gives task containers the lowest CPU weight', () => {
    assert.equal(decide(prefs(), machine(), null).cpuShares, TASK_CPU_SHARES);
    assert.equal(TASK_CPU_SHARES, 2);
  });

  it('offers nothing when the configured share is zero', () => {
    const d = decide(
      prefs((p) => {
        p.cpu.inUsePercent = 0;
      }),
      machine(),
      null,
    );
    assert.equal(d.contribute, false);
    assert.equal(d.reasonCode, 'nothing-offered');
  });

  it('shareOfCores never rounds a non-zero share down to zero and keeps tenths', () => {
    assert.equal(shareOfCores(2, 10), 0.2);
    assert.equal(shareOfCores(1, 1), 0.1);
    assert.equal(shareOfCores(8, 25), 2);
    assert.equal(shareOfCores(3, 50), 1.5);
    assert.equal(shareOfCores(8, 0), 0);
  });
});

describe('decide: GPU', () => {
  const gpuOn = (onlyWhenIdle: boolean) =>
    prefs((p) => {
      p.gpu = { enabled: true, onlyWhenIdle };
    });

  it('is off unless enabled', () => {
    assert.equal(decide(prefs(), machine({ idleSeconds: 3600 }), null).offered.gpu, false);
  });
  it('only when idle: offered when idle, withdrawn when the user is active', () => {
    assert.equal(decide(gpuOn(true), machine({ idleSeconds: 3600 }), null).offered.gpu, true);
    assert.equal(decide(gpuOn(true), machine({ idleSeconds: 3 }), null).offered.gpu, false);
    assert.equal(decide(gpuOn(false), machine({ idleSeconds: 3 }), null).offered.gpu, true);
  });
  it('is withdrawn when the GPU is too hot or absent, while CPU work continues', () => {
    const hot = decide(gpuOn(false), machine({ gpuTempC: 90 }), null);
    assert.equal(hot.contribute, true);
    assert.equal(hot.offered.gpu, false);
    const none = decide(
      gpuOn(false),
      machine({ hardware: { logicalCores: 4, memoryBytes: GiB, gpuCount: 0 } }),
      null,
    );
    assert.equal(none.offered.gpu, false);
  });
});

describe('decide: idle-only mode', () => {
  const idleOnly = prefs((p) => {
    p.idle = { onlyWhenIdle: true, idleMinutes: 10 };
    p.resumeGraceSeconds = 0;
  });

  it('contributes only after N idle minutes', () => {
    assert.equal(decide(idleOnly, machine({ idleSeconds: 9 * 60 }), null).reasonCode, 'user-active');
    assert.equal(decide(idleOnly, machine({ idleSeconds: 10 * 60 }), null).contribute, true);
  });

  it('yields on the first sample after the user returns', () => {
    const [a, b] = run(idleOnly, [{ idleSeconds: 3600 }, { idleSeconds: 2, now: MONDAY_10AM + 2000 }]);
    assert.equal(a.contribute, true);
    assert.equal(b.contribute, false);
    assert.equal(b.reasonCode, 'user-active');
    assert.match(b.reason, /since 09:59/);
    assert.deepEqual(b.offered, { cpus: 0, memoryBytes: 0, gpu: false });
  });
});

describe('decide: grace period against flapping', () => {
  it('waits resumeGraceSeconds of continuously good conditions before resuming', () => {
    const p = prefs((x) => {
      x.resumeGraceSeconds = 60;
    });
    const t = (s: number) => MONDAY_10AM + s * 1000;
    const ds = run(p, [
      { now: t(0) },
      { now: t(5), runningProcesses: ['game'] }, // not listed: irrelevant
      { now: t(10), onBattery: true, batteryPercent: 90 }, // requireAC → stop at once
      { now: t(20) }, // back on AC: grace starts
      { now: t(50) },
      { now: t(55), onBattery: true, batteryPercent: 90 }, // flap: grace restarts
      { now: t(60) },
      { now: t(119) },
      { now: t(120) },
    ]);
    assert.deepEqual(
      ds.map((d) => d.contribute),
      [true, true, false, false, false, false, false, false, true],
    );
    assert.equal(ds[3].reasonCode, 'resuming');
    assert.match(ds[3].reason, /60 s/);
    assert.equal(ds[8].reasonCode, 'contributing');
  });

  it('contributes at once on the very first decision (app start)', () => {
    assert.equal(decide(prefs(), machine(), null).contribute, true);
  });
});

describe('decide: power', () => {
  it('requires AC when asked to', () => {
    const d = decide(prefs(), machine({ onBattery: true, batteryPercent: 100 }), null);
    assert.equal(d.reasonCode, 'on-battery');
  });
  it('on battery (allowed) stops below the minimum and resumes only above minimum + hysteresis', () => {
    const p = prefs((x) => {
      x.power = { requireAC: false, minBatteryPercent: 40 };
      x.resumeGraceSeconds = 0;
    });
    const ds = run(p, [
      { onBattery: true, batteryPercent: 60 },
      { onBattery: true, batteryPercent: 39 },
      { onBattery: true, batteryPercent: 42 },
      { onBattery: true, batteryPercent: 45 },
      { onBattery: true, batteryPercent: 41 },
    ]);
    assert.deepEqual(
      ds.map((d) => d.reasonCode),
      ['contributing', 'battery-low', 'battery-low', 'contributing', 'contributing'],
    );
  });
});

describe('decide: temperature', () => {
  it('pauses at the CPU limit and resumes only after cooling below limit - 5 °C', () => {
    const p = prefs((x) => {
      x.temperature.maxCpuC = 80;
      x.resumeGraceSeconds = 0;
    });
    const ds = run(p, [
      { cpuTempC: 79 },
      { cpuTempC: 80 },
      { cpuTempC: 77 },
      { cpuTempC: 74 },
      { cpuTempC: 79 },
    ]);
    assert.deepEqual(
      ds.map((d) => d.contribute),
      [true, false, false, true, true],
    );
    assert.equal(ds[1].reasonCode, 'too-hot');
  });
  it('an unknown temperature never pauses', () => {
    assert.equal(decide(prefs(), machine({ cpuTempC: null, gpuTempC: null }), null).contribute, true);
  });
});

describe('decide: programs, schedule, executors, network, snooze, switch', () => {
  it('pauses while a listed program runs (case-insensitive, .exe and paths ignored)', () => {
    const p = prefs((x) => {
      x.pauseWhilePrograms = ['Steam', 'obs64.exe'];
    });
    assert.equal(decide(p, machine({ runningProcesses: ['bash'] }), null).contribute, true);
    const d = decide(p, machine({ runningProcesses: ['C:\\Games\\STEAM.EXE'] }), null);
    assert.equal(d.reasonCode, 'program-running');
    assert.match(d.reason, /Steam/);
    assert.equal(findListedProgram(['obs64.exe'], ['/usr/bin/obs64']), 'obs64.exe');
    assert.equal(findListedProgram([], ['anything']), null);
  });

  it('respects the weekly window, including overnight windows', () => {
    const p = prefs((x) => {
      x.schedule = { enabled: true, windows: [{ days: [1, 2, 3, 4, 5], start: '22:00', end: '07:00' }] };
    });
    assert.equal(decide(p, machine(), null).reasonCode, 'outside-schedule');
    const mon23 = new Date(2026, 10, 23, 23, 0).getTime();
    const tue06 = new Date(2026, 10, 24, 6, 59).getTime();
    const tue07 = new Date(2026, 10, 24, 7, 0).getTime();
    const sun23 = new Date(2026, 10, 22, 23, 0).getTime();
    const sat06 = new Date(2026, 10, 28, 6, 0).getTime(); // Friday night window still running
    assert.equal(decide(p, machine({ now: mon23 }), null).contribute, true);
    assert.equal(insideSchedule(p.schedule.windows, tue06), true);
    assert.equal(insideSchedule(p.schedule.windows, tue07), false);
    assert.equal(insideSchedule(p.schedule.windows, sun23), false);
    assert.equal(insideSchedule(p.schedule.windows, sat06), true);
    const daytime = [{ days: [1], start: '09:00', end: '17:00' }];
    assert.equal(insideSchedule(daytime, MONDAY_10AM), true);
    assert.equal(insideSchedule(daytime, new Date(2026, 10, 23, 17, 0).getTime()), false);
  });

  it('lists only allowed executors and refuses to contribute with none', () => {
    const onlyWasm = prefs((x) => {
      x.executors = { docker: false, wasm: true };
    });
    assert.deepEqual(decide(onlyWasm, machine(), null).executors, ['wasm']);
    const none = prefs((x) => {
      x.executors = { docker: false, wasm: false };
    });
    assert.equal(decide(none, machine(), null).reasonCode, 'no-executors');
  });

  it('gives tasks network access only when allowed', () => {
    assert.equal(decide(prefs(), machine(), null).network, 'none');
    const allowed = prefs((x) => {
      x.taskNetworkAccess = true;
    });
    assert.equal(decide(allowed, machine(), null).network, 'bridge');
  });

  it('snooze pauses until its end, then contribution resumes', () => {
    const p = prefs((x) => {
      x.snoozeUntil = MONDAY_10AM + 3600_000;
      x.resumeGraceSeconds = 0;
    });
    const d = decide(p, machine(), null);
    assert.equal(d.reasonCode, 'snoozed');
    assert.match(d.reason, /11:00/);
    assert.equal(decide(p, machine({ now: MONDAY_10AM + 3600_000 }), d).contribute, true);
  });

  it('the master switch wins over everything', () => {
    const p = prefs((x) => {
      x.contribute = false;
    });
    const d = decide(p, machine({ idleSeconds: 99999 }), null);
    assert.equal(d.contribute, false);
    assert.equal(d.reasonCode, 'paused-by-user');
  });
});
