// Real `meshrun daemon` processes on 127.0.0.1 (no namespaces): for tests and benchmarks that need real
// processes but not separate hosts. mDNS is always off here: nothing may multicast on the machine's real
// interfaces; nodes find each other through explicit bootstrap addresses.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CappedLog } from '../../src/capped-log.ts';
import { childEnv, MESHRUN_CLI, NODE_BIN, runCli, waitFor } from '../../src/proc.ts';

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
  cli(args: string[], opts?: { timeoutMs?: number }): ReturnType<typeof runCli>;
  kill(signal?: NodeJS.Signals): void;
}

export interface LoopbackCluster {
  dir: string;
  clusterKey: string;
  nodes: LoopbackNode[];
  start(index: number, extraArgs?: string[]): Promise<LoopbackNode>;
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
    async start(index, extraArgs = []) {
      const dataDir = join(dir, `node${index}`);
      const log = new CappedLog(join(dir, `node${index}.log`), 4 * 1024 * 1024);
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
        env: childEnv({ MESHRUN_LOG_LEVEL: process.env.MESHRUN_LOG_LEVEL ?? 'info' }),
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
        () =>
          STARTED.exec(stderr) ??
          (proc.exitCode !== null ? Promise.reject(new Error(`daemon exited: ${log.tail(2000)}`)) : null),
        {
          timeoutMs: 30_000,
          description: `daemon ${index} to start`,
        },
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
