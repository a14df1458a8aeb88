/**
 * The node's local API as the renderer sees it (the daemon's `/api/rpc` + `/api/events` contract), and the
 * `Bridge` the renderer talks through: over HTTP in a browser (web-bridge.ts) or over IPC in Electron
 * (preload.ts). Types only: the renderer validates nothing beyond shape checks because the node is local and
 * authenticated, but it never renders values as HTML (text nodes only).
 */
import type { Preferences } from '../main/preferences.ts';

export type { Preferences };

export type Role = 'leader' | 'follower' | 'learner' | 'none';
export type NodeMode = 'active' | 'paused' | 'draining';
export type ExecutorKind = 'docker' | 'wasm';

export interface GpuInfo {
  vendor: string;
  model: string;
  vramBytes: number;
}

export interface Offered {
  cpus: number;
  memoryBytes: number;
  /** A count in the API contract; the daemon may send the offered GPUs themselves. */
  gpus: number | GpuInfo[];
  executors: ExecutorKind[];
  maxConcurrent: number;
  diskBytes?: number;
  network?: boolean;
}

export function gpuCount(offered: Offered): number {
  return Array.isArray(offered.gpus) ? offered.gpus.length : Number(offered.gpus) || 0;
}

export interface NodeStatus {
  peerId: string;
  addrs: string[];
  role: Role;
  leader: string | null;
  term: number;
  connectedPeers: number;
  contributing: boolean;
  mode: NodeMode;
  pausedReason: string | null;
  offered: Offered;
}

export interface NodeAdvertisement {
  peerId: string;
  hostname: string;
  labels: Record<string, string>;
  hardware: {
    cpu: { model: string; physicalCores: number; logicalCores: number; arch: string };
    memoryBytes: number;
    gpus: GpuInfo[];
    os: { platform: string; distro: string; release: string };
    docker: { available: boolean; version: string | null };
  };
  offered: Offered;
  mode: NodeMode;
  pausedReason?: string | null;
  /** Reachability: `up` in the API contract; the daemon's node table says `connected`. */
  up?: boolean;
  connected?: boolean;
  /** True for the node serving this dashboard. */
  self?: boolean;
  lastSeen: number;
}

export function nodeIsUp(n: NodeAdvertisement): boolean {
  return n.up ?? n.connected ?? true;
}

export interface ClusterInfo {
  leader: string | null;
  term: number;
  commit: number;
  applied: number;
  voters: { id: string; match: number; reachable: boolean }[];
  learners: { id: string; match?: number; reachable?: boolean }[];
}

export interface LocalTask {
  taskId: string;
  jobId: string;
  name: string;
  submitter: string;
  image: string;
  startedAt: number;
  usage: { cpuPercent: number; memoryBytes: number };
}

/** A finished task; the daemon may add fields, these are the ones the history view shows. */
export interface TaskRecord {
  taskId: string;
  jobId: string;
  name?: string;
  submitter?: string;
  image?: string;
  state?: string;
  startedAt?: number;
  finishedAt?: number;
  exitCode?: number | null;
  [extra: string]: unknown;
}

export interface LogLine {
  seq: number;
  stream: string;
  text: string;
}

export interface LogsResult {
  lines: LogLine[];
  ended: boolean;
}

export interface DayStats {
  day: string;
  cpuHours: number;
  tasks: number;
}

export type EventLevel = 'debug' | 'info' | 'warn' | 'error';

export interface NodeEvent {
  at: number;
  level: EventLevel | string;
  msg: string;
}

export type PauseMode = 'finish' | 'now';

/** Method name → [params, result]. */
export interface RpcMethods {
  status: [undefined, NodeStatus];
  nodes: [undefined, NodeAdvertisement[]];
  peers: [undefined, unknown[]];
  cluster: [undefined, ClusterInfo];
  jobs: [{ state?: string } | undefined, unknown[]];
  job: [{ jobId: string }, unknown];
  'tasks.local': [undefined, LocalTask[]];
  'tasks.history': [{ limit: number }, TaskRecord[]];
  logs: [{ taskId: string; fromSeq?: number }, LogsResult];
  'stats.contribution': [{ days: number }, DayStats[]];
  'events.recent': [{ limit: number; level?: string; q?: string }, NodeEvent[]];
  'node.pause': [{ mode: PauseMode; snoozeMs?: number }, unknown];
  'node.resume': [undefined, unknown];
  'preferences.get': [undefined, Preferences];
  'preferences.set': [{ prefs: Preferences }, unknown];
  /** Desktop app only, first run: pick the network's cluster key file; the app restarts with it. */
  'app.importClusterKey': [undefined, { restarting: boolean }];
}

export type RpcMethod = keyof RpcMethods;

/** One server-sent event from the node. */
export type LiveEvent =
  | { type: 'status'; data: NodeStatus }
  | { type: 'task'; data: TaskRecord }
  | { type: 'log'; data: { taskId: string; stream: string; text: string } }
  | { type: 'event'; data: NodeEvent }
  | { type: 'connection'; data: { connected: boolean } };

export const LIVE_EVENT_TYPES = ['status', 'task', 'log', 'event'] as const;

/** An RPC failure reported by the node (`{ok:false, error}`) or by the transport. */
export class RpcError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'RpcError';
    this.code = code;
  }
}

export interface Bridge {
  call<M extends RpcMethod>(method: M, params?: RpcMethods[M][0]): Promise<RpcMethods[M][1]>;
  /** Live events; returns the unsubscribe function. */
  subscribe(handler: (event: LiveEvent) => void): () => void;
  /** Where the renderer runs: changes only wording (e.g. "closing the window keeps the node running"). */
  readonly host: 'web' | 'electron';
}

/** What the Electron preload exposes on `window.meshrun` (the IPC transport under the Bridge). */
export interface PreloadApi {
  call(method: string, params: unknown): Promise<unknown>;
  subscribe(handler: (event: LiveEvent) => void): () => void;
}

/** IPC channel names shared by main and preload. */
export const IPC_RPC = 'meshrun:rpc';
export const IPC_EVENT = 'meshrun:event';
