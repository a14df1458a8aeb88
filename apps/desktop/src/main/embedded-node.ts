/**
 * The meshrun node running inside the app's main process: the daemon's own `startDaemon`, so the app and
 * `meshrun daemon` are the same node software. This is the only file that knows the daemon's in-process API;
 * everything else talks to `EmbeddedNode`.
 */
import { configFromEnv, resolveConfig } from '@meshrun/headless/config.ts';
import { type Daemon, startDaemon } from '@meshrun/headless/daemon.ts';
import type { LiveEvent } from '../shared/api.ts';
import type { OfferLimits } from './node-control.ts';

export interface RpcReply {
  ok: boolean;
  result?: unknown;
  error?: { code: string; message: string };
}

export interface EmbeddedNode {
  readonly peerId: string;
  /** `http://127.0.0.1:PORT/?token=…`: the same dashboard in a browser. */
  readonly dashboardUrl: string;
  call(method: string, params: unknown): Promise<RpcReply>;
  /** Live events (status, task, log, event); returns the unsubscribe function. */
  subscribe(handler: (event: LiveEvent) => void): () => void;
  mode(): 'active' | 'paused' | 'draining';
  /** Pause: `finish` lets running tasks complete (draining), `now` stops them. */
  pause(mode: 'finish' | 'now', reason: string, snoozeMs?: number): Promise<RpcReply>;
  resume(): Promise<RpcReply>;
  setOfferLimits(limits: OfferLimits): void;
  stop(): Promise<void>;
}

export interface EmbeddedNodeOptions {
  dataDir: string;
  clusterKeyFile: string;
  bootstrap?: string[];
  /** The renderer build, so the node also serves the dashboard over HTTP. */
  dashboardDir: string;
}

export async function startEmbeddedNode(opts: EmbeddedNodeOptions): Promise<EmbeddedNode> {
  const config = resolveConfig(
    {
      dataDir: opts.dataDir,
      clusterKey: opts.clusterKeyFile,
      bootstrap: opts.bootstrap ?? [],
      listen: ['/ip4/0.0.0.0/tcp/0'],
      // Port 0: a volunteer may also run a CLI daemon; the app never collides with it.
      api: '127.0.0.1:0',
      dashboardDir: opts.dashboardDir,
    },
    // MESHRUN_* variables (listen, bootstrap, mdns, log level…) work for the app as for the daemon.
    configFromEnv(process.env),
  );
  const daemon: Daemon = await startDaemon(config);
  const rpc = async (method: string, params: unknown): Promise<RpcReply> => {
    const outcome = await daemon.node.rpc.dispatch(method, params ?? {}, { via: 'local' });
    if (outcome.kind === 'value') return { ok: true, result: outcome.value };
    if (outcome.kind === 'error')
      return { ok: false, error: { code: outcome.code, message: outcome.message } };
    return {
      ok: false,
      error: { code: 'UNSUPPORTED', message: `${method} streams; not available over IPC` },
    };
  };
  return {
    peerId: daemon.apiInfo.peerId,
    dashboardUrl: `${daemon.apiInfo.url}/?token=${encodeURIComponent(daemon.apiInfo.token)}`,
    call: rpc,
    // The node's own pause method drains/stops tasks; a node without it can still be taken out of scheduling.
    async pause(mode, reason, snoozeMs) {
      if (daemon.node.rpc.has('node.pause'))
        return rpc('node.pause', snoozeMs ? { mode, snoozeMs } : { mode });
      daemon.setMode('paused', reason);
      return { ok: true, result: { mode: 'paused' } };
    },
    async resume() {
      if (daemon.node.rpc.has('node.resume')) return rpc('node.resume', {});
      daemon.setMode('active', null);
      return { ok: true, result: { mode: 'active' } };
    },
    subscribe(handler) {
      const listener = (evt: { event: LiveEvent['type']; data: unknown }) =>
        handler({ type: evt.event, data: evt.data } as LiveEvent);
      daemon.events.on('api', listener);
      return () => {
        daemon.events.off('api', listener);
      };
    },
    mode: () => daemon.mode(),
    setOfferLimits: (limits) => daemon.setOfferLimits(limits),
    stop: () => daemon.stop(),
  };
}
