/**
 * How the CLI reaches a node: the local daemon's HTTP API (found through the data dir's api.json, or
 * `--api HOST:PORT` + token), or any peer over libp2p with the cluster key (`--peer MULTIADDR`).
 */
import { identify } from '@libp2p/identify';
import type { Libp2p } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import {
  canonicalParams,
  readSubmitterKey,
  type SubmitterKey,
  signRequest,
} from '@meshrun/core/cluster/submitter-keys.ts';
import { ClusterKeyError, readClusterKey } from '@meshrun/core/node/cluster-key.ts';
import { ControlSessionClient, RemoteRpcError } from '@meshrun/core/node/control-session.ts';
import { meshrunStack } from '@meshrun/core/node/host-stack.ts';
import { callControl } from '@meshrun/core/node/mesh-node.ts';
import { fromJsonText, toJsonText } from '@meshrun/protocol';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { readApiInfo } from './daemon.ts';

export interface CallOptions {
  onItem?: (item: unknown) => void;
  timeoutMs?: number;
  auth?: unknown;
}

export interface NodeClient {
  call(method: string, params?: unknown, opts?: CallOptions): Promise<unknown>;
  close(): Promise<void>;
}

/** A failure the CLI reports as-is on stderr (exit code chosen by the command). */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

export class HttpClient implements NodeClient {
  readonly #base: string;
  readonly #token: string;
  constructor(base: string, token: string) {
    this.#base = base.replace(/\/$/, '');
    this.#token = token;
  }

  async call(method: string, params: unknown = {}, opts: CallOptions = {}): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(`${this.#base}/api/rpc`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.#token}`, 'content-type': 'application/json' },
        body: toJsonText({ method, params, auth: opts.auth }),
        signal: opts.onItem ? undefined : AbortSignal.timeout(opts.timeoutMs ?? 60_000),
      });
    } catch (err) {
      throw new CliError(
        `cannot reach the daemon's API at ${this.#base}: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`,
      );
    }
    if (res.headers.get('content-type')?.includes('application/x-ndjson')) {
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          nl = buf.indexOf('\n');
          if (!line) continue;
          const msg = fromJsonText(line) as {
            item?: unknown;
            end?: boolean;
            ok?: boolean;
            error?: { code: string; message: string };
          };
          if (msg.end) return null;
          if (msg.ok === false && msg.error) throw new RemoteRpcError(msg.error.code, msg.error.message);
          opts.onItem?.(msg.item);
        }
      }
      return null;
    }
    const body = fromJsonText(await res.text()) as {
      ok: boolean;
      result?: unknown;
      error?: { code: string; message: string };
    };
    if (!body.ok)
      throw new RemoteRpcError(body.error?.code ?? 'ERROR', body.error?.message ?? `HTTP ${res.status}`);
    return body.result;
  }

  async close(): Promise<void> {}
}

export class P2pClient implements NodeClient {
  readonly #libp2p: Libp2p;
  readonly #target: ReturnType<typeof multiaddr>;
  readonly #peerLabel: string;
  #connected: Promise<string> | null = null;
  #session: ControlSessionClient | null = null;

  private constructor(libp2p: Libp2p, target: ReturnType<typeof multiaddr>) {
    this.#libp2p = libp2p;
    this.#target = target;
    this.#peerLabel = target.toString();
  }

  static async create(peer: string, clusterKeyFile: string | undefined): Promise<P2pClient> {
    if (!clusterKeyFile)
      throw new CliError('--peer needs the cluster key: pass --cluster-key FILE (or MESHRUN_CLUSTER_KEY)');
    let psk: Uint8Array;
    try {
      psk = await readClusterKey(clusterKeyFile);
    } catch (err) {
      if (err instanceof ClusterKeyError) throw new CliError(err.message);
      throw err;
    }
    let target: ReturnType<typeof multiaddr>;
    try {
      target = multiaddr(peer);
    } catch (err) {
      throw new CliError(`invalid --peer multiaddr "${peer}": ${(err as Error).message}`);
    }
    const libp2p = await createLibp2p({
      addresses: { listen: [] },
      ...meshrunStack(psk),
      services: { identify: identify() },
    });
    return new P2pClient(libp2p, target);
  }

  /** Dials the peer once (a multiaddr without /p2p/ is fine: the peer ID is learnt in the handshake). */
  async #connect(): Promise<string> {
    this.#connected ??= this.#libp2p
      .dial(this.#target, { signal: AbortSignal.timeout(10_000) })
      .then((conn) => conn.remotePeer.toString())
      .catch((err: Error & { cause?: Error }) => {
        const text = `${err.name} ${err.message} ${err.cause?.message ?? ''}`;
        if (/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH/.test(text)) {
          throw new CliError(`cannot reach peer ${this.#peerLabel}: connection refused or unreachable`);
        }
        if (/Encryption|handshake|pnet|psk|nonce|Unexpected end|aborted|reset|EOF/i.test(text)) {
          throw new CliError(
            `peer ${this.#peerLabel} refused the connection: the cluster key does not match (or the peer is not a meshrun node) [${err.name}]`,
          );
        }
        throw new CliError(`cannot connect to peer ${this.#peerLabel}: ${err.message}`);
      });
    return this.#connected;
  }

  /** Unary calls share one control session (one stream for all of them); streaming calls get their own. */
  async call(method: string, params: unknown = {}, opts: CallOptions = {}): Promise<unknown> {
    const peerId = await this.#connect();
    if (opts.onItem) return callControl(this.#libp2p, peerId, method, params, opts);
    this.#session ??= new ControlSessionClient(this.#libp2p, peerIdFromString(peerId));
    return this.#session.call(method, params, opts);
  }

  async close(): Promise<void> {
    await this.#session?.close();
    await this.#libp2p.stop();
  }
}

export interface ClientSelection {
  /** Submitter key file: every call is signed with it. */
  key?: string;
  dataDir?: string;
  api?: string;
  token?: string;
  peer?: string;
  clusterKey?: string;
}

/** Signs every call with a submitter key; params are sent in their canonical form, the form that was signed. */
class SigningClient implements NodeClient {
  readonly #inner: NodeClient;
  readonly #key: SubmitterKey;
  constructor(inner: NodeClient, key: SubmitterKey) {
    this.#inner = inner;
    this.#key = key;
  }
  async call(method: string, params: unknown = {}, opts: CallOptions = {}): Promise<unknown> {
    const canonical = canonicalParams(params);
    const auth = await signRequest(this.#key, method, canonical);
    return this.#inner.call(method, canonical, { ...opts, auth });
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
}

export async function connectClient(sel: ClientSelection): Promise<NodeClient> {
  const inner = await connectUnsigned(sel);
  if (!sel.key) return inner;
  try {
    return new SigningClient(inner, await readSubmitterKey(sel.key));
  } catch (err) {
    await inner.close();
    throw new CliError((err as Error).message);
  }
}

async function connectUnsigned(sel: ClientSelection): Promise<NodeClient> {
  if (sel.peer) return P2pClient.create(sel.peer, sel.clusterKey);
  if (sel.api) {
    let token = sel.token;
    if (!token && sel.dataDir)
      token = await readApiInfo(sel.dataDir).then(
        (i) => i.token,
        () => undefined,
      );
    if (!token)
      throw new CliError(
        '--api needs the API token: pass --token TOKEN (or MESHRUN_API_TOKEN), or --data-dir of that daemon',
      );
    return new HttpClient(sel.api.startsWith('http') ? sel.api : `http://${sel.api}`, token);
  }
  const dataDir = sel.dataDir!;
  let info: Awaited<ReturnType<typeof readApiInfo>>;
  try {
    info = await readApiInfo(dataDir);
  } catch {
    throw new CliError(
      `no running daemon found in data dir ${dataDir} (no api.json). Start one with \`meshrun daemon --data-dir ${dataDir} ...\`, ` +
        'or reach a node with --api HOST:PORT or --peer MULTIADDR --cluster-key FILE.',
    );
  }
  return new HttpClient(info.url, sel.token ?? info.token);
}
