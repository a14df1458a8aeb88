/**
 * The README's main job: start a local 3-node cluster on loopback (explicit bootstrap, no mDNS), show the
 * nodes table, run a sample job through `meshrun run` when the job layer is present, and stop the nodes.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import wabtInit from 'wabt';
import { newLoopbackCluster, runCli } from './local-cluster.ts';

const DEMO_IMAGE = 'meshrun-test/busybox:1';

function dockerImageReady(): boolean {
  try {
    execFileSync('docker', ['image', 'inspect', DEMO_IMAGE], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** The WASM sample task, compiled from its WAT source with the `wabt` npm package. */
async function demoWasm(dir: string): Promise<string> {
  const wabt = await wabtInit();
  const src = readFileSync(new URL('../demo/hello.wat', import.meta.url), 'utf8');
  const { buffer } = wabt.parseWat('hello.wat', src).toBinary({});
  const file = join(dir, 'hello.wasm');
  writeFileSync(file, buffer);
  return file;
}

const cluster = await newLoopbackCluster({ prefix: 'meshrun-demo-' });
let failed = false;
try {
  console.log(`cluster key: ${cluster.clusterKey}`);
  for (const i of [0, 1, 2]) {
    const n = await cluster.start(i);
    console.log(`node ${i}: ${n.peerId} at ${n.addr} (api ${n.apiUrl})`);
  }
  const deadline = Date.now() + 20_000;
  let table = '';
  for (;;) {
    const r = await cluster.nodes[0]!.cli(['nodes', '--json']);
    const rows = r.code === 0 ? (JSON.parse(r.stdout) as unknown[]) : [];
    if (rows.length === 3) break;
    if (Date.now() > deadline) throw new Error(`nodes did not all see each other: ${r.stderr || r.stdout}`);
    await new Promise((res) => setTimeout(res, 200));
  }
  table = (await cluster.nodes[0]!.cli(['nodes'])).stdout;
  console.log(`\n$ meshrun nodes\n${table}`);
  // The cluster forms by itself (the three nodes elect a leader); then any node takes jobs.
  for (;;) {
    const r = await cluster.nodes[0]!.cli(['cluster', '--json']);
    const s = r.code === 0 ? (JSON.parse(r.stdout) as { leader: string | null; voters: unknown[] }) : null;
    if (s?.leader && s.voters.length === 3) break;
    if (Date.now() > deadline + 20_000) throw new Error(`no cluster formed: ${r.stderr || r.stdout}`);
    await new Promise((res) => setTimeout(res, 200));
  }
  console.log(`$ meshrun cluster\n${(await cluster.nodes[0]!.cli(['cluster'])).stdout}`);
  const peer = cluster.nodes[2]!;
  const useDocker = dockerImageReady();
  const args = useDocker
    ? [
        'run',
        '--cpus',
        '0.5',
        '--memory',
        '64M',
        DEMO_IMAGE,
        '--',
        'sh',
        '-c',
        'echo "hello from a meshrun container on $(hostname)"; uname -sm',
      ]
    : ['run', '--memory', '16M', '--wasm', await demoWasm(cluster.dir)];
  console.log(`$ meshrun --peer ${peer.addr} --cluster-key … ${args.join(' ')}`);
  const run = await runCli(['--peer', peer.addr, '--cluster-key', cluster.clusterKey, ...args], {
    timeoutMs: 120_000,
  });
  process.stdout.write(run.stdout);
  process.stderr.write(run.stderr);
  console.log(`(exit code ${run.code}; executor: ${useDocker ? 'docker' : 'wasm'})`);
  if (run.code !== 0) throw new Error('the sample job failed');
  console.log(`\n$ meshrun jobs\n${(await cluster.nodes[1]!.cli(['jobs'])).stdout}`);
} catch (err) {
  failed = true;
  console.error(`demo failed: ${(err as Error).message}`);
  for (const n of cluster.nodes) console.error(`--- node ${n.index} log tail ---\n${n.log.tail(3000)}`);
} finally {
  for (const n of cluster.nodes) n.kill('SIGTERM');
  await Promise.all(cluster.nodes.map((n) => n.exited));
  await cluster.destroy();
}
process.exit(failed ? 1 : 0);
