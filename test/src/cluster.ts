// Starts one real daemon process per host of a namespace network (see netns.ts).
//
// The default command is `<repo>/node_modules/.bin/node <repo>/apps/headless/bin/meshrun.js daemon
// ...daemonArgs(host, i)`; `command` replaces the part before the per-host arguments, so harness tests can
// run a stand-in (test/src/fixtures/probe.ts) and other tests can run other entry points.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  createNetwork,
  type ExitInfo,
  type Host,
  type Network,
  type ProcHandle,
  STOP_GRACE_MS,
} from './netns.ts';
import { MESHRUN_CLI, NODE_BIN, waitFor } from './proc.ts';

export const DEFAULT_DAEMON_COMMAND: readonly string[] = [NODE_BIN, MESHRUN_CLI, 'daemon'];
/** Default time a node has to become ready (when a readiness check is given). */
export const DEFAULT_READY_TIMEOUT_MS = 60_000;

export interface ClusterHost extends Host {
  /** Empty per-node folder for the daemon's state; kept across restart(), removed by destroy(). */
  dataDir: string;
}

export interface ClusterOptions {
  /** A number creates a new network with that many hosts (destroyed with the cluster); or use your own. */
  hosts: number | Network;
  /** Network name when hosts is a number; default "cluster". */
  name?: string;
  subnet?: string;
  /** Per-host arguments appended to the command. */
  daemonArgs: (host: ClusterHost, i: number) => readonly string[];
  /** Program and leading arguments; default [node, apps/headless/bin/meshrun.js, 'daemon']. */
  command?: readonly string[];
  /** Extra environment per host. */
  env?: (host: ClusterHost, i: number) => Record<string, string | undefined>;
  /** Disk bound of each node's log; default 5 MiB. */
  logCapBytes?: number;
  /** Readiness check polled after each (re)start; or `readyLog`, a pattern looked for in the node's log. */
  ready?: (node: ClusterNode) => boolean | Promise<boolean>;
  readyLog?: RegExp;
  readyTimeoutMs?: number;
  /** Keep data folders on destroy (for debugging). */
  keepData?: boolean;
}

export interface ClusterNode {
  readonly index: number;
  readonly host: ClusterHost;
  /** The current process (replaced by restart()). */
  readonly proc: ProcHandle;
  /** Starts the node again after it was stopped or killed (same data folder), waiting for readiness. */
  restart(): Promise<void>;
  /** SIGTERM, then SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<ExitInfo>;
  logTail(bytes?: number): string;
}

export interface Cluster {
  readonly network: Network;
  readonly nodes: readonly ClusterNode[];
  /** Stops every node (SIGTERM, then SIGKILL). */
  stopAll(graceMs?: number): Promise<void>;
  /** Stops every node, removes data folders and, when the cluster created the network, destroys it. */
  destroy(): Promise<void>;
  /** Every node's log tail and the partition state, for failure messages. */
  diagnostics(tailBytes?: number): string;
}

export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const ownsNetwork = typeof opts.hosts === 'number';
  const network =
    typeof opts.hosts === 'number'
      ? await createNetwork({ name: opts.name ?? 'cluster', hosts: opts.hosts, subnet: opts.subnet })
      : opts.hosts;
  const command = opts.command ?? DEFAULT_DAEMON_COMMAND;
  if (command.length === 0) throw new Error('startCluster: command must not be empty');
  const ready =
    opts.ready ?? (opts.readyLog ? (n: ClusterNode) => opts.readyLog!.test(n.logTail(64 * 1024)) : undefined);
  const readyTimeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;

  const nodes: ClusterNode[] = network.hosts.map((h, i) => {
    const host: ClusterHost = { ...h, dataDir: join(network.artifactsDir, `${h.name}-data`) };
    rmSync(host.dataDir, { recursive: true, force: true });
    mkdirSync(host.dataDir, { recursive: true });
    let starts = 0;
    const launch = () =>
      network.spawn(h, command[0]!, [...command.slice(1), ...opts.daemonArgs(host, i)], {
        env: opts.env?.(host, i),
        logCapBytes: opts.logCapBytes,
        logFile: join(network.artifactsDir, `${h.name}-daemon-${starts++}.log`),
      });
    let proc = launch();
    const node: ClusterNode = {
      index: i,
      host,
      get proc() {
        return proc;
      },
      async restart() {
        if (!proc.exitInfo) throw new Error(`startCluster: node ${h.name} is still running; stop it first`);
        proc = launch();
        if (ready) await waitReady(node, ready, readyTimeoutMs);
      },
      stop: (graceMs = STOP_GRACE_MS) => proc.stop(graceMs),
      logTail: (bytes = 4096) => proc.logTail(bytes),
    };
    return node;
  });

  const cluster: Cluster = {
    network,
    nodes,
    async stopAll(graceMs = STOP_GRACE_MS) {
      await Promise.all(nodes.map((n) => n.stop(graceMs)));
    },
    async destroy() {
      await cluster.stopAll();
      if (!opts.keepData) for (const n of nodes) rmSync(n.host.dataDir, { recursive: true, force: true });
      if (ownsNetwork) await network.destroy();
    },
    diagnostics: (tailBytes = 2000) => network.diagnostics(tailBytes),
  };

  if (ready) {
    try {
      await Promise.all(nodes.map((n) => waitReady(n, ready, readyTimeoutMs)));
    } catch (e) {
      const diag = cluster.diagnostics();
      await cluster.destroy();
      throw new Error(`startCluster: ${(e as Error).message}\n${diag}`, { cause: e });
    }
  }
  return cluster;
}

/** Polls `ready` until it holds; fails fast (with the log tail) if the process exits first. */
async function waitReady(
  node: ClusterNode,
  ready: (node: ClusterNode) => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const proc = node.proc;
  const stopPolling = new AbortController();
  void proc.exited.then((info) => {
    stopPolling.abort(
      new Error(
        `node ${node.host.name} exited before it was ready (code=${info.code} signal=${info.signal})`,
      ),
    );
  });
  try {
    await waitFor(() => ready(node), {
      timeoutMs,
      intervalMs: 100,
      description: `node ${node.host.name} to become ready`,
      signal: stopPolling.signal,
    });
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${proc.logTail(2000)}`, { cause: e });
  }
}
