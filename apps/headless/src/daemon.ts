/**
 * `meshrun daemon`: one node of the mesh. Opens the data dir, loads (or creates) the node identity, joins the
 * cluster with the cluster key, advertises its hardware, serves the local API, and stops cleanly.
 *
 * The desktop app embeds the same `startDaemon` in its main process.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClusterKeyError, readClusterKey } from '@meshrun/core/node/cluster-key.ts';
import { deriveOffered, type OfferLimits, probeHardware } from '@meshrun/core/node/hardware.ts';
import { loadOrCreateIdentity } from '@meshrun/core/node/identity.ts';
import { defaultHostname, MeshNode } from '@meshrun/core/node/mesh-node.ts';
import type { Advertisement, Hardware, NodeMode } from '@meshrun/protocol';
import { Level } from 'level';
import pino, { type Logger } from 'pino';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { z } from 'zod';
import { type ApiEvent, ApiServer } from './api-server.ts';
import type { DaemonConfig } from './config.ts';
import { installDashboardApi } from './dashboard-api.ts';
import { type NodeServices, startNodeServices } from './services.ts';

export const VERSION = '0.1.0';
/** Hardware is re-read this often (free disk, docker engine coming and going); changes are re-advertised. */
export const HARDWARE_REFRESH_MS = 60_000;
/** Entries kept in the in-memory event log shown by the dashboard. */
export const MAX_RECENT_EVENTS = 1000;

export class DaemonStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DaemonStartError';
  }
}

export interface ApiInfo {
  url: string;
  token: string;
  pid: number;
  peerId: string;
  addrs: string[];
}

export interface Daemon {
  readonly config: DaemonConfig;
  readonly node: MeshNode;
  readonly db: Level<string, Uint8Array>;
  readonly log: Logger;
  readonly api: ApiServer;
  readonly apiInfo: ApiInfo;
  readonly events: EventEmitter;
  readonly metrics: Registry;
  hardware(): Hardware;
  mode(): NodeMode;
  setMode(mode: NodeMode, reason: string | null): void;
  setOfferLimits(limits: OfferLimits): void;
  /** Re-advertises this node (after its cluster view changed). */
  refreshAdvertisement(): void;
  /** Where the advertisement reads this node's cluster view from. */
  setClusterView(view: () => Advertisement['cluster']): void;
  /** Consensus and jobs (absent with `services: false`, e.g. in foundation-only tools). */
  services: NodeServices | null;
  stop(): Promise<void>;
}

export const API_INFO_FILE = 'api.json';

export async function readApiInfo(dataDir: string): Promise<ApiInfo> {
  const text = await readFile(path.join(dataDir, API_INFO_FILE), 'utf8');
  return JSON.parse(text) as ApiInfo;
}

function defaultDashboardDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.resolve(here, '../../desktop/dist/renderer');
}

export async function startDaemon(
  config: DaemonConfig,
  opts: { log?: Logger; services?: boolean } = {},
): Promise<Daemon> {
  const log = opts.log ?? pino({ level: config.logLevel, base: { svc: 'meshrun' } });
  if (!config.clusterKey) {
    throw new DaemonStartError(
      'no cluster key given. Create one with `meshrun keygen cluster.key`, copy it to every node of the cluster, ' +
        'and start the daemon with `--cluster-key cluster.key` (or MESHRUN_CLUSTER_KEY).',
    );
  }
  let clusterKey: Uint8Array;
  try {
    clusterKey = await readClusterKey(config.clusterKey);
  } catch (err) {
    if (err instanceof ClusterKeyError) throw new DaemonStartError(err.message);
    throw err;
  }

  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const db = new Level<string, Uint8Array>(path.join(config.dataDir, 'db'), { valueEncoding: 'view' });
  try {
    await db.open();
  } catch (err) {
    const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
    throw new DaemonStartError(
      `cannot open data dir ${config.dataDir}: ${cause} (is another daemon using it?)`,
    );
  }
  const { key, created } = await loadOrCreateIdentity(db);

  let hardware = await probeHardware({ dataDir: config.dataDir });
  let offerLimits: OfferLimits = { ...config.offer };
  let mode: NodeMode = 'active';
  let pausedReason: string | null = null;
  const startedAt = Date.now();
  let clusterView: () => Advertisement['cluster'] = () => undefined;
  const events = new EventEmitter();
  events.setMaxListeners(100);

  const node = new MeshNode({
    privateKey: key,
    clusterKey,
    listen: config.listen,
    bootstrap: config.bootstrap,
    mdns: config.mdns,
    log: log.child({ mod: 'mesh' }),
    advertisement: () => ({
      hostname: defaultHostname(),
      labels: config.labels,
      hardware,
      offered: deriveOffered(hardware, offerLimits),
      mode,
      pausedReason,
      version: VERSION,
      startedAt,
      cluster: clusterView(),
    }),
  });
  await node.start();

  // ---- metrics ----
  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics, prefix: 'meshrun_process_' });
  new Gauge({
    name: 'meshrun_connected_peers',
    help: 'Peers with an open libp2p connection',
    registers: [metrics],
    collect() {
      this.set(node.peers().length);
    },
  });
  new Gauge({
    name: 'meshrun_known_nodes',
    help: 'Nodes in the advertisement table (including this one)',
    registers: [metrics],
    collect() {
      this.set(node.nodes().length);
    },
  });
  new Gauge({
    name: 'meshrun_node_paused',
    help: '1 when this node does not accept new work',
    registers: [metrics],
    collect() {
      this.set(mode === 'active' ? 0 : 1);
    },
  });

  // ---- event log for the dashboard ----
  const recent: { at: number; level: string; msg: string }[] = [];
  const note = (level: 'info' | 'warn' | 'error', msg: string) => {
    const entry = { at: Date.now(), level, msg };
    recent.push(entry);
    if (recent.length > MAX_RECENT_EVENTS) recent.shift();
    events.emit('api', { event: 'event', data: entry } satisfies ApiEvent);
  };
  node.on('peer:connect', (id: string) => note('info', `connected to ${id}`));
  node.on('peer:disconnect', (id: string) => note('warn', `disconnected from ${id}`));

  const token = await loadOrCreateToken(config.dataDir);
  const [apiHost, apiPortText] = splitHostPort(config.api);
  const api = new ApiServer({
    host: apiHost,
    port: Number(apiPortText),
    token,
    rpc: node.rpc,
    metrics,
    log: log.child({ mod: 'api' }),
    dashboardDir: config.dashboardDir ?? defaultDashboardDir(),
    health: () => ({
      peerId: node.peerId,
      uptimeMs: Date.now() - startedAt,
      peers: node.peers().length,
      mode,
    }),
  });
  let apiAddr: { address: string; port: number };
  try {
    apiAddr = await api.listen();
  } catch (err) {
    await node.stop();
    await db.close();
    throw new DaemonStartError(`cannot listen on API address ${config.api}: ${(err as Error).message}`);
  }
  events.on('api', (evt: ApiEvent) => api.broadcast(evt));
  const hostForUrl = apiAddr.address.includes(':') ? `[${apiAddr.address}]` : apiAddr.address;
  const apiInfo: ApiInfo = {
    url: `http://${hostForUrl}:${apiAddr.port}`,
    token,
    pid: process.pid,
    peerId: node.peerId,
    addrs: node.addrs(),
  };
  await writeFile(path.join(config.dataDir, API_INFO_FILE), JSON.stringify(apiInfo, null, 2), {
    mode: 0o600,
  });

  const statusOf = () => ({
    peerId: node.peerId,
    addrs: node.addrs(),
    role: clusterView()?.role ?? 'none',
    leader: clusterView()?.leader ?? null,
    term: clusterView()?.term ?? 0,
    connectedPeers: node.peers().length,
    contributing: mode === 'active',
    mode,
    pausedReason,
    offered: deriveOffered(hardware, offerLimits),
    labels: config.labels,
    hardware,
  });

  /** Live dashboards learn of every change to what this node is and offers. */
  const announceStatus = () => events.emit('api', { event: 'status', data: statusOf() } satisfies ApiEvent);

  const daemon: Daemon = {
    config,
    node,
    db,
    log,
    api,
    apiInfo,
    events,
    metrics,
    hardware: () => hardware,
    mode: () => mode,
    setMode(next, reason) {
      mode = next;
      pausedReason = next === 'active' ? null : reason;
      node.refreshAdvertisement();
      note('info', `node ${next}${reason ? `: ${reason}` : ''}`);
      announceStatus();
    },
    setOfferLimits(limits) {
      offerLimits = { ...limits };
      node.refreshAdvertisement();
      announceStatus();
    },
    refreshAdvertisement() {
      node.refreshAdvertisement();
      announceStatus();
    },
    setClusterView(view) {
      clusterView = view;
    },
    services: null,
    async stop() {
      clearInterval(refresh);
      await daemon.services?.stop();
      await api.close();
      await node.stop();
      await db.close();
    },
  };

  // ---- control RPC methods of the foundation ----
  node.rpc.register('peers', z.object({}).strict(), () => node.peers());
  node.rpc.register('nodes', z.object({}).strict(), () => node.nodes());
  node.rpc.register('status', z.object({}).strict(), () => statusOf());
  node.rpc.register(
    'events.recent',
    z
      .object({
        limit: z.number().int().min(1).max(MAX_RECENT_EVENTS).default(200),
        level: z.enum(['info', 'warn', 'error']).optional(),
        q: z.string().max(256).optional(),
      })
      .strict(),
    ({ limit, level, q }) => {
      const order = { info: 0, warn: 1, error: 2 } as const;
      const min = level ? order[level] : 0;
      const needle = q?.toLowerCase();
      return recent
        .filter(
          (e) =>
            order[e.level as keyof typeof order] >= min && (!needle || e.msg.toLowerCase().includes(needle)),
        )
        .slice(-limit);
    },
  );

  const refresh = setInterval(async () => {
    try {
      const next = await probeHardware({ dataDir: config.dataDir });
      if (JSON.stringify(next) !== JSON.stringify(hardware)) {
        hardware = next;
        node.refreshAdvertisement();
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'hardware refresh failed');
    }
  }, HARDWARE_REFRESH_MS);
  refresh.unref();

  if (opts.services !== false) {
    daemon.services = await startNodeServices(daemon);
  }
  await installDashboardApi(daemon, daemon.services?.jobs ?? null);

  log.info({ peerId: node.peerId, created, addrs: node.addrs(), api: apiInfo.url }, 'meshrun daemon started');
  return daemon;
}

export function splitHostPort(hp: string): [string, string] {
  const idx = hp.lastIndexOf(':');
  return [hp.slice(0, idx).replace(/^\[|\]$/g, ''), hp.slice(idx + 1)];
}

async function loadOrCreateToken(dataDir: string): Promise<string> {
  const file = path.join(dataDir, 'api-token');
  try {
    const t = (await readFile(file, 'utf8')).trim();
    if (t.length >= 32) return t;
  } catch {}
  const token = randomBytes(24).toString('base64url');
  await writeFile(file, token, { mode: 0o600 });
  return token;
}
