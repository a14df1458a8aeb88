/**
 * Length-prefixed frames on a long-lived libp2p stream, read as they arrive and written in batches: the
 * transport of Raft messages and control sessions. The wire format is `lpStream`'s (an unsigned-varint
 * length, then the payload), so either side may use either; this exists because those streams carry many
 * small frames and `lpStream.read` awaits once per prefix byte and per payload (see protocol's FrameDecoder).
 */
import type { Stream } from '@libp2p/interface';
import { FrameDecoder, framePrefix } from '@meshrun/protocol';
import { Uint8ArrayList } from 'uint8arraylist';

/**
 * Calls `onFrame` with each frame's payload, synchronously as the bytes arrive, until the remote side stops
 * writing (resolves) or the stream fails, a prefix is bad or `onFrame` throws (rejects; the caller decides
 * whether to abort the stream). Frames are bounded by the protocol's MAX_MESSAGE_BYTES. Use
 * `stream.pause()`/`resume()` to stop and restart delivery.
 */
export function readFrames(stream: Stream, onFrame: (payload: Uint8Array) => void): Promise<void> {
  const decoder = new FrameDecoder();
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      stream.removeEventListener('message', onMessage);
      stream.removeEventListener('remoteCloseWrite', onEnd);
      stream.removeEventListener('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onMessage = (evt: { data: Uint8Array | Uint8ArrayList }) => {
      if (done) return;
      try {
        const chunks = evt.data instanceof Uint8Array ? [evt.data] : evt.data;
        for (const chunk of chunks) for (const frame of decoder.push(chunk)) onFrame(frame);
      } catch (err) {
        finish(err as Error);
      }
    };
    const onEnd = () => finish();
    const onClose = (evt: Event) => finish((evt as Event & { error?: Error }).error);
    stream.addEventListener('message', onMessage);
    stream.addEventListener('remoteCloseWrite', onEnd);
    stream.addEventListener('close', onClose);
    // Already over before we listened: the data buffered until now is delivered in a microtask (libp2p's
    // addEventListener('message') does that), so end only after it.
    if (stream.status !== 'open' || stream.remoteWriteStatus !== 'writable') setTimeout(() => finish(), 0);
  });
}

/**
 * Writes frames (payloads; the prefixes are added here) in one send. Returns false when the stream wants the
 * writer to wait for `drained(stream)` before sending more.
 */
export function sendFrames(stream: Stream, payloads: Uint8Array[]): boolean {
  const list = new Uint8ArrayList();
  for (const p of payloads) list.append(framePrefix(p.byteLength), p);
  return stream.send(list);
}

/** Resolves when a stream that refused more data can take it again; rejects if it closes first. */
export function drained(stream: Stream): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onDrain = () => {
      stream.removeEventListener('close', onClose);
      resolve();
    };
    const onClose = () => {
      stream.removeEventListener('drain', onDrain);
      reject(new Error('stream closed while waiting to write'));
    };
    stream.addEventListener('drain', onDrain, { once: true });
    stream.addEventListener('close', onClose, { once: true });
  });
}
