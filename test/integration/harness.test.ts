// Tests of the test harness itself (test/src): capped logs, process helpers, and the network-namespace
// multi-host network with a stand-in daemon (test/src/fixtures/probe.ts) on every host.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CappedLog } from '../src/capped-log.ts';
import { type Cluster, startCluster } from '../src/cluster.ts';
import {
  cleanupStale,
  createNetwork,
  type HostRef,
  listNamespaces,
  type Network,
  type ProcHandle,
  parseOwner,
  RUN_PREFIX,
  requireNetns,
} from '../src/netns.ts';
import { childEnv, NODE_BIN, runCli, runCommand, StopWaiting, sleep, waitFor } from '../src/proc.ts';

const PROBE = fileURLToPath(new URL('../src/fixtures/probe.ts', import.meta.url));
const OWNER_RUN = fileURLToPath(new URL('../src/fixtures/owner-run.ts', import.meta.url));
/** Probe timeout for a connection that should fail: long enough for a healthy one on a busy 2-core box. */
const BLOCKED_PING_MS = 700;
/** A hung harness call fails its suite instead of hanging the run. */
const SUITE_TIMEOUT_MS = 60_000;

const skip = requireNetns();

describe('CappedLog', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mrt-capped-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps disk use under the cap and the newest output in the tail', () => {
    const log = new CappedLog(join(dir, 'a.log'), 4096);
    for (let i = 0; i < 1000; i++) log.write(`line ${i.toString().padStart(4, '0')}\n`);
    log.close();
    const live = statSync(log.path).size;
    const rotated = statSync(log.rotatedPath).size;
    assert.ok(live + rotated <= 4096, `live ${live} + rotated ${rotated} > cap`);
    assert.equal(log.totalBytes, 10_000);
    const tail = log.tail(3000);
    assert.ok(tail.endsWith('line 0999\n'), tail.slice(-50));
    assert.ok(tail.includes('line 0800\n'), 'tail spans the rotated file');
    assert.ok(!readFileSync(log.path, 'utf8').includes('line 0000'), 'oldest output was dropped');
  });

  it('keeps only the end of a chunk bigger than half the cap', () => {
    const log = new CappedLog(join(dir, 'b.log'), 2048);
    log.write(`${'x'.repeat(5000)}END`);
    log.close();
    assert.ok(statSync(log.path).size <= 1024);
    assert.ok(log.tail(10).endsWith('END'));
  });

  it('rejects a cap too small to be useful', () => {
    assert.throws(() => new CappedLog(join(dir, 'c.log'), 10), RangeError);
  });
});

describe('waitFor', () => {
  it('returns the first truthy value', async () => {
    let n = 0;
    assert.equal(await waitFor(() => (++n >= 3 ? `done at ${n}` : null), { intervalMs: 5 }), 'done at 3');
  });

  it('times out with the description and the last error, after a bounded number of attempts', async () => {
    let attempts = 0;
    await assert.rejects(
      waitFor(
        () => {
          attempts++;
          throw new Error('not up yet');
        },
        { timeoutMs: 200, intervalMs: 20, description: 'the thing' },
      ),
      /timed out after 200 ms waiting for the thing: last error: not up yet/,
    );
    assert.ok(attempts >= 2 && attempts <= 200 / 20 + 1, `attempts ${attempts}`);
  });

  it('stops at once on StopWaiting', async () => {
    const t0 = Date.now();
    await assert.rejects(
      waitFor(
        () => {
          throw new StopWaiting('process died');
        },
        { timeoutMs: 5000 },
      ),
      /process died/,
    );
    assert.ok(Date.now() - t0 < 1000);
  });
});

describe('runCommand / runCli', () => {
  it('reports exit code, output and a missing binary without throwing', async () => {
    const ok = await runCommand(NODE_BIN, [
      '-e',
      'console.log("out"); console.error("err"); process.exit(3)',
    ]);
    assert.deepEqual([ok.code, ok.stdout, ok.stderr, ok.timedOut], [3, 'out\n', 'err\n', false]);
    const missing = await runCommand('/nonexistent/meshrun-no-such-binary', []);
    assert.equal(missing.code, 127);
  });

  it('kills a command that runs past its timeout', async () => {
    const t0 = Date.now();
    const r = await runCommand(NODE_BIN, ['-e', 'setTimeout(() => {}, 60000)'], { timeoutMs: 300 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 'SIGKILL');
    assert.ok(Date.now() - t0 < 5000);
  });

  it('returns when the command exits even if a background grandchild holds its output open', async () => {
    const t0 = Date.now();
    const script = `require("child_process").spawn(process.execPath, ["-e", "setTimeout(() => {}, 3000)"], { stdio: "inherit", detached: true }).unref(); console.log("parent done")`;
    const r = await runCommand(NODE_BIN, ['-e', script], { timeoutMs: 10_000 });
    assert.equal(r.code, 0);
    assert.equal(r.stdout, 'parent done\n');
    assert.ok(Date.now() - t0 < 2500, `took ${Date.now() - t0} ms`);
  });

  it('caps captured output', async () => {
    const r = await runCommand(NODE_BIN, ['-e', 'process.stdout.write("y".repeat(200000))'], {
      maxOutputBytes: 1000,
    });
    assert.equal(r.code, 0);
    assert.equal(r.truncated, true);
    assert.ok(r.stdout.length < 1100);
  });

  it('passes env, and an undefined value removes an inherited variable', async () => {
    process.env.MRT_INHERITED = 'from-test';
    try {
      const r = await runCommand(
        NODE_BIN,
        ['-e', 'console.log(process.env.MRT_SET, process.env.MRT_INHERITED ?? "unset")'],
        {
          env: { MRT_SET: 'yes', MRT_INHERITED: undefined },
        },
      );
      assert.equal(r.stdout, 'yes unset\n');
      assert.equal(childEnv().NODE_TEST_CONTEXT, undefined);
    } finally {
      delete process.env.MRT_INHERITED;
    }
  });

  it('runCli runs an entry script with Node 22', async () => {
    const r = await runCli(['tcp-ping', '127.0.0.1', '1', '300'], { cliPath: PROBE });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /ECONNREFUSED|timeout/);
  });
});

describe('parseOwner', () => {
  it('reads the owner from harness names and ignores others', () => {
    const id = `${(12345).toString(36)}-${(678901).toString(36)}`;
    assert.deepEqual(parseOwner(`mrt-${id}-0-smoke-h0`), { pid: 12345, startTime: 678901 });
    assert.deepEqual(parseOwner(`mrt-${id}`), { pid: 12345, startTime: 678901 });
    assert.equal(parseOwner('docker0'), undefined);
    assert.equal(parseOwner('mrt-'), undefined);
    assert.ok(RUN_PREFIX.startsWith('mrt-'));
    assert.equal(parseOwner(RUN_PREFIX)?.pid, process.pid);
  });
});

describe('requireNetns', () => {
  const REQUIRE_NETNS = fileURLToPath(new URL('../src/fixtures/require-netns.ts', import.meta.url));
  // Without root, namespaces are unusable: run the check as user nobody.
  const asNobody = (ci: string | undefined) =>
    runCommand('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', NODE_BIN, REQUIRE_NETNS], {
      env: { CI: ci },
    });

  it('gives a skip reason outside CI and fails in CI when namespaces are unusable', {
    skip: skip ?? false,
  }, async () => {
    const local = await asNobody(undefined);
    assert.deepEqual(JSON.parse(local.stdout), {
      skip: 'network namespaces need root (run the tests as root)',
    });
    const ci = await asNobody('true');
    assert.match(JSON.parse(ci.stdout).error, /cannot run in CI: network namespaces need root/);
  });

  it('says nothing when namespaces are usable', { skip: skip ?? false }, async () => {
    const r = await runCommand(NODE_BIN, [REQUIRE_NETNS], { env: { CI: 'true' } });
    assert.deepEqual(JSON.parse(r.stdout), { skip: null }, r.stderr);
  });
});

// --- Network namespaces -----------------------------------------------------------------------------------

interface ProbeEvent {
  event: string;
  from?: string;
  msg?: string;
}

function events(proc: ProcHandle): ProbeEvent[] {
  return proc
    .logTail(256 * 1024)
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as ProbeEvent);
}

function received(proc: ProcHandle, kind: 'udp' | 'mcast', msg: string): ProbeEvent | undefined {
  return events(proc).find((e) => e.event === kind && e.msg === msg);
}

async function ping(net: Network, from: HostRef, to: HostRef, timeoutMs = 3000): Promise<boolean> {
  const r = await net.exec(from, NODE_BIN, [PROBE, 'tcp-ping', net.host(to).ip, '7400', String(timeoutMs)]);
  if (r.code === 0) assert.equal(r.stdout, `pong ${net.host(to).name}\n`);
  return r.code === 0;
}

/**
 * Which ordered pairs ("h0->h1") can connect, checked in one parallel round. Pairs in `expected` get a
 * generous timeout (a loaded machine is slow, not partitioned); the others only BLOCKED_PING_MS, which is
 * plenty for a connection that works, so a leak through a partition still shows up.
 */
async function reachable(
  net: Network,
  pairs: [number, number][],
  expected?: readonly string[],
): Promise<string[]> {
  const key = ([a, b]: [number, number]) => `h${a}->h${b}`;
  const ok = await Promise.all(
    pairs.map((p) => ping(net, p[0], p[1], !expected || expected.includes(key(p)) ? 5000 : BLOCKED_PING_MS)),
  );
  return pairs.filter((_, i) => ok[i]).map(key);
}

/** Asserts that exactly the `expected` pairs connect. */
async function assertReachable(net: Network, expected: readonly string[]): Promise<void> {
  assert.deepEqual(await reachable(net, ALL_PAIRS, expected), [...expected].sort());
}

const ALL_PAIRS: [number, number][] = [
  [0, 1],
  [0, 2],
  [1, 0],
  [1, 2],
  [2, 0],
  [2, 1],
];

let uniq = 0;
const tag = (what: string) => `${what}-${process.pid}-${uniq++}`;

/** A pid that no longer runs (missing, or a zombie waiting for a reaper that isn't us). */
function gone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

describe('netns network with a stand-in daemon per host', { skip, timeout: SUITE_TIMEOUT_MS }, () => {
  let cluster: Cluster;
  let net: Network;
  const node = (i: number) => cluster.nodes[i]!.proc;

  before(async () => {
    cluster = await startCluster({
      hosts: 3,
      name: 'harness',
      command: [NODE_BIN, PROBE, 'serve'],
      daemonArgs: (h) => ['--name', h.name, '--data-dir', h.dataDir],
      readyLog: /"event":"ready"/,
      readyTimeoutMs: 15_000,
    });
    net = cluster.network;
  });
  after(async () => {
    await cluster?.destroy();
  });

  it('gives each host its address, lo, the multicast route and nothing of the real machine', async () => {
    assert.deepEqual(
      net.hosts.map((h) => h.ip),
      ['10.213.0.1', '10.213.0.2', '10.213.0.3'],
    );
    for (const h of net.hosts) {
      const addr = await net.exec(h, 'ip', ['-4', '-o', 'addr', 'show']);
      assert.match(addr.stdout, new RegExp(`eth0\\s+inet ${h.ip.replaceAll('.', '\\.')}/24`));
      const links = await net.exec(h, 'ip', ['-o', 'link', 'show']);
      const names = links.stdout
        .trim()
        .split('\n')
        .map((l) => l.split(':')[1]!.trim().split('@')[0]);
      assert.deepEqual(names, ['lo', 'eth0'], 'only our own interfaces in a host namespace');
      assert.match(links.stdout, /lo: <LOOPBACK,UP/);
      const routes = await net.exec(h, 'ip', ['-4', 'route', 'show']);
      assert.match(routes.stdout, /224\.0\.0\.0\/4 dev eth0/);
      assert.doesNotMatch(routes.stdout, /default/, 'no way out of the test network');
      // IPv6 is off on eth0 (link-local IPv6 would bypass the IPv4 partition rules), on for lo's ::1.
      const v6 = await net.exec(h, 'ip', ['-6', '-o', 'addr', 'show']);
      assert.deepEqual(
        v6.stdout
          .trim()
          .split('\n')
          .map((l) => l.split(/\s+/).slice(1, 4).join(' ')),
        ['lo inet6 ::1/128'],
      );
    }
    assert.ok(listNamespaces().includes(net.bridgeNs));
  });

  it('every host reaches every other host over TCP', async () => {
    await assertReachable(net, ['h0->h1', 'h0->h2', 'h1->h0', 'h1->h2', 'h2->h0', 'h2->h1']);
  });

  it('multicast from one host reaches the others across the bridge', async () => {
    const msg = tag('mdns-like');
    const r = await net.exec(1, NODE_BIN, [
      PROBE,
      'mcast-send',
      '224.0.0.251',
      '5353',
      msg,
      net.hosts[1]!.ip,
      '3',
    ]);
    assert.equal(r.code, 0, r.stderr);
    for (const i of [0, 2]) {
      const e = await waitFor(() => received(node(i), 'mcast', msg), {
        timeoutMs: 5000,
        description: `h${i} to receive multicast from h1`,
      });
      assert.equal(e.from, net.hosts[1]!.ip);
    }
  });

  it('partition blocks traffic both ways, and heal restores it', async () => {
    await net.partition([0], [1, 2]);
    assert.deepEqual(net.blocked(), ['h0->h1', 'h0->h2', 'h1->h0', 'h2->h0']);
    await assertReachable(net, ['h1->h2', 'h2->h1']);

    // Multicast obeys the partition too: h0's doesn't reach h1, while h2's (sent at the same time) does.
    const fromH0 = tag('from-h0');
    const fromH2 = tag('from-h2');
    await Promise.all([
      net.exec(0, NODE_BIN, [PROBE, 'mcast-send', '224.0.0.251', '5353', fromH0, '', '3']),
      net.exec(2, NODE_BIN, [PROBE, 'mcast-send', '224.0.0.251', '5353', fromH2, '', '3']),
    ]);
    await waitFor(() => received(node(1), 'mcast', fromH2), {
      timeoutMs: 5000,
      description: 'h1 to hear h2',
    });
    await sleep(200);
    assert.equal(received(node(1), 'mcast', fromH0), undefined, 'h1 heard partitioned h0');
    assert.equal(received(node(0), 'mcast', fromH2), undefined, 'h0 heard partitioned h2');

    await net.heal();
    assert.deepEqual(net.blocked(), []);
    await assertReachable(net, ['h0->h1', 'h0->h2', 'h1->h0', 'h1->h2', 'h2->h0', 'h2->h1']);
  });

  it('heal(a, b) removes only the partition between a and b', async () => {
    await net.partition([0], [1]);
    await net.partition([1], [2]);
    await net.heal([1], [0]);
    assert.deepEqual(net.blocked(), ['h1->h2', 'h2->h1']);
    await assertReachable(net, ['h0->h1', 'h0->h2', 'h1->h0', 'h2->h0']);
    await net.heal();
  });

  it('asymmetric partition blocks one direction only', async () => {
    await net.asymmetricPartition([0], [1]);
    assert.deepEqual(net.blocked(), ['h0->h1']);
    const there = tag('h0-to-h1');
    const back = tag('h1-to-h0');
    const [a, b] = await Promise.all([
      net.exec(0, NODE_BIN, [PROBE, 'udp-send', net.hosts[1]!.ip, '7401', there]),
      net.exec(1, NODE_BIN, [PROBE, 'udp-send', net.hosts[0]!.ip, '7401', back]),
    ]);
    // The blocked sender sees its own OUTPUT rule refuse the datagram; that is still "not delivered".
    assert.equal(b.code, 0, b.stderr);
    const e = await waitFor(() => received(node(0), 'udp', back), {
      timeoutMs: 5000,
      description: 'h0 to get h1',
    });
    assert.equal(e.from, net.hosts[1]!.ip);
    await sleep(200);
    assert.equal(received(node(1), 'udp', there), undefined, `h1 got h0's datagram (send code ${a.code})`);
    // h0 -> h2 is untouched.
    assert.ok(await ping(net, 0, 2));
    await net.heal();
    const again = tag('h0-to-h1-healed');
    await net.exec(0, NODE_BIN, [PROBE, 'udp-send', net.hosts[1]!.ip, '7401', again]);
    await waitFor(() => received(node(1), 'udp', again), {
      timeoutMs: 5000,
      description: 'h1 to get h0 after heal',
    });
  });

  it("setHostLink unplugs and replugs a host's cable", async () => {
    await net.setHostLink(2, false);
    await assertReachable(net, ['h0->h1', 'h1->h0']);
    await net.setHostLink(2, true);
    // The address and multicast route survive the cut (the cable is cut on the bridge side).
    const routes = await net.exec(2, 'ip', ['-4', 'route', 'show']);
    assert.match(routes.stdout, /224\.0\.0\.0\/4 dev eth0/);
    await waitFor(async () => (await reachable(net, ALL_PAIRS, [])).length === 6, {
      timeoutMs: 10_000,
      description: 'all hosts reachable after replug',
    });
  });

  it("setHostLoss drops a fraction of the packets crossing a host's cable", async () => {
    const count = 40;
    const before = tag('lossy');
    const half = tag('half');
    const healed = tag('healed');
    const got = (i: number, msg: string) =>
      events(node(i)).filter((e) => e.event === 'udp' && e.msg?.startsWith(`${msg} `)).length;
    await net.setHostLoss(2, 1);
    await net.exec(0, NODE_BIN, [PROBE, 'udp-send', net.hosts[2]!.ip, '7401', before, String(count)]);
    await net.setHostLoss(2, 0.5);
    await net.exec(0, NODE_BIN, [PROBE, 'udp-send', net.hosts[2]!.ip, '7401', half, String(count)]);
    await net.setHostLoss(2, 0);
    await net.exec(0, NODE_BIN, [PROBE, 'udp-send', net.hosts[2]!.ip, '7401', healed, String(count)]);
    await waitFor(() => got(2, healed) === count, {
      timeoutMs: 5000,
      description: 'all datagrams after loss 0',
    });
    assert.equal(got(2, before), 0, 'loss 1 dropped everything');
    // Binomial(40, 0.5): outside 5..35 has probability ~1e-6.
    const n = got(2, half);
    assert.ok(n >= 5 && n <= 35, `loss 0.5 delivered ${n} of ${count}`);
    assert.match(net.diagnostics(), /loss: none/);
  });

  it('runCli runs inside a host namespace', async () => {
    const r = await runCli(['tcp-ping', net.hosts[2]!.ip, '7400', '3000'], {
      ns: net.hosts[0],
      cliPath: PROBE,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'pong h2\n');
    const outside = await runCli(['tcp-ping', net.hosts[2]!.ip, '7400', String(BLOCKED_PING_MS)], {
      cliPath: PROBE,
    });
    assert.notEqual(outside.code, 0, 'the root namespace must not reach the test network');
  });

  it('a node can be stopped and restarted with the same data folder', async () => {
    const n = cluster.nodes[2]!;
    const first = n.proc;
    const exit = await n.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.match(first.logTail(), /"event":"stopping"/);
    assert.match(first.logTail(), /exited code=0 signal=null/);
    await n.restart();
    assert.notEqual(n.proc.pid, first.pid);
    assert.match(n.proc.logTail(), new RegExp(`--data-dir ${n.host.dataDir}`));
    assert.ok(await ping(net, 0, 2));
  });

  it("caps a chatty process's log file", async () => {
    const p = net.spawn(
      0,
      NODE_BIN,
      ['-e', 'for (let i = 0; i < 20000; i++) console.log("chatty line " + i)'],
      {
        logCapBytes: 16 * 1024,
      },
    );
    const exit = await p.exited;
    assert.equal(exit.code, 0);
    const size = statSync(p.logFile).size + statSync(`${p.logFile}.1`).size;
    assert.ok(size <= 16 * 1024, `log used ${size} bytes`);
    assert.match(p.logTail(200), /chatty line 19999\n\[harness [^\]]+\] exited code=0/);
  });

  it('startCluster fails fast, with the log, when a node exits before it is ready', async () => {
    const t0 = Date.now();
    let prefix = '';
    await assert.rejects(
      startCluster({
        hosts: 1,
        name: 'broken',
        command: [NODE_BIN, PROBE, 'no-such-mode'],
        daemonArgs: () => [],
        ready: (n) => {
          prefix = n.host.ns;
          return false;
        },
      }),
      /exited before it was ready[\s\S]*usage: probe\.ts/,
    );
    assert.ok(Date.now() - t0 < 10_000);
    assert.ok(prefix.length > 0);
    assert.ok(!listNamespaces().includes(prefix), 'failed cluster left its namespace');
  });
});

describe('teardown', { skip, timeout: SUITE_TIMEOUT_MS }, () => {
  it('destroy stops processes and removes every namespace', async () => {
    const net = await createNetwork({ name: 'teardown', hosts: 2 });
    const procs = net.hosts.map((h) => net.spawn(h, NODE_BIN, [PROBE, 'sleep']));
    // Also a process the harness did not start itself: destroy must find it through `ip netns pids`.
    const stray = spawn('ip', ['netns', 'exec', net.hosts[1]!.ns, NODE_BIN, PROBE, 'sleep'], {
      stdio: 'ignore',
    });
    const strayExit = new Promise((r) => stray.on('exit', r));
    await waitFor(
      async () =>
        (await runCommand('ip', ['netns', 'pids', net.hosts[1]!.ns])).stdout.includes(String(stray.pid)),
      {
        timeoutMs: 5000,
        description: 'stray process to enter the namespace',
      },
    );
    const names = [net.bridgeNs, ...net.hosts.map((h) => h.ns)];
    assert.deepEqual(
      listNamespaces()
        .filter((n) => n.startsWith(net.prefix))
        .sort(),
      [...names].sort(),
    );
    await net.destroy();
    await strayExit;
    assert.deepEqual(
      listNamespaces().filter((n) => n.startsWith(net.prefix)),
      [],
    );
    for (const p of procs) assert.ok(p.exitInfo, `pid ${p.pid} still running`);
    assert.ok(gone(stray.pid!));
    assert.throws(() => net.spawn(0, NODE_BIN, [PROBE, 'sleep']), /destroyed/);
    await net.destroy(); // idempotent
  });

  /** Starts fixtures/owner-run.ts: a separate process that owns a network with a sleeper per host. */
  async function startOwner(name: string) {
    const child = spawn(NODE_BIN, [OWNER_RUN, name, '2'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: childEnv(),
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      child.on('exit', (code, signal) => r({ code, signal })),
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      if (out.length < 10_000) out += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 10_000) err += b.toString();
    });
    const line = await waitFor(
      () => {
        if (child.exitCode !== null) throw new StopWaiting(`owner-run exited early: ${err}`);
        return out.split('\n').find((l) => l.startsWith('{'));
      },
      { timeoutMs: 10_000, description: 'owner-run to report its network' },
    );
    const info = JSON.parse(line) as { prefix: string; namespaces: string[]; pids: number[] };
    return { child, exited, info };
  }

  it('a SIGTERMed run tears down its own network', async () => {
    const { child, exited, info } = await startOwner('sigterm');
    assert.ok(info.namespaces.every((n) => listNamespaces().includes(n)));
    child.kill('SIGTERM');
    assert.deepEqual(await exited, { code: null, signal: 'SIGTERM' });
    assert.deepEqual(
      listNamespaces().filter((n) => n.startsWith(info.prefix)),
      [],
    );
    await waitFor(() => info.pids.every(gone), { timeoutMs: 5000, description: 'sleepers to die' });
  });

  it('cleanupStale removes what a SIGKILLed run left, and leaves live runs alone', async () => {
    const live = await createNetwork({ name: 'live', hosts: 1 });
    try {
      const { child, exited, info } = await startOwner('sigkill');
      child.kill('SIGKILL');
      await exited; // reaped, so its pid no longer looks alive
      // SIGKILL gives no chance to clean up: the leftovers are really there.
      assert.ok(info.namespaces.every((n) => listNamespaces().includes(n)));
      assert.ok(
        info.pids.every((p) => !gone(p)),
        'sleepers survive their owner',
      );

      const report = cleanupStale();
      // (It may also remove leftovers of other dead runs; ours must be among them.)
      for (const ns of info.namespaces) assert.ok(report.removedNamespaces.includes(ns), `${ns} not removed`);
      assert.ok(
        !report.removedNamespaces.some((ns) => ns.startsWith(RUN_PREFIX)),
        'removed a live namespace',
      );
      assert.deepEqual(
        listNamespaces().filter((n) => n.startsWith(info.prefix)),
        [],
      );
      await waitFor(() => info.pids.every(gone), {
        timeoutMs: 5000,
        description: 'orphaned sleepers to die',
      });
      // Our own live network is untouched.
      assert.ok(listNamespaces().includes(live.hosts[0]!.ns));
      assert.ok(listNamespaces().includes(live.bridgeNs));
    } finally {
      await live.destroy();
    }
  });
});
