/**
 * The README's main job: start a local 3-node cluster on loopback (explicit bootstrap, no mDNS), show the
 * nodes table, run a sample job through `meshrun run` when the job layer is present, and stop the nodes.
 */
import { newLoopbackCluster, runCli } from './local-cluster.ts';

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
  const peerCli = await runCli([
    '--peer',
    cluster.nodes[2]!.addr,
    '--cluster-key',
    cluster.clusterKey,
    'peers',
  ]);
  console.log(`$ meshrun --peer ${cluster.nodes[2]!.addr} --cluster-key … peers\n${peerCli.stdout}`);
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
