/** Shared helpers for the executor tests (real engine, no mocks). Not a test file itself. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import type { NodePolicy, TaskEvent, TaskSpec } from './types.ts';

export const TEST_IMAGE = 'meshrun-test/busybox:1';

/**
 * Returns a skip message when the Docker engine is unreachable outside CI; in CI (CI=true) a missing engine
 * is a failure, so this throws.
 */
export async function dockerSkipReason(): Promise<string | false> {
  try {
    await new Docker({ socketPath: '/var/run/docker.sock' }).ping();
    return false;
  } catch (e) {
    const msg = `Docker engine not reachable at /var/run/docker.sock: ${(e as Error).message}`;
    if (process.env.CI === 'true') throw new Error(msg);
    console.log(`# skipping docker tests: ${msg}`);
    return msg;
  }
}

export const basePolicy: NodePolicy = {
  allowNetwork: false,
  allowGpu: false,
  allowedExecutors: ['docker', 'wasm'],
  maxMemoryBytes: 512 * 1024 * 1024,
  maxCpus: 2,
  maxPids: 64,
  scratchBytes: 16 * 1024 * 1024,
};

let seq = 0;
export function dockerSpec(extra: Partial<TaskSpec> = {}): TaskSpec {
  seq++;
  return {
    taskId: `test-${process.pid}-${seq}`,
    jobId: 'job-test',
    attempt: 0,
    executor: 'docker',
    image: TEST_IMAGE,
    resources: { cpus: 0.5, memoryBytes: 64 * 1024 * 1024 },
    timeoutMs: 10_000,
    ...extra,
  };
}

/** Collects events; `text(stream)` joins a stream's output. */
export function recorder() {
  const events: TaskEvent[] = [];
  return {
    events,
    onEvent: (e: TaskEvent) => {
      events.push(e);
    },
    text(stream: 'stdout' | 'stderr'): string {
      return events
        .filter(
          (e): e is Extract<TaskEvent, { type: 'output' }> => e.type === 'output' && e.stream === stream,
        )
        .map((e) => Buffer.from(e.data).toString('utf8'))
        .join('');
    },
  };
}

/** Compiles a committed .wat file with wabt's wat2wasm into a temp dir and returns the bytes. */
export function buildWat(name: string): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), 'meshrun-wat-'));
  try {
    const out = join(dir, `${name}.wasm`);
    execFileSync('wat2wasm', [new URL(`./testdata/${name}.wat`, import.meta.url).pathname, '-o', out]);
    return new Uint8Array(readFileSync(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
