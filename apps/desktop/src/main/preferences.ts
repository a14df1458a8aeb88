/**
 * Volunteer preferences: what share of this machine meshrun may use, and when.
 *
 * Pure schema + defaults + JSON persistence in the app-data directory. The same object is what the renderer's
 * preferences form edits and what `preferences.set {prefs}` sends to the node, so the schema is the contract.
 * Loading never throws on a bad file: a volunteer's app must start even if the file was hand-edited badly;
 * invalid fields fall back to defaults and the problems are reported to the caller.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { DEFAULT_PREFERENCES } from '../shared/constants.ts';

/** Name of the preferences file inside the app-data directory. */
export const PREFERENCES_FILE = 'preferences.json';
/** A preferences file larger than this is not ours (or is corrupt); refuse to parse it. */
export const MAX_PREFERENCES_FILE_BYTES = 256 * 1024;
/** Bound on the program list, so a pasted process dump cannot make every rules evaluation slow. */
export const MAX_PAUSE_PROGRAMS = 64;
/** Bound on weekly schedule windows. */
export const MAX_SCHEDULE_WINDOWS = 28;

const percent = z.number().min(0).max(100);
const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'time must be HH:MM (24 h)');

export const scheduleWindowSchema = z.object({
  /** Days of the week this window applies to, 0 = Sunday … 6 = Saturday (local time). */
  days: z.array(z.number().int().min(0).max(6)).min(1).max(7),
  /** Local start time; a window whose end is before its start runs overnight into the next day. */
  start: hhmm,
  end: hhmm,
});

export const preferencesSchema = z.object({
  version: z.literal(1),
  /** The master switch: false = the volunteer paused contribution by hand. */
  contribute: z.boolean(),
  /** Share of logical CPU cores offered while the user is at the machine vs. while it is idle. */
  cpu: z.object({ inUsePercent: percent, idlePercent: percent }),
  /** Share of total memory offered while the user is at the machine vs. while it is idle. */
  memory: z.object({ inUsePercent: percent, idlePercent: percent }),
  gpu: z.object({ enabled: z.boolean(), onlyWhenIdle: z.boolean() }),
  idle: z.object({
    /** Contribute nothing while the user is at the machine. */
    onlyWhenIdle: z.boolean(),
    /** Minutes without keyboard/mouse input before the machine counts as idle. */
    idleMinutes: z.number().int().min(1).max(240),
  }),
  /** Conditions must hold this long before contribution (re)starts, so a flapping sensor cannot flap tasks. */
  resumeGraceSeconds: z.number().int().min(0).max(3600),
  power: z.object({
    /** Only contribute on AC power. */
    requireAC: z.boolean(),
    /** On battery (when allowed), stop below this charge. */
    minBatteryPercent: percent,
  }),
  temperature: z.object({
    /** Pause everything above this CPU temperature. */
    maxCpuC: z.number().min(40).max(110),
    /** Stop offering the GPU above this GPU temperature. */
    maxGpuC: z.number().min(40).max(110),
  }),
  /** Pause while any of these programs runs (matched case-insensitively on the executable name). */
  pauseWhilePrograms: z.array(z.string().trim().min(1).max(128)).max(MAX_PAUSE_PROGRAMS),
  schedule: z.object({
    /** When false, any time is fine; when true, contribute only inside one of the windows. */
    enabled: z.boolean(),
    windows: z.array(scheduleWindowSchema).max(MAX_SCHEDULE_WINDOWS),
  }),
  executors: z.object({ docker: z.boolean(), wasm: z.boolean() }),
  /** Whether tasks from the network may reach the network themselves. */
  taskNetworkAccess: z.boolean(),
  /** Epoch ms until which contribution is snoozed; null = not snoozed. */
  snoozeUntil: z.number().int().nonnegative().nullable(),
  startAtLogin: z.boolean(),
  /** Closing the window keeps the node running in the tray (true) or quits (false). */
  keepRunningOnClose: z.boolean(),
  /** Ask (and say) what closing the window does, until the volunteer ticks "don't ask again". */
  askOnClose: z.boolean(),
  theme: z.enum(['system', 'dark', 'light']),
});

export type Preferences = z.infer<typeof preferencesSchema>;
export type ScheduleWindow = z.infer<typeof scheduleWindowSchema>;

export { DEFAULT_PREFERENCES, DEFAULT_SNOOZE_MS } from '../shared/constants.ts';

export function defaultPreferences(): Preferences {
  return structuredClone(DEFAULT_PREFERENCES) as Preferences;
}

/** Strictly validate a full preferences object (e.g. from IPC or the network). Throws a readable Error. */
export function parsePreferences(value: unknown): Preferences {
  const result = preferencesSchema.safeParse(value);
  if (!result.success) {
    throw new Error(`invalid preferences: ${z.prettifyError(result.error)}`);
  }
  return result.data;
}

export interface LenientParse {
  prefs: Preferences;
  /** Top-level keys that were invalid and replaced by their defaults. */
  problems: string[];
}

/**
 * Parse leniently: every top-level field that is missing or invalid takes its default, so one bad field
 * (or a file from an older version with fewer fields) does not throw away the volunteer's other choices.
 */
export function parsePreferencesLenient(value: unknown): LenientParse {
  const prefs = defaultPreferences();
  const problems: string[] = [];
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { prefs, problems: ['not an object'] };
  }
  const input = value as Record<string, unknown>;
  const shape = preferencesSchema.shape;
  for (const key of Object.keys(shape) as (keyof Preferences)[]) {
    if (key === 'version' || !(key in input)) continue;
    const field = shape[key].safeParse(input[key]);
    if (field.success) {
      (prefs as Record<string, unknown>)[key] = field.data;
    } else {
      problems.push(String(key));
    }
  }
  return { prefs, problems };
}

/** Shallow-merge a partial update (one level deep for the nested groups) and validate the result. */
export function mergePreferences(base: Preferences, patch: unknown): Preferences {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) {
    throw new Error('invalid preferences: patch must be an object');
  }
  const merged: Record<string, unknown> = structuredClone(base);
  for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
    const current = merged[key];
    if (isPlainObject(current) && isPlainObject(value)) {
      merged[key] = { ...current, ...value };
    } else {
      merged[key] = value;
    }
  }
  return parsePreferences(merged);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface LoadResult extends LenientParse {
  /** True when no file existed (first start). */
  created: boolean;
}

/** Load preferences from `<dir>/preferences.json`; never throws for a missing/corrupt file. */
export async function loadPreferences(dir: string): Promise<LoadResult> {
  const file = join(dir, PREFERENCES_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return { prefs: defaultPreferences(), problems: [], created: true };
    }
    throw err;
  }
  if (text.length > MAX_PREFERENCES_FILE_BYTES) {
    return { prefs: defaultPreferences(), problems: ['file too large'], created: false };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { prefs: defaultPreferences(), problems: ['not valid JSON'], created: false };
  }
  return { ...parsePreferencesLenient(json), created: false };
}

/** Validate and save atomically (write a temp file, then rename) so a crash never leaves half a file. */
export async function savePreferences(dir: string, prefs: Preferences): Promise<void> {
  const valid = parsePreferences(prefs);
  await mkdir(dir, { recursive: true });
  const file = join(dir, PREFERENCES_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(valid, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}
