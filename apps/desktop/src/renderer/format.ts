/** Pure formatting helpers for the dashboard (unit-tested under Node). */

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** "3h 05m", "4m 09s", "12s". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

export function formatTime(epochMs: number | undefined | null): string {
  if (!epochMs || !Number.isFinite(epochMs)) return '—';
  const d = new Date(epochMs);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Peer ids are long; show the recognisable tail. */
export function shortId(id: string | null | undefined): string {
  if (!id) return '—';
  return id.length > 14 ? `…${id.slice(-10)}` : id;
}

export function formatPercent(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(value < 10 ? 1 : 0)} %` : '—';
}

/** Keep the last `max` items (bounded buffers for logs and events). */
export function pushBounded<T>(list: T[], items: T[], max: number): T[] {
  list.push(...items);
  if (list.length > max) list.splice(0, list.length - max);
  return list;
}

/** Case-insensitive substring + level filter used by the event log. */
export function eventMatches(
  event: { level: string; msg: string },
  levels: ReadonlySet<string>,
  query: string,
): boolean {
  if (!levels.has(event.level)) return false;
  const q = query.trim().toLowerCase();
  return q === '' || event.msg.toLowerCase().includes(q);
}
