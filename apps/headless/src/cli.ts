/**
 * The `meshrun` command line: the daemon, key tools, and every read and write of the cluster. Reads print a
 * table for people and, with `--json`, the documented JSON shape for machines. Errors go to stderr with a
 * non-zero exit code.
 */
import { writeNewSubmitterKey } from '@meshrun/core/cluster/submitter-keys.ts';
import { writeNewClusterKey } from '@meshrun/core/node/cluster-key.ts';
import { RemoteRpcError } from '@meshrun/core/node/control-session.ts';
import type { NodeRow } from '@meshrun/protocol';
import { Command, Option } from 'commander';
import { CliError, connectClient, type NodeClient } from './client.ts';
import { installJobCommands } from './commands/jobs.ts';
import {
  configFromEnv,
  configFromFile,
  type DaemonConfig,
  defaultDataDir,
  parseLabels,
  resolveConfig,
} from './config.ts';
import { DaemonStartError, startDaemon, VERSION } from './daemon.ts';
import { bytes, parseBytes, shortId, table } from './format.ts';
import { assertSupportedNode } from './node-version.ts';

interface GlobalOpts {
  dataDir?: string;
  api?: string;
  token?: string;
  peer?: string;
  clusterKey?: string;
  key?: string;
  json?: boolean;
}

/** Commands register here so later features (jobs, cluster, keys) add theirs without touching main(). */
export type CommandInstaller = (program: Command, helpers: CliHelpers) => void;
export interface CliHelpers {
  withClient<T>(cmd: Command, fn: (client: NodeClient, opts: GlobalOpts) => Promise<T>): Promise<T>;
  print(opts: GlobalOpts, value: unknown, human: () => string): void;
}
const installers: CommandInstaller[] = [installJobCommands];

function globalOpts(cmd: Command): GlobalOpts {
  const o = cmd.optsWithGlobals() as GlobalOpts;
  return {
    ...o,
    dataDir: o.dataDir ?? process.env.MESHRUN_DATA_DIR ?? defaultDataDir(),
    api: o.api ?? process.env.MESHRUN_API_ADDR,
    token: o.token ?? process.env.MESHRUN_API_TOKEN,
    peer: o.peer ?? process.env.MESHRUN_PEER,
    clusterKey: o.clusterKey ?? process.env.MESHRUN_CLUSTER_KEY,
    key: o.key ?? process.env.MESHRUN_KEY,
  };
}

const helpers: CliHelpers = {
  async withClient(cmd, fn) {
    const opts = globalOpts(cmd);
    const client = await connectClient(opts);
    try {
      return await fn(client, opts);
    } finally {
      await client.close();
    }
  },
  print(opts, value, human) {
    if (opts.json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
    else process.stdout.write(`${human()}\n`);
  },
};

function nodesTable(rows: NodeRow[]): string {
  return table(
    [
      'PEER',
      'HOST',
      'VERSION',
      'CPU',
      'CORES',
      'MEMORY',
      'GPUS',
      'DOCKER',
      'OFFERED',
      'MODE',
      'UP',
      'LABELS',
    ],
    rows.map((n) => [
      shortId(n.peerId) + (n.self ? '*' : ''),
      n.hostname,
      // Every node must run the same version (a newer one writes log commands an older one refuses).
      n.version,
      `${n.hardware.cpu.arch}`,
      `${n.hardware.cpu.physicalCores}/${n.hardware.cpu.logicalCores}`,
      bytes(n.hardware.memoryBytes),
      n.hardware.gpus.length === 0
        ? '-'
        : n.hardware.gpus.map((g) => `${g.vendor} ${g.model} ${bytes(g.vramBytes)}`).join(', '),
      n.hardware.docker.available ? (n.hardware.docker.version ?? 'yes') : 'no',
      `${n.offered.cpus} cpu, ${bytes(n.offered.memoryBytes)}, ${n.offered.executors.join('+')}`,
      n.mode,
      n.connected ? 'yes' : 'no',
      Object.entries(n.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(',') || '-',
    ]),
  );
}

export function buildProgram(): Command {
  const program = new Command('meshrun')
    .description('meshrun: a peer-to-peer worker network')
    .option('--data-dir <dir>', 'data dir of the local daemon (env MESHRUN_DATA_DIR)')
    .option('--api <host:port>', 'reach a daemon through its local API (env MESHRUN_API_ADDR)')
    .option('--token <token>', 'API token for --api (env MESHRUN_API_TOKEN)')
    .option('--peer <multiaddr>', 'reach any peer over libp2p (needs --cluster-key; env MESHRUN_PEER)')
    .option('--cluster-key <file>', 'cluster key file (env MESHRUN_CLUSTER_KEY)')
    .option('--key <file>', 'submitter key: sign every request with it (env MESHRUN_KEY)')
    .option('--json', 'machine-readable output')
    .version(VERSION, '-v, --version', 'print the version of this meshrun')
    .showHelpAfterError()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('keygen')
    .description('write a new cluster key file (share it with every node of the cluster)')
    .argument('<file>', 'where to write the key (must not exist)')
    .action(async (file: string) => {
      try {
        await writeNewClusterKey(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST')
          throw new CliError(`${file} already exists; refusing to overwrite a cluster key`);
        throw err;
      }
      process.stdout.write(
        `wrote cluster key to ${file}\nstart nodes with: meshrun daemon --cluster-key ${file}\n`,
      );
    });

  program
    .command('daemon')
    .description('run a meshrun node')
    .option('--config <file>', 'YAML or JSON config file (env MESHRUN_CONFIG)')
    .option('--listen <multiaddr...>', 'libp2p listen addresses (default /ip4/0.0.0.0/tcp/4801)')
    .addOption(
      new Option('--api-listen <host:port>', 'local API address (default 127.0.0.1:4800)').hideHelp(),
    )
    .option('--bootstrap <multiaddr...>', 'peers to dial at start (with or without /p2p/ID)')
    .option('--label <k=v...>', 'owner-set labels advertised with the node')
    .option('--no-mdns', 'disable LAN discovery by mDNS')
    .option('--voters <n>', 'Raft voters the cluster keeps (1, 3 or 5)')
    .option('--max-cpus <n>', 'cap the CPU cores offered')
    .option('--max-memory <bytes>', 'cap the memory offered (bytes, or with K/M/G suffix)')
    .option('--max-concurrent <n>', 'cap concurrently running tasks on this node')
    .option('--allow-submitter <name...>', 'run only jobs of these submitters (key names or IDs)')
    .option('--log-level <level>', 'trace|debug|info|warn|error')
    .action(async (o, cmd: Command) => {
      assertSupportedNode();
      const g = cmd.optsWithGlobals() as GlobalOpts & Record<string, unknown>;
      const fileCfg =
        (o.config ?? process.env.MESHRUN_CONFIG)
          ? configFromFile(o.config ?? process.env.MESHRUN_CONFIG)
          : {};
      const flags: Partial<DaemonConfig> = {
        dataDir: g.dataDir,
        listen: o.listen,
        api: (g.api as string | undefined) ?? o.apiListen,
        bootstrap: o.bootstrap,
        clusterKey: g.clusterKey,
        labels: o.label ? parseLabels(o.label) : undefined,
        mdns: o.mdns === false ? false : undefined,
        voters: o.voters !== undefined ? (Number(o.voters) as DaemonConfig['voters']) : undefined,
        logLevel: o.logLevel,
      };
      const offer: DaemonConfig['offer'] = {};
      if (o.maxCpus !== undefined) offer.cpus = Number(o.maxCpus);
      if (o.maxMemory !== undefined) offer.memoryBytes = parseBytes(o.maxMemory);
      if (o.maxConcurrent !== undefined) offer.maxConcurrent = Number(o.maxConcurrent);
      if (o.allowSubmitter !== undefined) offer.allowedSubmitters = o.allowSubmitter;
      if (Object.keys(offer).length > 0) flags.offer = { ...(fileCfg.offer ?? {}), ...offer };
      let config: DaemonConfig;
      try {
        config = resolveConfig(fileCfg, configFromEnv(process.env), flags);
      } catch (err) {
        throw new CliError((err as Error).message, 2);
      }
      let daemon: Awaited<ReturnType<typeof startDaemon>>;
      try {
        daemon = await startDaemon(config);
      } catch (err) {
        if (err instanceof DaemonStartError) throw new CliError(err.message, 2);
        throw err;
      }
      process.stderr.write(
        `meshrun daemon ${daemon.node.peerId}\n` +
          daemon.node
            .addrs()
            .map((a) => `  listening on ${a}\n`)
            .join('') +
          `  api ${daemon.apiInfo.url}\n  dashboard: ${daemon.apiInfo.url}/?token=${daemon.apiInfo.token}\n`,
      );
      let stopping = false;
      const shutdown = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        daemon.log.info({ signal }, 'shutting down');
        const force = setTimeout(() => process.exit(1), 30_000);
        force.unref();
        try {
          await daemon.stop();
          daemon.log.info('stopped');
          process.exit(0);
        } catch (err) {
          daemon.log.error({ err: (err as Error).message }, 'unclean shutdown');
          process.exit(1);
        }
      };
      process.on('SIGTERM', () => void shutdown('SIGTERM'));
      process.on('SIGINT', () => void shutdown('SIGINT'));
    });

  program
    .command('peers')
    .description('peers this node is connected to')
    .action(async (_o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const peers = (await client.call('peers', {})) as {
          peerId: string;
          addrs: string[];
          node: boolean;
        }[];
        helpers.print(opts, peers, () =>
          peers.length === 0
            ? 'no peers connected'
            : table(
                ['PEER', 'NODE', 'ADDRESS'],
                peers.map((p) => [p.peerId, p.node ? 'yes' : 'no', p.addrs.join(' ')]),
              ),
        );
      });
    });

  program
    .command('nodes')
    .description('every node of the cluster with its hardware and offer')
    .action(async (_o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const rows = (await client.call('nodes', {})) as NodeRow[];
        helpers.print(opts, rows, () => nodesTable(rows));
      });
    });

  const keys = program.command('keys').description('submitter keys: who may run jobs on this cluster');
  keys
    .command('new')
    .description('write a new submitter key pair to FILE and print its public key ID')
    .argument('<file>')
    .action(async (file: string) => {
      try {
        process.stdout.write(`${await writeNewSubmitterKey(file)}\n`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST')
          throw new CliError(`${file} already exists; refusing to overwrite a key`);
        throw err;
      }
    });
  keys
    .command('add')
    .description('trust a public key (admin)')
    .argument('<pubkey>', 'key ID printed by `meshrun keys new`')
    .requiredOption('--role <role>', 'submit | admin')
    .requiredOption('--name <name>', 'who holds it')
    .action(async (pubkey: string, o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const r = await client.call('keys.add', { key: pubkey, role: o.role, name: o.name });
        helpers.print(opts, r, () => `trusted ${pubkey} as ${o.name} (${o.role})`);
      });
    });
  keys
    .command('revoke')
    .description('stop trusting a key (admin)')
    .argument('<pubkey>')
    .action(async (pubkey: string, _o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const r = await client.call('keys.revoke', { key: pubkey });
        helpers.print(opts, r, () => `revoked ${pubkey}`);
      });
    });
  keys
    .command('list')
    .description('trusted and revoked keys')
    .action(async (_o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const rows = (await client.call('keys.list', {})) as {
          key: string;
          name: string;
          role: string;
          revoked: boolean;
        }[];
        helpers.print(opts, rows, () =>
          rows.length === 0
            ? 'no keys: the cluster accepts any holder of the cluster key'
            : table(
                ['KEY', 'NAME', 'ROLE', 'STATE'],
                rows.map((k) => [k.key, k.name, k.role, k.revoked ? 'revoked' : 'trusted']),
              ),
        );
      });
    });

  for (const install of installers) install(program, helpers);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    const e = err as Error & { code?: string; exitCode?: number };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help')
      process.exit(0);
    if (e.code?.startsWith('commander.')) process.exit(e.exitCode ?? 2);
    if (err instanceof CliError) {
      process.stderr.write(`meshrun: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    if (err instanceof RemoteRpcError) {
      process.stderr.write(`meshrun: ${err.message} (${err.code})\n`);
      process.exit(1);
    }
    process.stderr.write(`meshrun: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  }
}
