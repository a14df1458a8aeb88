/**
 * The daemon's configuration, from (highest wins) command-line flags, `MESHRUN_*` environment variables, a
 * config file (YAML or JSON, `--config FILE` / `MESHRUN_CONFIG`), then defaults. One schema validates the
 * merged result so a typo in any source is a clear error at start, not a surprise later.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { LabelsSchema } from '@meshrun/protocol';
import YAML from 'yaml';
import { z } from 'zod';

export const DaemonConfigSchema = z
  .object({
    dataDir: z.string().min(1),
    listen: z.array(z.string()).min(1),
    api: z.string().regex(/^[^:]+:\d+$/, 'api must be HOST:PORT'),
    bootstrap: z.array(z.string()),
    clusterKey: z.string().min(1).optional(),
    labels: LabelsSchema,
    mdns: z.boolean(),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']),
    /** Owner's caps on what the node offers (absent = derived from the hardware). */
    offer: z
      .object({
        cpus: z.number().positive().optional(),
        memoryBytes: z.number().int().positive().optional(),
        diskBytes: z.number().int().positive().optional(),
        gpus: z.boolean().optional(),
        maxConcurrent: z.number().int().min(0).max(10_000).optional(),
        executors: z.array(z.enum(['docker', 'wasm'])).optional(),
        network: z.boolean().optional(),
        allowedSubmitters: z.array(z.string().min(1).max(256)).max(256).optional(),
      })
      .strict(),
    /** Number of Raft voters the cluster keeps (others are learners). */
    voters: z
      .number()
      .int()
      .refine((n) => n === 1 || n === 3 || n === 5, 'voters must be 1, 3 or 5'),
    /** Failure detection (ms): worker heartbeat period, and how long a silent node stays "up" (TTL + grace). */
    liveness: z
      .object({
        heartbeatMs: z.number().int().min(100).max(60_000),
        nodeTtlMs: z.number().int().min(500).max(600_000),
        nodeGraceMs: z.number().int().min(0).max(600_000),
        /** A Raft voter unreachable this long is replaced by a healthy learner. */
        deadVoterMs: z.number().int().min(1000).max(3_600_000),
        /**
         * Raft election timeout: a follower that hears nothing from the leader for this long (randomized up
         * to twice it) starts an election. Leader failover takes about this long.
         */
        electionMs: z.number().int().min(200).max(60_000).default(600),
      })
      .strict(),
    /**
     * The Raft log on disk (etcd's --snapshot-count and snapshot catch-up entries): a snapshot of the state
     * every `snapshotEntries` applied entries, keeping the last `catchUpEntries` behind it so a follower a
     * little behind catches up from the log; one further behind gets the snapshot.
     */
    raftLog: z
      .object({
        snapshotEntries: z.number().int().min(10).max(10_000_000).default(10_000),
        catchUpEntries: z.number().int().min(0).max(10_000_000).default(1000),
        /**
         * Append messages the leader has in flight to one follower before it waits for its acknowledgements
         * (etcd's MaxInflightMsgs). A follower that stops reading (a stopped or frozen process) gets at most
         * this many; whatever the log compacts meanwhile it then gets as the snapshot.
         */
        maxInflight: z.number().int().min(1).max(4096).default(256),
      })
      .strict(),
    /** Where the web dashboard's static files are (the desktop renderer build). */
    dashboardDir: z.string().optional(),
  })
  .strict();
export type DaemonConfig = z.infer<typeof DaemonConfigSchema>;

export const DEFAULTS = {
  listen: ['/ip4/0.0.0.0/tcp/4801'],
  api: '127.0.0.1:4800',
  bootstrap: [] as string[],
  labels: {} as Record<string, string>,
  mdns: true,
  logLevel: 'info' as const,
  offer: {},
  voters: 3,
  liveness: {
    heartbeatMs: 1000,
    nodeTtlMs: 10_000,
    nodeGraceMs: 5_000,
    deadVoterMs: 30_000,
    // etcd and Consul use 1 s; 600 ms (randomized to 0.6-1.2 s) keeps failover under the 1.5 s goal.
    electionMs: 600,
  },
  raftLog: { snapshotEntries: 10_000, catchUpEntries: 1000, maxInflight: 256 },
};

export function defaultDataDir(): string {
  const home = process.env.HOME ?? '/tmp';
  return path.join(home, '.meshrun');
}

export function parseLabels(items: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new Error(`label "${item}" must be key=value`);
    labels[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return labels;
}

function splitList(v: string | undefined): string[] | undefined {
  if (v === undefined || v === '') return undefined;
  return v
    .split(/[,\s]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

function parseBool(name: string, v: string | undefined): boolean | undefined {
  if (v === undefined || v === '') return undefined;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new Error(`${name} must be true or false, got "${v}"`);
}

/** Reads MESHRUN_* variables into a partial config. */
export function configFromEnv(env: NodeJS.ProcessEnv): Partial<DaemonConfig> {
  const out: Partial<DaemonConfig> = {};
  if (env.MESHRUN_DATA_DIR) out.dataDir = env.MESHRUN_DATA_DIR;
  const listen = splitList(env.MESHRUN_LISTEN);
  if (listen) out.listen = listen;
  if (env.MESHRUN_API) out.api = env.MESHRUN_API;
  const bootstrap = splitList(env.MESHRUN_BOOTSTRAP);
  if (bootstrap) out.bootstrap = bootstrap;
  if (env.MESHRUN_CLUSTER_KEY) out.clusterKey = env.MESHRUN_CLUSTER_KEY;
  const labels = splitList(env.MESHRUN_LABELS);
  if (labels) out.labels = parseLabels(labels);
  const mdns = parseBool('MESHRUN_MDNS', env.MESHRUN_MDNS);
  if (mdns !== undefined) out.mdns = mdns;
  if (env.MESHRUN_LOG_LEVEL) out.logLevel = env.MESHRUN_LOG_LEVEL as DaemonConfig['logLevel'];
  if (env.MESHRUN_VOTERS) out.voters = Number(env.MESHRUN_VOTERS) as DaemonConfig['voters'];
  if (env.MESHRUN_DASHBOARD_DIR) out.dashboardDir = env.MESHRUN_DASHBOARD_DIR;
  if (
    env.MESHRUN_NODE_TTL_MS ||
    env.MESHRUN_NODE_GRACE_MS ||
    env.MESHRUN_HEARTBEAT_MS ||
    env.MESHRUN_DEAD_VOTER_MS ||
    env.MESHRUN_ELECTION_MS
  ) {
    out.liveness = {
      heartbeatMs: Number(env.MESHRUN_HEARTBEAT_MS ?? DEFAULTS.liveness.heartbeatMs),
      nodeTtlMs: Number(env.MESHRUN_NODE_TTL_MS ?? DEFAULTS.liveness.nodeTtlMs),
      nodeGraceMs: Number(env.MESHRUN_NODE_GRACE_MS ?? DEFAULTS.liveness.nodeGraceMs),
      deadVoterMs: Number(env.MESHRUN_DEAD_VOTER_MS ?? DEFAULTS.liveness.deadVoterMs),
      electionMs: Number(env.MESHRUN_ELECTION_MS ?? DEFAULTS.liveness.electionMs),
    };
  }
  if (env.MESHRUN_SNAPSHOT_ENTRIES || env.MESHRUN_CATCHUP_ENTRIES || env.MESHRUN_RAFT_MAX_INFLIGHT) {
    out.raftLog = {
      snapshotEntries: Number(env.MESHRUN_SNAPSHOT_ENTRIES ?? DEFAULTS.raftLog.snapshotEntries),
      catchUpEntries: Number(env.MESHRUN_CATCHUP_ENTRIES ?? DEFAULTS.raftLog.catchUpEntries),
      maxInflight: Number(env.MESHRUN_RAFT_MAX_INFLIGHT ?? DEFAULTS.raftLog.maxInflight),
    };
  }
  return out;
}

export function configFromFile(file: string): Partial<DaemonConfig> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  const parsed = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error(`config file ${file} must hold an object`);
  }
  // Relative paths in a config file are relative to the file, as users expect.
  const base = path.dirname(path.resolve(file));
  const out = { ...(parsed as Partial<DaemonConfig>) };
  if (out.dataDir) out.dataDir = path.resolve(base, out.dataDir);
  if (out.clusterKey) out.clusterKey = path.resolve(base, out.clusterKey);
  return out;
}

/** Merges sources (later wins) onto defaults and validates. Throws an Error naming the bad field. */
export function resolveConfig(...sources: Partial<DaemonConfig>[]): DaemonConfig {
  const merged: Record<string, unknown> = { ...DEFAULTS, dataDir: defaultDataDir() };
  for (const s of sources) {
    for (const [k, v] of Object.entries(s)) if (v !== undefined) merged[k] = v;
  }
  const parsed = DaemonConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`invalid configuration: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  return { ...parsed.data, dataDir: path.resolve(parsed.data.dataDir) };
}
