/**
 * The RPC methods the dashboard and the desktop app use on their own node, beyond the CLI's: pause/resume with
 * snooze, preferences (persisted in the data dir, applied to the node's offer), local running tasks, the
 * history of tasks this node ran, contribution per day, log pages, and live events.
 *
 * A headless daemon has no user at the keyboard, so of the volunteer preferences it applies the "idle" caps,
 * the master switch, GPU, executors and network access; the desktop app evaluates the full rules (idle, power,
 * temperature, schedules) itself and drives the same node through `node.pause`/`node.resume`/offer limits.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { JobsService } from '@meshrun/core/cluster/jobs-service.ts';
import { toJsonText } from '@meshrun/protocol';
import { z } from 'zod';
import type { ApiEvent } from './api-server.ts';
import type { Daemon } from './daemon.ts';
import { type HistoryRecord, TaskHistory } from './task-history.ts';

export const PREFERENCES_FILE = 'preferences.json';
export const MAX_PREFERENCES_BYTES = 256 * 1024;
/** Finished-task records kept for the history view and the contribution charts. */
export const MAX_HISTORY = 10_000;
/** Finished tasks are written to the history at most this often. */
export const HISTORY_SAVE_DELAY_MS = 1000;

/** The part of the volunteer preferences a headless node applies; everything else is stored as given. */
const AppliedPrefsSchema = z
  .object({
    contribute: z.boolean().optional(),
    cpu: z
      .object({ idlePercent: z.number().min(0).max(100) })
      .partial()
      .optional(),
    memory: z
      .object({ idlePercent: z.number().min(0).max(100) })
      .partial()
      .optional(),
    gpu: z.object({ enabled: z.boolean() }).partial().optional(),
    executors: z.object({ docker: z.boolean(), wasm: z.boolean() }).partial().optional(),
    taskNetworkAccess: z.boolean().optional(),
  })
  .passthrough();

/** A share of the cores in tenths of a core; a non-zero share never rounds down to nothing. */
export function offeredShare(cores: number, percent: number): number {
  if (percent <= 0) return 0;
  return Math.max(0.1, Math.round((cores * percent) / 10) / 10);
}

export async function installDashboardApi(daemon: Daemon, jobs: JobsService | null): Promise<void> {
  const rpc = daemon.node.rpc;
  const prefsFile = path.join(daemon.config.dataDir, PREFERENCES_FILE);
  let snoozeTimer: NodeJS.Timeout | null = null;

  const history = await TaskHistory.open(daemon.db, MAX_HISTORY, HISTORY_SAVE_DELAY_MS);

  const applyPrefs = (prefs: z.infer<typeof AppliedPrefsSchema>) => {
    const hw = daemon.hardware();
    const execs: ('docker' | 'wasm')[] = [];
    if (prefs.executors?.docker !== false) execs.push('docker');
    if (prefs.executors?.wasm !== false) execs.push('wasm');
    daemon.setOfferLimits({
      ...daemon.config.offer,
      ...(prefs.cpu?.idlePercent !== undefined
        ? { cpus: offeredShare(hw.cpu.logicalCores, prefs.cpu.idlePercent) }
        : {}),
      ...(prefs.memory?.idlePercent !== undefined
        ? { memoryBytes: Math.floor((hw.memoryBytes * prefs.memory.idlePercent) / 100) }
        : {}),
      ...(prefs.gpu?.enabled !== undefined ? { gpus: prefs.gpu.enabled } : {}),
      executors: execs,
      ...(prefs.taskNetworkAccess !== undefined ? { network: prefs.taskNetworkAccess } : {}),
    });
    if (prefs.contribute === false && daemon.mode() === 'active') pause('finish', 'paused by the owner');
    if (prefs.contribute === true && daemon.mode() !== 'active') resume();
  };

  const pause = (mode: 'finish' | 'now', reason: string, snoozeMs?: number) => {
    daemon.setMode('paused', reason);
    if (mode === 'now' && jobs) jobs.stopAllRunning(`the owner paused node ${daemon.node.peerId}`);
    if (snoozeTimer) clearTimeout(snoozeTimer);
    snoozeTimer = null;
    if (snoozeMs !== undefined) {
      snoozeTimer = setTimeout(() => resume(), snoozeMs);
      snoozeTimer.unref();
    }
  };
  const resume = () => {
    if (snoozeTimer) clearTimeout(snoozeTimer);
    snoozeTimer = null;
    daemon.setMode('active', null);
  };

  // Preferences saved earlier apply at start.
  try {
    const text = await readFile(prefsFile, 'utf8');
    applyPrefs(AppliedPrefsSchema.parse(JSON.parse(text)));
  } catch {}

  rpc.register(
    'node.pause',
    z
      .object({
        mode: z.enum(['finish', 'now']).default('finish'),
        snoozeMs: z
          .number()
          .int()
          .min(1000)
          .max(7 * 24 * 3600_000)
          .optional(),
        reason: z.string().max(512).optional(),
      })
      .strict(),
    ({ mode, snoozeMs, reason }) => {
      const why =
        reason ?? (snoozeMs ? `snoozed for ${Math.round(snoozeMs / 60_000)} min` : 'paused by the owner');
      pause(mode, why, snoozeMs);
      return { mode: daemon.mode(), pausedReason: why, resumesAt: snoozeMs ? Date.now() + snoozeMs : null };
    },
  );
  rpc.register('node.resume', z.object({}).strict(), () => {
    resume();
    return { mode: daemon.mode() };
  });

  rpc.register('preferences.get', z.object({}).strict(), async () => {
    try {
      return JSON.parse(await readFile(prefsFile, 'utf8'));
    } catch {
      return null;
    }
  });
  rpc.register(
    'preferences.set',
    z.object({ prefs: z.record(z.string(), z.unknown()) }).strict(),
    async ({ prefs }) => {
      const text = toJsonText(prefs);
      if (Buffer.byteLength(text) > MAX_PREFERENCES_BYTES)
        throw new Error(`preferences larger than ${MAX_PREFERENCES_BYTES} bytes`);
      const applied = AppliedPrefsSchema.parse(prefs);
      await writeFile(prefsFile, text, { mode: 0o600 });
      applyPrefs(applied);
      return { offered: daemon.node.ownAdvertisement().offered, mode: daemon.mode() };
    },
  );

  rpc.register('tasks.local', z.object({}).strict(), () =>
    jobs ? jobs.localTasks().map((t) => ({ ...t, usage: { cpuPercent: 0, memoryBytes: 0 } })) : [],
  );
  rpc.register(
    'tasks.history',
    z.object({ limit: z.number().int().min(1).max(MAX_HISTORY).default(100) }).strict(),
    ({ limit }) => history.recent(limit),
  );
  rpc.register(
    'stats.contribution',
    z.object({ days: z.number().int().min(1).max(366).default(14) }).strict(),
    ({ days }) => {
      const out = new Map<string, { day: string; cpuHours: number; tasks: number }>();
      const now = Date.now();
      for (let i = days - 1; i >= 0; i--) {
        const day = new Date(now - i * 86_400_000).toISOString().slice(0, 10);
        out.set(day, { day, cpuHours: 0, tasks: 0 });
      }
      for (const h of history.all()) {
        const row = out.get(new Date(h.finishedAt).toISOString().slice(0, 10));
        if (!row) continue;
        row.tasks += 1;
        row.cpuHours += h.cpuMs / 3_600_000;
      }
      return [...out.values()];
    },
  );
  rpc.register(
    'logs',
    z.object({ taskId: z.string().max(256), fromSeq: z.number().int().min(0).default(0) }).strict(),
    async ({ taskId, fromSeq }) => {
      if (!jobs) return { lines: [], ended: true };
      const page = await jobs.outputPage(taskId, fromSeq);
      return page;
    },
  );

  if (jobs) {
    jobs.events.on('finished', (rec: HistoryRecord) => {
      history.add(rec);
      daemon.events.emit('api', { event: 'task', data: rec } satisfies ApiEvent);
    });
    for (const name of ['started-local', 'ended-local']) {
      jobs.events.on(name, (rec: unknown) =>
        daemon.events.emit('api', { event: 'task', data: rec } satisfies ApiEvent),
      );
    }
    jobs.events.on('output', (taskId: string, stream: string, data: Uint8Array) => {
      daemon.events.emit('api', {
        event: 'log',
        data: { taskId, stream, text: Buffer.from(data).toString('utf8') },
      } satisfies ApiEvent);
    });
  }
}
