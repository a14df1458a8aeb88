/** Values both the main process and the renderer use (no Node or DOM imports, no zod: the renderer bundles this). */
import type { Preferences } from '../main/preferences.ts';

/** Default snooze length offered by the pause control. */
export const DEFAULT_SNOOZE_MS = 60 * 60 * 1000;

/** Defaults are deliberately modest: a new volunteer should never notice meshrun while working. */
export const DEFAULT_PREFERENCES: Readonly<Preferences> = Object.freeze({
  version: 1,
  contribute: true,
  cpu: { inUsePercent: 25, idlePercent: 75 },
  memory: { inUsePercent: 20, idlePercent: 50 },
  gpu: { enabled: false, onlyWhenIdle: true },
  idle: { onlyWhenIdle: false, idleMinutes: 5 },
  resumeGraceSeconds: 60,
  power: { requireAC: true, minBatteryPercent: 50 },
  temperature: { maxCpuC: 85, maxGpuC: 80 },
  pauseWhilePrograms: [],
  schedule: { enabled: false, windows: [] },
  executors: { docker: true, wasm: true },
  taskNetworkAccess: false,
  snoozeUntil: null,
  startAtLogin: false,
  keepRunningOnClose: true,
  askOnClose: true,
  theme: 'system',
} satisfies Preferences);

/**
 * Fill what a node sent with defaults, field by field (type-checked against the default's type), so a node
 * with an older or partial preferences object still gets a complete form. The node validates on save.
 */
export function withPreferenceDefaults(received: unknown): Preferences {
  const out = structuredClone(DEFAULT_PREFERENCES) as Record<string, unknown>;
  if (typeof received !== 'object' || received === null || Array.isArray(received)) return out as Preferences;
  const input = received as Record<string, unknown>;
  for (const [key, fallback] of Object.entries(out)) {
    const value = input[key];
    if (value === undefined) continue;
    if (isRecord(fallback) && isRecord(value)) {
      const group: Record<string, unknown> = { ...fallback };
      for (const [k, v] of Object.entries(fallback)) {
        if (value[k] !== undefined && sameKind(v, value[k])) group[k] = value[k];
      }
      out[key] = group;
    } else if (
      sameKind(fallback, value) ||
      (key === 'snoozeUntil' && (value === null || typeof value === 'number'))
    ) {
      out[key] = value;
    }
  }
  return out as Preferences;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function sameKind(a: unknown, b: unknown): boolean {
  return Array.isArray(a) ? Array.isArray(b) : typeof a === typeof b && isRecord(a) === isRecord(b);
}
