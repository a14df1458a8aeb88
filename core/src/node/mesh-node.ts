/**
 * A meshrun node's networking: the libp2p host (TCP + private-network key + Noise + Yamux, identify, ping,
 * optional mDNS), its persistent identity, the peer keeper that dials discovered peers and re-dials lost ones
 * with backoff, the node table built from pushed advertisements, and the control-RPC front door.
 *
 * Nothing here knows about jobs or Raft: those register RPC methods and stream handlers on top.
 */
import { EventEmitter } from 'node:events';
import os from 'node:os';
import { identify } from '@libp2p/identify';
import type { Connection, Libp2p, PeerId, PrivateKey, Stream } from '@libp2p/interface';
import { mdns } from '@libp2p/mdns';
import { peerIdFromString } from '@libp2p/peer-id';
import { ping } from '@libp2p/ping';
import { lpStream } from '@libp2p/utils';
import {
  ADVERT_DOMAIN,
  ADVERT_LIMITS,
  type Advertisement,
  AdvertisementSchema,
  AdvertPushSchema,
  decode,
  encode,
  LP_OPTIONS,
  type NodeRow,
  PROTOCOLS,
  ProtocolError,
  RPC_ERRORS,
  RpcRequestSchema,
  RpcResponseSchema,
  readFrame,
  type SignedAdvert,
  writeFrame,
} from '@meshrun/protocol';
import { type Multiaddr, multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import type { Logger } from 'pino';
import { clusterFingerprint } from './cluster-key.ts';
import { ControlSessionClient, RemoteRpcError, serveControlSession } from './control-session.ts';
import { meshrunStack } from './host-stack.ts';
import { type RpcContext, RpcRegistry, toErrorOutcome } from './rpc-registry.ts';

export interface MeshNodeOptions {
  privateKey: PrivateKey;
  clusterKey: Uint8Array;
  listen: string[];
  bootstrap?: string[];
  /** mDNS discovery on the host's interfaces. Off for loopback clusters (never multicast on a real LAN in tests). */
  mdns?: boolean;
  /** How often mDNS queries go out (ms). Short so a LAN cluster forms within seconds. */
  mdnsIntervalMs?: number;
  log: Logger;
  /** Builds this node's advertisement (without peerId/seq/addrs, which the node fills in). */
  advertisement: () => Omit<Advertisement, 'peerId' | 'seq' | 'addrs'>;
}

/** Re-dial policy for lost peers: exponential backoff, capped, and a limit after which we forget the peer. */
export const REDIAL = { initialMs: 250, maxMs: 15_000, maxAttempts: 40 } as const;
/** At most this many concurrent inbound control streams per node: a flood of requests cannot exhaust us. */
export const MAX_INBOUND_CONTROL_STREAMS = 1024;
/** A client may keep this many control calls in flight on one connection (benchmarks use 500). */
export const MAX_OUTBOUND_CONTROL_STREAMS = 1024;
/** Control sessions one connection may hold open (a client needs one; nodes one per peer). */
export const MAX_INBOUND_CONTROL_SESSIONS = 16;
/** A control request must arrive within this time after the stream opens. */
export const CONTROL_READ_TIMEOUT_MS = 10_000;

interface KnownPeer {
  addrs: Multiaddr[];
  attempts: number;
  timer: NodeJS.Timeout | null;
}

export class MeshNode extends EventEmitter {
  readonly rpc = new RpcRegistry();
  readonly log: Logger;
  #libp2p!: Libp2p;
  readonly #opts: MeshNodeOptions;
  readonly #known = new Map<string, KnownPeer>();
  readonly #table = new Map<string, { advert: Advertisement; signed: SignedAdvert; lastSeen: number }>();
  #seq = Date.now();
  #own: Advertisement | null = null;
  #stopping = false;
  #inboundControl = 0;
  /** Outbound control sessions to other nodes, by peer ID (dropped when the peer disconnects). */
  readonly #sessions = new Map<string, ControlSessionClient>();
  readonly #bootstrapAddrs: Multiaddr[] = [];
  #bootstrapTimer: NodeJS.Timeout | null = null;
  #ownReady: Promise<void> = Promise.resolve();

  constructor(opts: MeshNodeOptions) {
    super();
    this.#opts = opts;
    this.log = opts.log;
  }

  get libp2p(): Libp2p {
    return this.#libp2p;
  }

  get peerId(): string {
    return this.#libp2p.peerId.toString();
  }

  addrs(): string[] {
    return this.#libp2p.getMultiaddrs().map((a) => a.toString());
  }

  async start(): Promise<void> {
    const peerDiscovery = [];
    if (this.#opts.mdns) {
      peerDiscovery.push(
        mdns({
          serviceTag: `_meshrun-${clusterFingerprint(this.#opts.clusterKey)}._udp.local`,
          interval: this.#opts.mdnsIntervalMs ?? 1000,
        }),
      );
    }
    this.#libp2p = await createLibp2p({
      privateKey: this.#opts.privateKey,
      addresses: { listen: this.#opts.listen },
      ...meshrunStack(this.#opts.clusterKey),
      peerDiscovery,
      services: { identify: identify(), ping: ping() },
      // libp2p refuses more than 5 inbound connections per second from one IP by default: too few for a lab
      // where many nodes or CLI calls share an address (NAT, one host). Still bounded.
      connectionManager: { maxConnections: 1000, inboundConnectionThreshold: 100 },
    });

    this.#libp2p.addEventListener('peer:discovery', (evt) => {
      const { id, multiaddrs } = evt.detail;
      if (id.equals(this.#libp2p.peerId)) return;
      this.#remember(id.toString(), multiaddrs);
      void this.#dial(id.toString());
    });
    this.#libp2p.addEventListener('peer:connect', (evt) => {
      const id = evt.detail.toString();
      const known = this.#known.get(id);
      if (known) known.attempts = 0;
      this.emit('peer:connect', id);
      // Every new connection gets our table: pushes are idempotent (seq-ordered).
      void this.#pushTableTo(evt.detail);
    });
    this.#libp2p.addEventListener('peer:disconnect', (evt) => {
      const id = evt.detail.toString();
      this.emit('peer:disconnect', id);
      const session = this.#sessions.get(id);
      if (session && session.pending === 0) {
        this.#sessions.delete(id);
        void session.close();
      }
      if (!this.#stopping && this.#known.has(id)) this.#scheduleRedial(id);
    });

    await this.#libp2p.handle(PROTOCOLS.advert, (stream, connection) => this.#onAdvert(stream, connection), {
      maxInboundStreams: 64,
    });
    await this.#libp2p.handle(
      PROTOCOLS.control,
      (stream, connection) => this.#onControl(stream, connection),
      {
        maxInboundStreams: MAX_INBOUND_CONTROL_STREAMS,
      },
    );

    await this.#libp2p.handle(
      PROTOCOLS.controlSession,
      (stream, connection) => serveControlSession(stream, connection, this.rpc, this.log),
      { maxInboundStreams: MAX_INBOUND_CONTROL_SESSIONS },
    );

    for (const raw of this.#opts.bootstrap ?? []) {
      try {
        this.#bootstrapAddrs.push(multiaddr(raw));
      } catch (err) {
        throw new Error(`invalid bootstrap address ${raw}: ${(err as Error).message}`);
      }
    }
    this.#ownReady = this.#refreshOwnAdvert();
    await this.#ownReady;
    this.#dialBootstrap(0);
  }

  /**
   * Bootstrap addresses may name a peer that is not up yet (all nodes of a fresh cluster start at once), and
   * may lack a `/p2p/` component, so they are retried with backoff until one connection to each succeeds.
   */
  #dialBootstrap(round: number): void {
    if (this.#stopping || this.#bootstrapAddrs.length === 0) return;
    const pending = this.#bootstrapAddrs.filter((ma) => {
      const pid = ma.getComponents().find((c) => c.name === 'p2p')?.value;
      if (pid) return this.#libp2p.getConnections().every((c) => c.remotePeer.toString() !== pid);
      const target = ma.toString();
      return this.#libp2p.getConnections().every((c) => !c.remoteAddr.toString().startsWith(target));
    });
    for (const ma of pending) {
      this.#libp2p
        .dial(ma, { signal: AbortSignal.timeout(5000) })
        .then((conn) => this.#remember(conn.remotePeer.toString(), [conn.remoteAddr]))
        .catch((err: Error) =>
          this.log.debug({ addr: ma.toString(), err: err.message }, 'bootstrap dial failed'),
        );
    }
    if (round >= REDIAL.maxAttempts) return;
    const delay = Math.min(REDIAL.maxMs, REDIAL.initialMs * 2 ** Math.min(round, 10));
    this.#bootstrapTimer = setTimeout(
      () => this.#dialBootstrap(round + 1),
      pending.length > 0 ? delay : REDIAL.maxMs,
    );
    this.#bootstrapTimer.unref();
  }

  #remember(id: string, addrs: Multiaddr[]): void {
    const known = this.#known.get(id);
    if (known) {
      if (addrs.length > 0) known.addrs = addrs;
      return;
    }
    if (this.#known.size >= ADVERT_LIMITS.maxNodesInTable) return;
    this.#known.set(id, { addrs, attempts: 0, timer: null });
  }

  async #dial(id: string): Promise<void> {
    const known = this.#known.get(id);
    if (!known || this.#stopping) return;
    if (this.#libp2p.getConnections().some((c) => c.remotePeer.toString() === id)) return;
    try {
      const target = known.addrs.length > 0 ? known.addrs : undefined;
      if (target) await this.#libp2p.dial(target, { signal: AbortSignal.timeout(5000) });
      else await this.#libp2p.dial(peerIdFromString(id), { signal: AbortSignal.timeout(5000) });
    } catch (err) {
      this.log.debug({ peer: id, err: (err as Error).message }, 'dial failed');
      this.#scheduleRedial(id);
    }
  }

  #scheduleRedial(id: string): void {
    const known = this.#known.get(id);
    if (!known || known.timer || this.#stopping) return;
    known.attempts += 1;
    if (known.attempts > REDIAL.maxAttempts) {
      this.log.info({ peer: id }, 'giving up re-dialing lost peer (it will be dialed again if rediscovered)');
      this.#known.delete(id);
      return;
    }
    const delay = Math.min(REDIAL.maxMs, REDIAL.initialMs * 2 ** Math.min(known.attempts - 1, 10));
    known.timer = setTimeout(() => {
      known.timer = null;
      void this.#dial(id);
    }, delay);
    known.timer.unref();
  }

  // ---- advertisements -------------------------------------------------------------------------------

  /** Rebuilds our advertisement (call after hardware, labels, offer or mode change) and pushes it to all peers. */
  refreshAdvertisement(): void {
    void this.#refreshOwnAdvert().then(() => {
      const own = this.#table.get(this.peerId);
      if (!own) return;
      for (const conn of this.#libp2p.getConnections()) void this.#pushAdverts(conn.remotePeer, [own.signed]);
    });
  }

  async #refreshOwnAdvert(): Promise<void> {
    this.#seq += 1;
    const base = this.#opts.advertisement();
    const advert: Advertisement = {
      ...base,
      peerId: this.peerId,
      seq: this.#seq,
      addrs: this.addrs().slice(0, ADVERT_LIMITS.maxAddrs),
    };
    const payload = encode(advert);
    const signature = await this.#opts.privateKey.sign(concat(ADVERT_DOMAIN, payload));
    this.#own = advert;
    this.#table.set(this.peerId, { advert, signed: { payload, signature }, lastSeen: Date.now() });
    this.emit('advert', advert);
  }

  /** On a new connection the peer gets the whole table (its own entry aside): that is how membership spreads. */
  async #pushTableTo(peer: PeerId): Promise<void> {
    await this.#ownReady;
    const id = peer.toString();
    const batch = [...this.#table.values()].filter((e) => e.advert.peerId !== id).map((e) => e.signed);
    for (let i = 0; i < batch.length; i += 256) await this.#pushAdverts(peer, batch.slice(i, i + 256));
  }

  async #pushAdverts(peer: PeerId, adverts: SignedAdvert[]): Promise<void> {
    if (adverts.length === 0 || this.#stopping) return;
    let stream: Stream | undefined;
    try {
      stream = await this.#libp2p.dialProtocol(peer, PROTOCOLS.advert, { signal: AbortSignal.timeout(5000) });
      await writeFrame(lpStream(stream, LP_OPTIONS), { adverts });
      await stream.close();
    } catch (err) {
      stream?.abort(err as Error);
      this.log.debug({ peer: peer.toString(), err: (err as Error).message }, 'advert push failed');
    }
  }

  async #verify(signed: SignedAdvert): Promise<Advertisement> {
    const advert = decode(AdvertisementSchema, signed.payload);
    let ok = false;
    try {
      const key = peerIdFromString(advert.peerId).publicKey;
      ok = key !== undefined && (await key.verify(concat(ADVERT_DOMAIN, signed.payload), signed.signature));
    } catch {
      ok = false;
    }
    if (!ok) throw new ProtocolError('INVALID', `advertisement for ${advert.peerId} has a bad signature`);
    return advert;
  }

  async #onAdvert(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    try {
      const push = await readFrame(lpStream(stream, LP_OPTIONS), AdvertPushSchema, {
        signal: AbortSignal.timeout(CONTROL_READ_TIMEOUT_MS),
      });
      const fresh: SignedAdvert[] = [];
      for (const signed of push.adverts) {
        const advert = await this.#verify(signed);
        if (advert.peerId === this.peerId) continue;
        const prev = this.#table.get(advert.peerId);
        if (!prev && this.#table.size >= ADVERT_LIMITS.maxNodesInTable) continue;
        if (prev && prev.advert.seq >= advert.seq) {
          if (advert.peerId === from) prev.lastSeen = Date.now();
          continue;
        }
        this.#table.set(advert.peerId, { advert, signed, lastSeen: Date.now() });
        fresh.push(signed);
        this.emit('advert', advert);
        if (advert.peerId === from)
          this.#remember(from, connection.remoteAddr ? [connection.remoteAddr] : []);
        else if (!this.#isConnected(advert.peerId)) {
          // Learnt of a node through a relay: connect to it directly (full mesh among nodes).
          this.#remember(
            advert.peerId,
            advert.addrs.flatMap((a) => safeMultiaddr(a)),
          );
          void this.#dial(advert.peerId);
        }
      }
      await stream.close();
      // Relay what was new to us to everyone else; seq-ordering stops the flood.
      if (fresh.length > 0) {
        for (const conn of this.#libp2p.getConnections()) {
          const to = conn.remotePeer.toString();
          if (to === from) continue;
          void this.#pushAdverts(conn.remotePeer, fresh);
        }
      }
    } catch (err) {
      this.log.warn({ peer: from, err: (err as Error).message }, 'rejected advertisement');
      stream.abort(err as Error);
    }
  }

  #isConnected(id: string): boolean {
    return this.#libp2p.getConnections().some((c) => c.remotePeer.toString() === id);
  }

  ownAdvertisement(): Advertisement {
    return this.#own!;
  }

  /** The node table: every node we have an advertisement from, as `meshrun nodes --json` prints it. */
  nodes(): NodeRow[] {
    const connected = new Set(this.#libp2p.getConnections().map((c) => c.remotePeer.toString()));
    return [...this.#table.values()]
      .map(({ advert, lastSeen }) => ({
        ...advert,
        self: advert.peerId === this.peerId,
        connected: advert.peerId === this.peerId || connected.has(advert.peerId),
        lastSeen,
      }))
      .sort((a, b) => a.peerId.localeCompare(b.peerId));
  }

  peers(): { peerId: string; addrs: string[]; node: boolean }[] {
    const byPeer = new Map<string, string[]>();
    for (const c of this.#libp2p.getConnections()) {
      const id = c.remotePeer.toString();
      byPeer.set(id, [...(byPeer.get(id) ?? []), c.remoteAddr.toString()]);
    }
    return [...byPeer.entries()]
      .map(([peerId, addrs]) => ({ peerId, addrs, node: this.#table.has(peerId) }))
      .sort((a, b) => a.peerId.localeCompare(b.peerId));
  }

  // ---- control RPC over libp2p ------------------------------------------------------------------------

  async #onControl(stream: Stream, connection: Connection): Promise<void> {
    this.#inboundControl += 1;
    const lp = lpStream(stream, LP_OPTIONS);
    try {
      let req: { method: string; params?: unknown; auth?: unknown };
      try {
        req = await readFrame(lp, RpcRequestSchema, { signal: AbortSignal.timeout(CONTROL_READ_TIMEOUT_MS) });
      } catch (err) {
        const outcome = toErrorOutcome(err);
        this.log.warn(
          { peer: connection.remotePeer.toString(), err: outcome.message },
          'rejected control request',
        );
        await writeFrame(lp, { ok: false, error: { code: outcome.code, message: outcome.message } }).catch(
          () => {},
        );
        stream.abort(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      const abort = new AbortController();
      const onClose = () => abort.abort();
      stream.addEventListener('close', onClose);
      const ctx: RpcContext = {
        via: 'p2p',
        remotePeer: connection.remotePeer.toString(),
        auth: req.auth,
        signal: abort.signal,
      };
      const outcome = await this.rpc.dispatch(req.method, req.params, ctx);
      if (outcome.kind === 'value') await writeFrame(lp, { ok: true, result: outcome.value });
      else if (outcome.kind === 'error')
        await writeFrame(lp, { ok: false, error: { code: outcome.code, message: outcome.message } });
      else {
        try {
          for await (const item of outcome.items) {
            if (abort.signal.aborted) break;
            await writeFrame(lp, { item });
          }
          await writeFrame(lp, { end: true });
        } catch (err) {
          const e = toErrorOutcome(err);
          await writeFrame(lp, { ok: false, error: { code: e.code, message: e.message } }).catch(() => {});
        }
      }
      stream.removeEventListener('close', onClose);
      await stream.close().catch(() => {});
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'control stream failed');
      stream.abort(err as Error);
    } finally {
      this.#inboundControl -= 1;
    }
  }

  /**
   * Calls a control method on another node (heartbeats, fetching logs from the node that ran a task).
   * Unary calls share one control session per peer; streaming ones get their own stream.
   */
  async call(
    peer: string,
    method: string,
    params: unknown,
    opts: { timeoutMs?: number; onItem?: (item: unknown) => void } = {},
  ): Promise<unknown> {
    if (opts.onItem) return callControl(this.#libp2p, peer, method, params, opts);
    let session = this.#sessions.get(peer);
    if (!session) {
      session = new ControlSessionClient(this.#libp2p, peerIdFromString(peer));
      this.#sessions.set(peer, session);
    }
    return session.call(method, params, opts);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#bootstrapTimer) clearTimeout(this.#bootstrapTimer);
    for (const s of this.#sessions.values()) void s.close();
    this.#sessions.clear();
    for (const k of this.#known.values()) if (k.timer) clearTimeout(k.timer);
    await this.#libp2p?.stop();
  }
}

/** Client side of the control protocol, shared by nodes and the CLI. */
export async function callControl(
  libp2p: Libp2p,
  peer: string | Multiaddr,
  method: string,
  params: unknown,
  opts: { timeoutMs?: number; auth?: unknown; onItem?: (item: unknown) => void } = {},
): Promise<unknown> {
  const target = typeof peer === 'string' ? multiaddr(`/p2p/${peer}`) : peer;
  const signal = AbortSignal.timeout(opts.timeoutMs ?? 30_000);
  const stream = await libp2p.dialProtocol(target, PROTOCOLS.control, {
    signal,
    maxOutboundStreams: MAX_OUTBOUND_CONTROL_STREAMS,
    // Send the protocol name together with the request: one round trip less per call.
    negotiateFully: false,
  });
  const lp = lpStream(stream, LP_OPTIONS);
  try {
    await writeFrame(lp, { method, params, auth: opts.auth });
    for (;;) {
      const res = await readFrame(lp, RpcResponseSchema, opts.onItem ? {} : { signal });
      if ('item' in res) {
        opts.onItem?.(res.item);
        continue;
      }
      if ('end' in res) return null;
      if (res.ok) return res.result;
      throw new RemoteRpcError(res.error.code, res.error.message);
    }
  } finally {
    await stream.close().catch(() => stream.abort(new Error('closed')));
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

function safeMultiaddr(text: string): Multiaddr[] {
  try {
    return [multiaddr(text)];
  } catch {
    return [];
  }
}

export function defaultHostname(): string {
  return os.hostname().slice(0, 256);
}

export { RPC_ERRORS };
