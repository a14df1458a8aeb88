/**
 * A local cluster of real `meshrun daemon` processes on 127.0.0.1: the README's demo, the benchmarks and the
 * loopback integration tests use it. mDNS is always off here (nothing may multicast on the machine's real
 * interfaces); nodes find each other through explicit bootstrap addresses. Each node's output goes to a
 * size-capped log file.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const MESHRUN_CLI = fileURLToPath(new URL('../bin/meshrun.js', import.meta.url));
/** Node 22 runs the daemons: the one running this module (npm scripts put node_modules/.bin first). */
export const NODE_BIN = process.execPath;
/** Per-node log cap; output past it is dropped (the start-up lines the harness parses come first). */
export const NODE_LOG_CAP_BYTES = 4 * 1024 * 1024;
/** A daemon must print its addresses within this time (generous: CI machines can be loaded). */
export const DAEMON_START_TIMEOUT_MS = 60_000;

/** A log file that stops growing at its cap. */
export class CappedLog {
  readonly path: string;
  #fd: number | null;
  #written = 0;
  readonly #cap: number;
  constructor(path: string, cap: number) {
    this.path = path;
    this.#cap = cap;
    this.#fd = openSync(path, 'w');
  }
  write(d: Uint8Array): void {
    if (this.#fd === null || this.#written >= this.#cap) return;
    const chunk = d.subarray(0, this.#cap - this.#written);
    writeSync(this.#fd, chunk);
    this.#written += chunk.byteLength;
  }
  tail(bytes: number): string {
    const text = readFileSync(this.path, 'utf8');
    return text.slice(-bytes);
  }
  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment for child processes, minus node:test's marker (a child would speak its protocol). */
export function childEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...extra }))
    if (v !== undefined && k !== 'NODE_TEST_CONTEXT') env[k] = v;
  return env;
}

/** Runs the meshrun CLI as a separate process (what a user types), bounded in time and output. */
export function runCli(
  args: string[],
  opts: { timeoutMs?: number; env?: Record<string, string | undefined> } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    const env = childEnv(opts.env);
    execFile(
      NODE_BIN,
      [MESHRUN_CLI, ...args],
      { env, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as NodeJS.ErrnoException).code === 'number'
            ? (err as unknown as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

async function waitFor<T>(fn: () => T | null | undefined, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = fn();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

export interface LoopbackNode {
  index: number;
  dataDir: string;
  proc: ChildProcess;
  log: CappedLog;
  peerId: string;
  addr: string;
  apiUrl: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Runs the CLI against this node's local API. */
  cli(args: string[], opts?: { timeoutMs?: number }): Promise<CliResult>;
  kill(signal?: NodeJS.Signals): void;
}

export interface LoopbackCluster {
  dir: string;
  clusterKey: string;
  nodes: LoopbackNode[];
  /** Starts daemon `index` with these extra flags; `env` adds to (or, undefined, removes from) its environment. */
  start(index: number, extraArgs?: string[], env?: Record<string, string | undefined>): Promise<LoopbackNode>;
  destroy(): Promise<void>;
}

const STARTED = /meshrun daemon (\S+)\n\s+listening on (\S+)/;

export async function newLoopbackCluster(opts: { prefix?: string } = {}): Promise<LoopbackCluster> {
  const dir = mkdtempSync(join(tmpdir(), opts.prefix ?? 'meshrun-lo-'));
  const clusterKey = join(dir, 'cluster.key');
  const kg = await runCli(['keygen', clusterKey]);
  if (kg.code !== 0) throw new Error(`keygen failed: ${kg.stderr}`);
  const nodes: LoopbackNode[] = [];
  const cluster: LoopbackCluster = {
    dir,
    clusterKey,
    nodes,
    async start(index, extraArgs = [], env = {}) {
      const dataDir = join(dir, `node${index}`);
      const log = new CappedLog(join(dir, `node${index}.log`), NODE_LOG_CAP_BYTES);
      const bootstrap = nodes
        .filter((n) => n.index !== index && n.proc.exitCode === null && n.proc.signalCode === null)
        .map((n) => n.addr);
      const args = [
        MESHRUN_CLI,
        'daemon',
        '--data-dir',
        dataDir,
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--api',
        '127.0.0.1:0',
        '--cluster-key',
        clusterKey,
        '--no-mdns',
        ...(bootstrap.length > 0 ? ['--bootstrap', ...bootstrap] : []),
        ...extraArgs,
      ];
      const proc = spawn(NODE_BIN, args, {
        env: childEnv(env),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      proc.stdout!.on('data', (d: Buffer) => log.write(d));
      proc.stderr!.on('data', (d: Buffer) => {
        log.write(d);
        if (stderr.length < 10_000) stderr += d.toString();
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        proc.on('exit', (code, signal) => resolve({ code, signal })),
      );
      const m = await waitFor(
        () => {
          if (proc.exitCode !== null)
            throw new Error(`daemon ${index} exited with ${proc.exitCode}: ${log.tail(2000)}`);
          return STARTED.exec(stderr);
        },
        DAEMON_START_TIMEOUT_MS,
        `daemon ${index} to start`,
      );
      const apiUrl = /api (http:\S+)/.exec(stderr)?.[1] ?? '';
      const node: LoopbackNode = {
        index,
        dataDir,
        proc,
        log,
        peerId: m[1]!,
        addr: m[2]!,
        apiUrl,
        exited,
        cli: (cliArgs, o = {}) =>
          runCli(['--data-dir', dataDir, ...cliArgs], { timeoutMs: o.timeoutMs ?? 30_000 }),
        kill: (signal = 'SIGTERM') => {
          proc.kill(signal);
        },
      };
      const existing = nodes.findIndex((n) => n.index === index);
      if (existing >= 0) nodes[existing] = node;
      else nodes.push(node);
      return node;
    },
    async destroy() {
      for (const n of nodes)
        if (n.proc.exitCode === null && n.proc.signalCode === null) n.proc.kill('SIGKILL');
      await Promise.all(nodes.map((n) => Promise.race([n.exited, new Promise((r) => setTimeout(r, 3000))])));
      for (const n of nodes) n.log.close();
      if (!process.env.MESHRUN_KEEP_TEST_DIRS) rmSync(dir, { recursive: true, force: true });
    },
  };
  return cluster;
}
