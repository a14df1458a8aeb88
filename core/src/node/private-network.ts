/**
 * The cluster-key connection protector: libp2p's private-network protocol (pnet v1: exchange 24-byte nonces,
 * then XOR every byte with an XSalsa20 keystream keyed by the pre-shared key), wire-compatible with
 * `@libp2p/pnet`, which we replace because its `xsalsa20` dependency keeps all connections in one shared
 * WebAssembly memory whose growth ping-pongs between stale views until the process dies
 * (`WebAssembly.Memory.grow(): Maximum memory size exceeded`, seen under load after one large message).
 * The keystream comes from @noble/ciphers (pure JS, audited), with per-connection state only.
 */
import type { AbortOptions, ConnectionProtector, MultiaddrConnection } from '@libp2p/interface';
import { AbstractMultiaddrConnection, byteStream } from '@libp2p/utils';
import { xsalsa20 } from '@noble/ciphers/salsa.js';
import type { Uint8ArrayList } from 'uint8arraylist';

const NONCE_LENGTH = 24;
const BLOCK = 64;
/** A nonce must arrive this fast after the TCP connection opened. */
export const HANDSHAKE_TIMEOUT_MS = 5000;

/** Keystream generated at a time for small chunks: 64 XSalsa20 blocks. */
const KEYSTREAM_BYTES = 64 * BLOCK;
/** Chunks at least this long are XORed by one XSalsa20 call instead, which is faster on long inputs. */
const DIRECT_BYTES = 1024;

/**
 * An XSalsa20 keystream XOR that can be fed chunks of any size, in order. Small chunks (Raft and control
 * messages) are XORed with keystream generated KEYSTREAM_BYTES at a time: one XSalsa20 call per small chunk
 * re-derived the subkey and padded the partial block every time, several times the cost of the XOR.
 */
export class XorStream {
  readonly #key: Uint8Array;
  readonly #nonce: Uint8Array;
  /** Bytes of the stream XORed so far. */
  #offset = 0;
  readonly #zeros = new Uint8Array(KEYSTREAM_BYTES);
  readonly #keystream = new Uint8Array(KEYSTREAM_BYTES);
  /** Stream offset of #keystream[0] (block-aligned); -1 before the first use. */
  #keystreamAt = -1;

  constructor(key: Uint8Array, nonce: Uint8Array) {
    this.#key = key;
    this.#nonce = nonce;
  }

  update(data: Uint8Array): Uint8Array {
    const n = data.byteLength;
    if (n >= DIRECT_BYTES) return this.#direct(data);
    const out = new Uint8Array(n);
    const ks = this.#keystream;
    for (let i = 0; i < n; ) {
      const pos = this.#offset + i;
      if (this.#keystreamAt < 0 || pos < this.#keystreamAt || pos >= this.#keystreamAt + KEYSTREAM_BYTES) {
        this.#keystreamAt = pos - (pos % BLOCK);
        xsalsa20(this.#key, this.#nonce, this.#zeros, ks, this.#keystreamAt / BLOCK);
      }
      const at = pos - this.#keystreamAt;
      const m = Math.min(n - i, KEYSTREAM_BYTES - at);
      for (let j = 0; j < m; j++) out[i + j] = data[i + j]! ^ ks[at + j]!;
      i += m;
    }
    this.#offset += n;
    return out;
  }

  #direct(data: Uint8Array): Uint8Array {
    const skip = this.#offset % BLOCK;
    const counter = Math.floor(this.#offset / BLOCK);
    let out: Uint8Array;
    if (skip === 0) {
      out = xsalsa20(this.#key, this.#nonce, data, undefined, counter);
    } else {
      // Mid-block: pad to the block boundary so the keystream lines up, then drop the pad.
      const padded = new Uint8Array(skip + data.byteLength);
      padded.set(data, skip);
      out = xsalsa20(this.#key, this.#nonce, padded, undefined, counter).subarray(skip);
    }
    this.#offset += data.byteLength;
    return out;
  }
}

class PrivateStream extends AbstractMultiaddrConnection {
  readonly #maConn: MultiaddrConnection;
  readonly #in: XorStream;
  readonly #out: XorStream;

  constructor(init: {
    maConn: MultiaddrConnection;
    psk: Uint8Array;
    localNonce: Uint8Array;
    remoteNonce: Uint8Array;
  }) {
    super({
      log: init.maConn.log,
      remoteAddr: init.maConn.remoteAddr,
      direction: init.maConn.direction,
    } as never);
    this.#maConn = init.maConn;
    this.#in = new XorStream(init.psk, init.remoteNonce);
    this.#out = new XorStream(init.psk, init.localNonce);
    this.#maConn.addEventListener('message', (evt) => {
      const data = evt.data as Uint8Array | Uint8ArrayList;
      if (data instanceof Uint8Array) this.onData(this.#in.update(data));
      else for (const buf of data) this.onData(this.#in.update(buf));
    });
    this.#maConn.addEventListener('drain', () => this.onMuxerDrain());
    this.#maConn.addEventListener('close', (evt) => {
      if (evt.error != null) {
        if (evt.local) this.abort(evt.error);
        else this.onRemoteReset();
      } else {
        this.onTransportClosed();
      }
    });
    // The peer may have sent everything and hung up while the nonces were exchanged: that 'close' event fired
    // before we listened, and without this the handshake above us would wait for bytes that never come.
    if (
      this.#maConn.status === 'closed' ||
      this.#maConn.status === 'aborted' ||
      this.#maConn.status === 'reset'
    ) {
      queueMicrotask(() => this.onTransportClosed());
    }
  }

  async sendClose(options?: AbortOptions): Promise<void> {
    await this.#maConn.close(options);
  }

  sendData(data: Uint8ArrayList): { sentBytes: number; canSendMore: boolean } {
    return { sentBytes: data.byteLength, canSendMore: this.#maConn.send(this.#out.update(data.subarray())) };
  }

  sendReset(err: Error): void {
    this.#maConn.abort(err);
  }

  sendPause(): void {
    this.#maConn.pause();
  }

  sendResume(): void {
    this.#maConn.resume();
  }
}

class ClusterKeyProtector implements ConnectionProtector {
  readonly #psk: Uint8Array;
  readonly [Symbol.toStringTag] = '@meshrun/private-network';

  constructor(keyFile: Uint8Array) {
    // swarm.key v1: "/key/swarm/psk/1.0.0/", "/base16/", then the 32-byte key in hex.
    const hex = new TextDecoder().decode(keyFile).split(/\r?\n/)[2] ?? '';
    if (!/^[0-9a-fA-F]{64}$/.test(hex.trim()))
      throw new Error('invalid cluster key (expected the swarm.key v1 format)');
    this.#psk = Uint8Array.from(Buffer.from(hex.trim(), 'hex'));
  }

  async protect(connection: MultiaddrConnection, options?: AbortOptions): Promise<MultiaddrConnection> {
    const localNonce = crypto.getRandomValues(new Uint8Array(NONCE_LENGTH));
    const opts = options?.signal ? options : { signal: AbortSignal.timeout(HANDSHAKE_TIMEOUT_MS) };
    const bytes = byteStream(connection);
    const [remote] = await Promise.all([
      bytes.read({ bytes: NONCE_LENGTH, ...opts }),
      bytes.write(localNonce, opts),
    ]);
    return new PrivateStream({
      maConn: bytes.unwrap(),
      psk: this.#psk,
      localNonce,
      remoteNonce: remote.subarray(),
    }) as unknown as MultiaddrConnection;
  }
}

/** `connectionProtector` for createLibp2p: the cluster key file's bytes (swarm.key format). */
export function clusterKeyProtector(keyFileBytes: Uint8Array): () => ConnectionProtector {
  return () => new ClusterKeyProtector(keyFileBytes);
}
