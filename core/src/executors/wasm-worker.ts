/**
 * Worker-thread side of the WASM executor: instantiates one WASI preview1 module and runs it to the end.
 * stdout/stderr writes (fd 1/2) are intercepted and posted to the parent as they happen, so output streams
 * live; everything else is Node's WASI. The parent terminates this thread on timeout, cancel or quota.
 */

import { WASI } from 'node:wasi';
import { parentPort, workerData } from 'node:worker_threads';
import { type WasmMemory, wasmApi } from './wasm-module.ts';

export interface WasmWorkerInput {
  module: Uint8Array;
  args: string[];
  env: Record<string, string>;
  scratchDir: string;
  stdinFd: number;
  nullFd: number;
  maxOutputBytes: number;
}

export type WasmWorkerMessage =
  | { type: 'started' }
  | { type: 'output'; fd: 1 | 2; data: Uint8Array; memoryBytes: number }
  | { type: 'output-limit' }
  | { type: 'exit'; code: number; memoryBytes: number; cpuMs: number }
  | { type: 'trap'; message: string; memoryBytes: number; cpuMs: number };

const ERRNO_SUCCESS = 0;
const ERRNO_FBIG = 22;

const input = workerData as WasmWorkerInput;
const port = parentPort!;
const post = (m: WasmWorkerMessage) => port.postMessage(m);
const cpuMs = () => {
  const u = process.threadCpuUsage();
  return Math.round((u.user + u.system) / 1000);
};

const wasi = new WASI({
  version: 'preview1',
  args: input.args,
  env: input.env,
  preopens: { '/scratch': input.scratchDir },
  stdin: input.stdinFd,
  stdout: input.nullFd,
  stderr: input.nullFd,
  returnOnExit: true,
});

let memory: WasmMemory | null = null;
const memoryBytes = () => memory?.buffer.byteLength ?? 0;
let outputBytes = 0;
const wasiImport = wasi.wasiImport as Record<string, (...a: number[]) => number>;
const fdWrite = wasiImport.fd_write;
const imports = {
  wasi_snapshot_preview1: {
    ...wasiImport,
    fd_write(fd: number, iovs: number, iovsLen: number, nwrittenPtr: number): number {
      if ((fd !== 1 && fd !== 2) || !memory) return fdWrite(fd, iovs, iovsLen, nwrittenPtr);
      const view = new DataView(memory.buffer);
      const parts: Uint8Array[] = [];
      let total = 0;
      for (let i = 0; i < iovsLen; i++) {
        const ptr = view.getUint32(iovs + i * 8, true);
        const len = view.getUint32(iovs + i * 8 + 4, true);
        parts.push(new Uint8Array(memory.buffer, ptr, len).slice());
        total += len;
      }
      outputBytes += total;
      if (outputBytes > input.maxOutputBytes) {
        post({ type: 'output-limit' });
        return ERRNO_FBIG;
      }
      const data = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      if (data.byteLength > 0) post({ type: 'output', fd, data, memoryBytes: memoryBytes() });
      view.setUint32(nwrittenPtr, total, true);
      return ERRNO_SUCCESS;
    },
  },
};

const mod = await wasmApi.compile(input.module);
const instance = await wasmApi.instantiate(mod, imports);
memory = (instance.exports.memory as WasmMemory | undefined) ?? null;
post({ type: 'started' });
try {
  const code = wasi.start(instance as Parameters<WASI['start']>[0]);
  post({ type: 'exit', code, memoryBytes: memoryBytes(), cpuMs: cpuMs() });
} catch (e) {
  post({
    type: 'trap',
    message: String((e as Error)?.message ?? e),
    memoryBytes: memoryBytes(),
    cpuMs: cpuMs(),
  });
}
