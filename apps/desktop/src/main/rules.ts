/**
 * The contribution rules: given the volunteer's preferences, what the machine is doing right now and the
 * previous decision, decide whether to contribute and how much to offer.
 *
 * Pure and synchronous (the caller samples the machine and applies the decision) so every rule is unit-tested
 * with plain objects. Two asymmetries are deliberate:
 *  - stopping is immediate (the user came back, the battery ran low, it got hot): the volunteer comes first;
 *  - starting again waits until conditions held for `resumeGraceSeconds`, and temperature/battery thresholds
 *    have a hysteresis band, so a sensor hovering at a threshold cannot start and kill tasks every few seconds.
 */
import type { Preferences, ScheduleWindow } from './preferences.ts';

/** A thermal pause lasts until the temperature is this far below the limit. */
export const TEMPERATURE_HYSTERESIS_C = 5;
/** A low-battery pause lasts until the charge is this far above the minimum. */
export const BATTERY_HYSTERESIS_PERCENT = 5;
/**
 * Docker `--cpu-shares` for task containers: the lowest weight the kernel accepts, so under contention any
 * process of the volunteer wins against any task. Applied always, independent of the rules' decision.
 */
export const TASK_CPU_SHARES = 2;

export type Executor = 'docker' | 'wasm';

export interface MachineState {
  /** Epoch ms of this sample. */
  now: number;
  /** Seconds since the last keyboard/mouse input. */
  idleSeconds: number;
  /** Epoch ms when the user became active after being idle (shown in the reason); null while idle or unknown. */
  userActiveSince: number | null;
  onBattery: boolean;
  /** 0..100, null when there is no battery or it is unknown. */
  batteryPercent: number | null;
  /** Null when the sensor is missing: an unknown temperature never pauses. */
  cpuTempC: number | null;
  gpuTempC: number | null;
  /** Executable names of running processes (any case, with or without `.exe`). */
  runningProcesses: readonly string[];
  /** The machine's total capacity that the percentages in the preferences apply to. */
  hardware: { logicalCores: number; memoryBytes: number; gpuCount: number };
}

export type ReasonCode =
  | 'contributing'
  | 'paused-by-user'
  | 'snoozed'
  | 'outside-schedule'
  | 'no-executors'
  | 'on-battery'
  | 'battery-low'
  | 'too-hot'
  | 'program-running'
  | 'user-active'
  | 'nothing-offered'
  | 'resuming';

export interface Decision {
  contribute: boolean;
  reasonCode: ReasonCode;
  /** One sentence for the volunteer: why we (don't) contribute right now. */
  reason: string;
  offered: { cpus: number; memoryBytes: number; gpu: boolean };
  executors: Executor[];
  /** Network access for task containers. */
  network: 'none' | 'bridge';
  /** CPU weight for task containers (always the lowest). */
  cpuShares: number;
  /** True when the user counts as idle (no input for `idle.idleMinutes`). */
  userIdle: boolean;
  /** Epoch ms since when every condition has been satisfied (drives the resume grace); null if not satisfied. */
  okSince: number | null;
}

const ZERO_OFFER = Object.freeze({ cpus: 0, memoryBytes: 0, gpu: false });

export function decide(prefs: Preferences, machine: MachineState, previous: Decision | null): Decision {
  const userIdle = machine.idleSeconds >= prefs.idle.idleMinutes * 60;
  const executors: Executor[] = [];
  if (prefs.executors.docker) executors.push('docker');
  if (prefs.executors.wasm) executors.push('wasm');
  const base = {
    executors,
    network: prefs.taskNetworkAccess ? ('bridge' as const) : ('none' as const),
    cpuShares: TASK_CPU_SHARES,
    userIdle,
  };
  const stop = (reasonCode: ReasonCode, reason: string): Decision => ({
    ...base,
    contribute: false,
    reasonCode,
    reason,
    offered: { ...ZERO_OFFER },
    okSince: null,
  });

  const blocked = firstBlockingCondition(prefs, machine, previous, userIdle, executors);
  if (blocked) return stop(blocked.code, blocked.reason);

  const offered = offeredCapacity(prefs, machine, userIdle);
  if (offered.cpus <= 0 || offered.memoryBytes <= 0) {
    return stop('nothing-offered', 'Your settings offer no CPU or memory right now.');
  }

  // Everything is fine. If we were already contributing, keep going (capacity may change immediately:
  // lowering it when the user returns must not wait). If not, wait out the grace period first.
  const okSince = previous?.okSince ?? machine.now;
  const wasContributing = previous?.contribute === true;
  const graceMs = prefs.resumeGraceSeconds * 1000;
  if (!wasContributing && previous !== null && machine.now - okSince < graceMs) {
    const waitS = Math.ceil((graceMs - (machine.now - okSince)) / 1000);
    return { ...stop('resuming', `Conditions are fine again; resuming in ${waitS} s.`), okSince };
  }
  const gpuNote = offered.gpu ? ', GPU' : '';
  return {
    ...base,
    contribute: true,
    reasonCode: 'contributing',
    reason: userIdle
      ? `Contributing idle-time capacity (${offered.cpus} CPUs${gpuNote}).`
      : `Contributing in-use capacity (${offered.cpus} CPUs${gpuNote}).`,
    offered,
    okSince,
  };
}

interface Blocked {
  code: ReasonCode;
  reason: string;
}

/** The first rule (in priority order) that forbids contributing, or null. */
function firstBlockingCondition(
  prefs: Preferences,
  machine: MachineState,
  previous: Decision | null,
  userIdle: boolean,
  executors: Executor[],
): Blocked | null {
  if (!prefs.contribute) return { code: 'paused-by-user', reason: 'Paused by you.' };
  if (prefs.snoozeUntil !== null && prefs.snoozeUntil > machine.now) {
    return { code: 'snoozed', reason: `Snoozed until ${formatClock(prefs.snoozeUntil)}.` };
  }
  if (executors.length === 0) {
    return { code: 'no-executors', reason: 'No task types (Docker/WASM) are allowed in your settings.' };
  }
  if (prefs.schedule.enabled && !insideSchedule(prefs.schedule.windows, machine.now)) {
    return { code: 'outside-schedule', reason: 'Outside your contribution schedule.' };
  }
  if (machine.onBattery && prefs.power.requireAC) {
    return { code: 'on-battery', reason: 'On battery power; waiting for AC.' };
  }
  if (machine.onBattery && machine.batteryPercent !== null) {
    const wasLow = previous?.reasonCode === 'battery-low';
    const threshold = prefs.power.minBatteryPercent + (wasLow ? BATTERY_HYSTERESIS_PERCENT : 0);
    if (machine.batteryPercent < threshold) {
      return {
        code: 'battery-low',
        reason: `Battery at ${Math.round(machine.batteryPercent)} %; waiting for ${threshold} %.`,
      };
    }
  }
  if (machine.cpuTempC !== null) {
    const wasHot = previous?.reasonCode === 'too-hot';
    const limit = prefs.temperature.maxCpuC - (wasHot ? TEMPERATURE_HYSTERESIS_C : 0);
    if (machine.cpuTempC >= limit) {
      return {
        code: 'too-hot',
        reason: `CPU at ${Math.round(machine.cpuTempC)} °C; cooling down below ${limit} °C.`,
      };
    }
  }
  const program = findListedProgram(prefs.pauseWhilePrograms, machine.runningProcesses);
  if (program !== null) {
    return { code: 'program-running', reason: `Paused while ${program} is running.` };
  }
  if (prefs.idle.onlyWhenIdle && !userIdle) {
    const since = machine.userActiveSince !== null ? ` (since ${formatClock(machine.userActiveSince)})` : '';
    return {
      code: 'user-active',
      reason: `You are using the computer${since}; contributing after ${prefs.idle.idleMinutes} min idle.`,
    };
  }
  return null;
}

function offeredCapacity(prefs: Preferences, machine: MachineState, userIdle: boolean): Decision['offered'] {
  const cpuPercent = userIdle ? prefs.cpu.idlePercent : prefs.cpu.inUsePercent;
  const memPercent = userIdle ? prefs.memory.idlePercent : prefs.memory.inUsePercent;
  const cpus = shareOfCores(machine.hardware.logicalCores, cpuPercent);
  const memoryBytes = Math.floor((machine.hardware.memoryBytes * memPercent) / 100);
  const gpuAllowed = prefs.gpu.enabled && (!prefs.gpu.onlyWhenIdle || userIdle);
  const gpuCool = machine.gpuTempC === null || machine.gpuTempC < prefs.temperature.maxGpuC;
  const gpu = gpuAllowed && gpuCool && machine.hardware.gpuCount > 0;
  return { cpus, memoryBytes, gpu };
}

/** Cores in tenths (Docker accepts fractional CPUs); a non-zero share is never rounded down to nothing. */
export function shareOfCores(logicalCores: number, percent: number): number {
  if (percent <= 0 || logicalCores <= 0) return 0;
  const tenths = Math.floor((logicalCores * percent) / 10);
  return Math.max(1, tenths) / 10;
}

/** Normalize an executable name for matching: basename, lower case, without `.exe`. */
export function normalizeProgramName(name: string): string {
  const base = name.trim().split(/[\\/]/).pop() ?? '';
  return base.toLowerCase().replace(/\.exe$/, '');
}

export function findListedProgram(listed: readonly string[], running: readonly string[]): string | null {
  if (listed.length === 0) return null;
  const wanted = new Map(listed.map((name) => [normalizeProgramName(name), name.trim()]));
  for (const proc of running) {
    const hit = wanted.get(normalizeProgramName(proc));
    if (hit !== undefined) return hit;
  }
  return null;
}

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return h * 60 + m;
}

/** Is local time `now` inside any weekly window? Overnight windows (end <= start) belong to their start day. */
export function insideSchedule(windows: readonly ScheduleWindow[], now: number): boolean {
  const date = new Date(now);
  const day = date.getDay();
  const minute = date.getHours() * 60 + date.getMinutes();
  const yesterday = (day + 6) % 7;
  for (const window of windows) {
    const start = minutesOf(window.start);
    const end = minutesOf(window.end);
    if (start < end) {
      if (window.days.includes(day) && minute >= start && minute < end) return true;
    } else {
      // Overnight (or a full 24 h when start === end): the evening part today, the morning part tomorrow.
      if (window.days.includes(day) && minute >= start) return true;
      if (window.days.includes(yesterday) && minute < end) return true;
    }
  }
  return false;
}

function formatClock(epochMs: number): string {
  const date = new Date(epochMs);
  return `${String(date.getHours()).padStart(2, '0')}:${String(date.getMinutes()).padStart(2, '0')}`;
}
