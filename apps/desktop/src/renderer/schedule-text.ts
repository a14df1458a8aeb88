/**
 * The weekly schedule as editable text, one window per line: `mon,tue,wed 22:00-07:00` or `mon-fri 09:00-17:00`.
 * Pure (unit-tested under Node); the node validates the resulting preferences again.
 */
import type { ScheduleWindow } from '../main/preferences.ts';

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
/** Bound on lines parsed (matches the schema's window limit). */
export const MAX_SCHEDULE_LINES = 28;

export function formatSchedule(windows: readonly ScheduleWindow[]): string {
  return windows.map((w) => `${w.days.map((d) => DAY_NAMES[d]).join(',')} ${w.start}-${w.end}`).join('\n');
}

export function parseSchedule(text: string): ScheduleWindow[] {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  if (lines.length > MAX_SCHEDULE_LINES) throw new Error(`at most ${MAX_SCHEDULE_LINES} schedule lines`);
  return lines.map((line, i) => {
    const match = /^([a-z,\-\s]+?)\s+(\d{2}:\d{2})\s*-\s*(\d{2}:\d{2})$/i.exec(line);
    if (!match) throw new Error(`schedule line ${i + 1}: expected e.g. "mon-fri 09:00-17:00"`);
    return { days: parseDays(match[1], i + 1), start: match[2], end: match[3] };
  });
}

function dayIndex(name: string, line: number): number {
  const index = DAY_NAMES.indexOf(name.trim().toLowerCase().slice(0, 3));
  if (index < 0) throw new Error(`schedule line ${line}: unknown day "${name.trim()}"`);
  return index;
}

function parseDays(spec: string, line: number): number[] {
  const days = new Set<number>();
  for (const part of spec.split(',')) {
    if (part.trim() === '') continue;
    const [from, to] = part.split('-');
    if (to === undefined) {
      days.add(dayIndex(from, line));
      continue;
    }
    // Ranges wrap around the week: "fri-mon" is fri, sat, sun, mon.
    const start = dayIndex(from, line);
    const end = dayIndex(to, line);
    for (let d = start, n = 0; n < 7; d = (d + 1) % 7, n++) {
      days.add(d);
      if (d === end) break;
    }
  }
  if (days.size === 0) throw new Error(`schedule line ${line}: no days`);
  return [...days].sort((a, b) => a - b);
}
