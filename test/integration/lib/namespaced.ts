// Shared by the namespace tests: a fresh cluster key, real daemons started one per namespace host, and the CLI
// run on a host against its own daemon (through its data dir, inside its namespace).
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { type Cluster, type ClusterHost, type ClusterNode, startCluster } from '../../src/cluster.ts';
import { runCli, waitFor } from '../../src/proc.ts';

// biome-ignore lint/suspicious/noExplicitAny: CLI JSON output is read field by field in assertions.
export type Json = Record<string, any>;

/** A new cluster key file in a temp dir. */
export async function newClusterKey(prefix: string): Promise<string> {
  const file = `${mkdtempSync(`${tmpdir()}/${prefix}`)}/cluster.key`;
  const r = await runCli(['keygen', file]);
  assert.equal(r.code, 0, r.stderr);
  return file;
}

/** One real `meshrun daemon` per host, listening on the host's address, ready once it prints its addresses. */
export function startDaemons(opts: {
  name: string;
  hosts: number;
  keyFile: string;
  args?: (host: ClusterHost) => string[];
  env?: Record<string, string>;
}): Promise<Cluster> {
  return startCluster({
    name: opts.name,
    hosts: opts.hosts,
    daemonArgs: (host) => [
      '--data-dir',
      host.dataDir,
      '--cluster-key',
      opts.keyFile,
      '--listen',
      `/ip4/${host.ip}/tcp/4801`,
      ...(opts.args?.(host) ?? []),
    ],
    env: () => opts.env ?? {},
    readyLog: /listening on/,
  });
}

export function cli(n: ClusterNode, args: string[], timeoutMs = 60_000) {
  return runCli(['--data-dir', n.host.dataDir, ...args], { ns: n.host, timeoutMs });
}

export async function cliJson(n: ClusterNode, args: string[]): Promise<Json> {
  const r = await cli(n, [...args, '--json']);
  if (r.code !== 0) throw new Error(`meshrun ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Waits until the job has ended (up to 60 s) and returns its row of `meshrun jobs` (counts, attemptOutcomes). */
export function jobEnded(n: ClusterNode, jobId: string): Promise<Json> {
  return waitFor(
    async () => {
      const j = ((await cliJson(n, ['jobs', '--limit', '10000'])) as Json[]).find((x) => x.jobId === jobId);
      return j && j.state !== 'queued' && j.state !== 'running' ? j : null;
    },
    { timeoutMs: 60_000, intervalMs: 300, description: 'the job to end' },
  );
}
