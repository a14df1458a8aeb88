// A size-capped log file for child-process output. Writes are synchronous so that the file (and logTail)
// always reflect everything received so far and ordering between stdout and stderr is kept.
//
// Bound: the live file is rotated to `<path>.1` once it reaches half the cap, so the two files together never
// exceed capBytes, and the most recent output is always kept (the oldest is what gets dropped).
import { closeSync, fstatSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';

/** Default cap on the disk space one process's log may use (live file + one rotated file). */
export const DEFAULT_LOG_CAP_BYTES = 5 * 1024 * 1024;
/** Smallest cap accepted; below this the tail is too short to be useful. */
const MIN_LOG_CAP_BYTES = 1024;

export class CappedLog {
  readonly path: string;
  readonly rotatedPath: string;
  readonly capBytes: number;
  private readonly halfCap: number;
  private fd: number | undefined;
  private liveBytes: number;
  /** Total bytes offered to write(), including dropped ones; for diagnostics. */
  totalBytes = 0;

  constructor(path: string, capBytes: number = DEFAULT_LOG_CAP_BYTES) {
    if (!Number.isInteger(capBytes) || capBytes < MIN_LOG_CAP_BYTES) {
      throw new RangeError(`CappedLog: capBytes must be an integer >= ${MIN_LOG_CAP_BYTES}, got ${capBytes}`);
    }
    this.path = path;
    this.rotatedPath = `${path}.1`;
    this.capBytes = capBytes;
    this.halfCap = Math.floor(capBytes / 2);
    rmSync(this.rotatedPath, { force: true });
    this.fd = openSync(path, 'w');
    this.liveBytes = 0;
  }

  write(data: string | Uint8Array): void {
    if (this.fd === undefined) return;
    let buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    this.totalBytes += buf.length;
    // A single chunk larger than half the cap keeps only its end: the newest output matters most.
    if (buf.length > this.halfCap) buf = buf.subarray(buf.length - this.halfCap);
    if (this.liveBytes + buf.length > this.halfCap) this.rotate();
    writeSync(this.fd, buf);
    this.liveBytes += buf.length;
  }

  /** The last `bytes` bytes written (spanning the rotated file when needed), decoded as UTF-8. */
  tail(bytes = 4096): string {
    const want = Math.max(0, Math.min(bytes, this.capBytes));
    const live = readTail(this.path, want);
    if (live.length >= want) return live.toString('utf8');
    const older = readTail(this.rotatedPath, want - live.length);
    return Buffer.concat([older, live]).toString('utf8');
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }

  private rotate(): void {
    closeSync(this.fd!);
    renameSync(this.path, this.rotatedPath);
    this.fd = openSync(this.path, 'w');
    this.liveBytes = 0;
  }
}

function readTail(path: string, bytes: number): Buffer {
  if (bytes <= 0) return Buffer.alloc(0);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return Buffer.alloc(0);
  }
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, bytes);
    const buf = Buffer.alloc(len);
    const n = readSync(fd, buf, 0, len, size - len);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}
