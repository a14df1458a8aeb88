/**
 * The stream muxer of every meshrun libp2p host: `@chainsafe/libp2p-yamux`, with one change to when a stream
 * grants its peer more receive window.
 *
 * libp2p-yamux 8 answers every data frame it receives with a WINDOW_UPDATE frame (its check
 * `recvWindowCapacity >= recvWindow` fails as soon as one byte was read). On request/response traffic that
 * doubles the frames on the wire: each Raft append, acknowledgement, RPC request and answer costs a second
 * encrypted frame, a second write syscall on the sender and a second read, decrypt and decode on the peer.
 * Measured on a 3-voter loopback cluster, one client: 8.4 writes per committed put on the leader and 4.2 on
 * each follower, p50 1.9 ms; with the rule below, p50 1.2 ms and about 40 % less CPU per put.
 *
 * The rule here is hashicorp/yamux's and go-yamux's (the reference implementations of the spec, which leaves
 * the timing to the receiver): grant more window only once less than half of it is left, or when the frame
 * must carry flags (SYN/ACK). Window auto-tuning (doubling while the reader keeps up within 4 RTTs) is kept
 * and, as in go-yamux, judged only when an update is actually sent. Flow control is unchanged: the sender
 * still never has more than the window in flight and always gets an update before it runs out.
 *
 * It replaces `YamuxStream.prototype.sendWindowUpdate`, which relies on that class's fields; the install
 * refuses to run on a libp2p-yamux whose stream class does not look like the one this was written against,
 * and yamux-muxer.test.ts counts the frames on a real connection, so an upgrade that changes them fails loudly.
 */
import { yamux } from '@chainsafe/libp2p-yamux';
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';

/** Frame type 0x1 in the yamux spec. */
const WINDOW_UPDATE_FRAME = 1;

/** The fields of libp2p-yamux 8's YamuxStream that the window-update rule reads and writes. */
interface YamuxStreamWindow {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
  maxStreamWindowSize: number;
  epochStart: number;
  getRTT(): number;
  getSendFlags(): number;
  sendFrame(header: { type: number; flag: number; streamID: number; length: number }): boolean;
  streamId: number;
}

function sendWindowUpdateAtHalf(this: YamuxStreamWindow): void {
  if (this.state === StreamState.Paused) {
    // Nothing is granted while the reader is paused; resuming calls this again. Restart the auto-tuning
    // epoch so the pause does not count as a slow reader.
    this.epochStart = Date.now();
    return;
  }
  const flags = this.getSendFlags();
  if (flags === 0 && this.recvWindowCapacity >= this.recvWindow / 2) return;
  const now = Date.now();
  const rtt = this.getRTT();
  if (flags === 0 && rtt > -1 && now - this.epochStart <= rtt * 4) {
    this.recvWindow = Math.min(this.recvWindow * 2, this.maxStreamWindowSize);
  }
  const delta = this.recvWindow - this.recvWindowCapacity;
  this.recvWindowCapacity = this.recvWindow;
  this.epochStart = now;
  this.sendFrame({ type: WINDOW_UPDATE_FRAME, flag: flags, streamID: this.streamId, length: delta });
}

let installed = false;

/** Installs the window-update rule (once per process); throws if libp2p-yamux is not the expected shape. */
export function installYamuxWindowUpdateRule(): void {
  if (installed) return;
  const proto = YamuxStream.prototype as unknown as Record<string, unknown>;
  if (
    typeof proto.sendWindowUpdate !== 'function' ||
    typeof proto.getSendFlags !== 'function' ||
    typeof proto.handleData !== 'function' ||
    StreamState.Paused === undefined
  ) {
    throw new Error(
      'unexpected @chainsafe/libp2p-yamux stream class: core/src/node/yamux-muxer.ts was written for version 8',
    );
  }
  proto.sendWindowUpdate = sendWindowUpdateAtHalf;
  installed = true;
}

/** The muxer for `createLibp2p({ streamMuxers: [meshrunYamux()] })`. */
export function meshrunYamux(...args: Parameters<typeof yamux>): ReturnType<typeof yamux> {
  installYamuxWindowUpdateRule();
  return yamux(...args);
}
