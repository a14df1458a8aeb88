// Multi-host test networks made of Linux network namespaces.
//
// Layout of one network (all names start with RUN_PREFIX, e.g. "mrt-1a2b-3c4d-0-mesh-h0"):
//
//   <prefix>-br   bridge namespace: bridge "br0" with one port "v<i>" per host (plain L2, no IP)
//   <prefix>-h<i> host namespace:   "lo" up, "eth0" (the veth peer of v<i>) with <subnet>.<i+1>,
//                                   route 224.0.0.0/4 dev eth0 (mDNS and other multicast need it)
//
// Every link is created directly inside our own namespaces (`ip -n <ns> link add ... netns <ns>`), so the
// machine's real interfaces, routes and firewall are never touched and no test traffic can leave. Partitions
// are iptables DROP rules inside the host namespaces; a host's "cable" is its bridge-side veth.
//
// Teardown: destroy() stops processes and deletes the namespaces; an 'exit' hook and SIGINT/SIGTERM/SIGHUP
// handlers do the same synchronously if a test forgets or the process is stopped; cleanupStale() removes what
// a SIGKILLed run left behind (its namespace names carry the owner's pid and start time).
import { type ChildProcess, execFileSync, spawn as spawnChild } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { CappedLog, DEFAULT_LOG_CAP_BYTES } from './capped-log.ts';
import {
  childEnv,
  PIPE_DRAIN_MS,
  REPO_ROOT,
  type RunOptions,
  type RunResult,
  runCommand,
  sleep,
} from './proc.ts';

/** Every namespace this harness creates starts with this, so stale cleanup can find them. */
export const GLOBAL_PREFIX = 'mrt-';
/** Most hosts in one network (the subnet also has to fit them). */
export const MAX_HOSTS = 64;
/** Most live processes one network may have spawned at a time. */
export const MAX_PROCESSES_PER_NETWORK = 256;
/** How long stop()/destroy() wait after SIGTERM before SIGKILL. */
export const STOP_GRACE_MS = 3000;
/** How many artifact folders of finished runs cleanupStale() keeps for inspection (newest first). */
export const KEEP_OLD_RUN_ARTIFACTS = 5;
/** Default subnet; every network is isolated, so concurrent networks may all use it. */
export const DEFAULT_SUBNET = '10.213.0.0/24';
/** Interface name of a host's link inside its namespace. */
export const HOST_IFACE = 'eth0';
const BRIDGE = 'br0';
const MULTICAST_ROUTE = '224.0.0.0/4';
/** Limit on one `ip`/`iptables` command; they normally take milliseconds. */
const SETUP_COMMAND_TIMEOUT_MS = 15_000;

// ---------------------------------------------------------------------------------------------------------
// Run identity: "<pid36>-<starttime36>" of the process that owns the namespaces. The start time (clock ticks
// since boot, from /proc/<pid>/stat) makes a reused pid not look like the original owner.

function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) is parenthesised and may contain spaces; fields after it are space-separated.
    const afterComm = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = Number(afterComm[19]); // field 22 overall
    return Number.isFinite(start) ? start : undefined;
  } catch {
    return undefined;
  }
}

export const RUN_ID = `${process.pid.toString(36)}-${(processStartTime(process.pid) ?? 0).toString(36)}`;
export const RUN_PREFIX = `${GLOBAL_PREFIX}${RUN_ID}`;

const OWNER_RE = /^mrt-([0-9a-z]+)-([0-9a-z]+)(?:-|$)/;

/** Owner of a harness name, or undefined for names this harness did not make. */
export function parseOwner(name: string): { pid: number; startTime: number } | undefined {
  const m = OWNER_RE.exec(name);
  if (!m) return undefined;
  const pid = Number.parseInt(m[1]!, 36);
  const startTime = Number.parseInt(m[2]!, 36);
  if (!Number.isSafeInteger(pid) || pid <= 0 || !Number.isSafeInteger(startTime)) return undefined;
  return { pid, startTime };
}

function ownerAlive(owner: { pid: number; startTime: number }): boolean {
  return processStartTime(owner.pid) === owner.startTime;
}

// ---------------------------------------------------------------------------------------------------------
// Public types

export interface Host {
  /** Short name, "h0", "h1", ... */
  name: string;
  index: number;
  /** Network namespace name. */
  ns: string;
  /** IPv4 address on eth0. */
  ip: string;
  /** Interface name inside the namespace (always "eth0"). */
  iface: string;
}

/** A host object, its name ("h1"), its namespace name, or its index. */
export type HostRef = Host | string | number;

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Extra environment merged over the test's environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Where stdout+stderr go; default <artifactsDir>/<host>-<command>-<n>.log. */
  logFile?: string;
  /** Disk bound for this process's log (live file + one rotated file). Default 5 MiB. */
  logCapBytes?: number;
}

export interface ProcHandle {
  readonly pid: number;
  readonly host: Host;
  readonly logFile: string;
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ExitInfo>;
  /** Set once exited has resolved. */
  readonly exitInfo: ExitInfo | undefined;
  /** Sends a signal (default SIGTERM); false if the process is already gone. */
  kill(signal?: NodeJS.Signals): boolean;
  /** SIGTERM, then SIGKILL after graceMs; resolves with the exit. */
  stop(graceMs?: number): Promise<ExitInfo>;
  /** The last `bytes` bytes of the process's combined stdout/stderr log. */
  logTail(bytes?: number): string;
}

export interface NetworkOptions {
  /** Short test name, [a-z0-9-], used in namespace names. */
  name: string;
  /** Number of host namespaces. */
  hosts: number;
  /** IPv4 subnet in CIDR form; hosts get .1, .2, ... Default 10.213.0.0/24. */
  subnet?: string;
  /** Folder for process logs; default <tmp>/meshrun-test/<run id>/<network>. */
  artifactsDir?: string;
}

export interface Network {
  readonly name: string;
  /** Prefix of every namespace in this network. */
  readonly prefix: string;
  readonly subnet: string;
  readonly hosts: readonly Host[];
  readonly bridgeNs: string;
  readonly artifactsDir: string;
  /** Resolves a HostRef; throws for an unknown host. */
  host(ref: HostRef): Host;
  /** Runs a command to completion inside a host's namespace (see runCommand: never rejects). */
  exec(
    host: HostRef,
    cmd: string,
    args?: readonly string[],
    opts?: Omit<RunOptions, 'ns'>,
  ): Promise<RunResult>;
  /** Starts a long-running process inside a host's namespace, output to a size-capped log file. */
  spawn(host: HostRef, cmd: string, args?: readonly string[], opts?: SpawnOptions): ProcHandle;
  /** Drops all traffic between every host in `a` and every host in `b`, both directions. */
  partition(a: readonly HostRef[], b: readonly HostRef[]): Promise<void>;
  /** Drops traffic sent by hosts in `from` to hosts in `to`; the reverse direction still flows. */
  asymmetricPartition(from: readonly HostRef[], to: readonly HostRef[]): Promise<void>;
  /** Removes all partitions, or only those between `a` and `b` (both directions) when given. Loss stays. */
  heal(a?: readonly HostRef[], b?: readonly HostRef[]): Promise<void>;
  /** Currently blocked directions, as "h0->h1" strings, sorted. */
  blocked(): string[];
  /** Unplugs (up=false) or replugs a host's cable: its bridge-side veth goes down/up; host config is kept. */
  setHostLink(host: HostRef, up: boolean): Promise<void>;
  /**
   * Makes a host's cable lossy: each packet crossing it, in either direction, is dropped with probability
   * `fraction` (0 restores it). There is no delay emulation: this kernel has no netem.
   */
  setHostLoss(host: HostRef, fraction: number): Promise<void>;
  /** Log tails of every process spawned in this network, for failure messages. */
  diagnostics(tailBytes?: number): string;
  /** Stops all processes and deletes every namespace of this network. Idempotent. */
  destroy(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers

const NAME_RE = /^[a-z0-9][a-z0-9-]{0,23}$/;

/** Runs a setup command in the root namespace; only `ip netns ...`-level commands go through here. */
async function must(cmd: string, args: readonly string[], input?: string): Promise<string> {
  const r = await runCommand(cmd, args, { input, timeoutMs: SETUP_COMMAND_TIMEOUT_MS });
  if (r.code !== 0) {
    throw new Error(`netns: \`${cmd} ${args.join(' ')}\` failed (code ${r.code}): ${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** Runs an `ip -batch` script inside one of our namespaces (never the root namespace). */
function ipBatch(ns: string, lines: readonly string[]): Promise<string> {
  assertOurs(ns);
  return must('ip', ['-n', ns, '-batch', '-'], `${lines.join('\n')}\n`);
}

function disableIpv6(ns: string, iface: string): Promise<string> {
  assertOurs(ns);
  return must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', `net.ipv6.conf.${iface}.disable_ipv6=1`]);
}

function assertOurs(ns: string): void {
  if (!ns.startsWith(RUN_PREFIX))
    throw new Error(`netns: refusing to act on namespace ${ns} (not this run's)`);
}

function parseSubnet(cidr: string, hosts: number): { base: number; bits: number } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (!m) throw new Error(`netns: subnet must look like 10.213.0.0/24, got ${cidr}`);
  const octets = m.slice(1, 5).map(Number);
  const bits = Number(m[5]);
  if (octets.some((o) => o > 255) || bits < 8 || bits > 29) throw new Error(`netns: bad subnet ${cidr}`);
  const addr = octets.reduce((acc, o) => acc * 256 + o, 0);
  const size = 2 ** (32 - bits);
  const base = addr - (addr % size);
  if (hosts > size - 2) throw new Error(`netns: subnet ${cidr} has room for ${size - 2} hosts, not ${hosts}`);
  return { base, bits };
}

function ipString(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** Namespace names currently present (`ip netns list` prints "name (id: N)" or "name"). */
export function listNamespaces(): string[] {
  let out: string;
  try {
    out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: SETUP_COMMAND_TIMEOUT_MS });
  } catch {
    return [];
  }
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

/** Pids of processes inside a namespace. */
function namespacePids(ns: string): number[] {
  try {
    const out = execFileSync('ip', ['netns', 'pids', ns], {
      encoding: 'utf8',
      timeout: SETUP_COMMAND_TIMEOUT_MS,
    });
    return out
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((p) => Number.isSafeInteger(p) && p > 0);
  } catch {
    return [];
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Kills every process in the given namespaces and deletes them; synchronous (used from 'exit' hooks). */
function deleteNamespacesSync(names: readonly string[]): { killed: number[]; removed: string[] } {
  const killed: number[] = [];
  const removed: string[] = [];
  for (const ns of names) {
    for (const pid of namespacePids(ns)) if (signalPid(pid, 'SIGKILL')) killed.push(pid);
  }
  for (const ns of names) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: SETUP_COMMAND_TIMEOUT_MS });
      removed.push(ns);
    } catch {
      // Already gone, or deleted by a concurrent cleanup.
    }
  }
  return { killed, removed };
}

// ---------------------------------------------------------------------------------------------------------
// Live-network registry and last-resort teardown

const liveNetworks = new Map<string, { namespaces: () => string[]; killProcesses: () => void }>();
let exitHookInstalled = false;
let signalHooksInstalled = false;
const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function destroyAllSync(): void {
  for (const [prefix, net] of liveNetworks) {
    net.killProcesses();
    deleteNamespacesSync(net.namespaces());
    liveNetworks.delete(prefix);
  }
}

function onStopSignal(signal: NodeJS.Signals): void {
  destroyAllSync();
  for (const s of STOP_SIGNALS) process.removeListener(s, onStopSignal);
  signalHooksInstalled = false;
  // Re-raise so the process ends the way it would have without us (exit status 128+n), unless someone else
  // also handles this signal and decides for themselves.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installHooks(): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', destroyAllSync);
  }
  if (!signalHooksInstalled) {
    signalHooksInstalled = true;
    for (const s of STOP_SIGNALS) process.on(s, onStopSignal);
  }
}

// ---------------------------------------------------------------------------------------------------------
// createNetwork

let networkSeq = 0;
/** Whether this process has already removed leftovers of crashed runs (done once, before its first network). */
let staleCleaned = false;

export async function createNetwork(opts: NetworkOptions): Promise<Network> {
  if (!NAME_RE.test(opts.name))
    throw new Error(`netns: network name must match ${NAME_RE}, got ${opts.name}`);
  if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > MAX_HOSTS) {
    throw new Error(`netns: hosts must be an integer in 1..${MAX_HOSTS}, got ${opts.hosts}`);
  }
  const subnet = opts.subnet ?? DEFAULT_SUBNET;
  const { base, bits } = parseSubnet(subnet, opts.hosts);
  if (!staleCleaned) cleanupStale();
  const prefix = `${RUN_PREFIX}-${(networkSeq++).toString(36)}-${opts.name}`;
  const bridgeNs = `${prefix}-br`;
  const hosts: Host[] = Array.from({ length: opts.hosts }, (_, i) => ({
    name: `h${i}`,
    index: i,
    ns: `${prefix}-h${i}`,
    ip: ipString(base + i + 1),
    iface: HOST_IFACE,
  }));
  const artifactsDir =
    opts.artifactsDir ?? join(artifactsRoot(), RUN_ID, `${prefix.slice(RUN_PREFIX.length + 1)}`);
  mkdirSync(artifactsDir, { recursive: true });

  const handles = new Set<InternalHandle>();
  const created: string[] = [];
  const killProcesses = () => {
    for (const h of handles) if (!h.exitInfo) signalPid(h.pid, 'SIGKILL');
  };
  installHooks();
  liveNetworks.set(prefix, { namespaces: () => [...created], killProcesses });

  try {
    // Record names before creating, so a failure half-way still deletes whatever exists.
    const all = [bridgeNs, ...hosts.map((h) => h.ns)];
    created.push(...all);
    await must('ip', ['-batch', '-'], `${all.map((n) => `netns add ${n}`).join('\n')}\n`);
    await ipBatch(bridgeNs, [
      'link set lo up',
      // Snooping off: without an IGMP querier on the segment the bridge must simply flood multicast.
      `link add ${BRIDGE} type bridge stp_state 0 mcast_snooping 0`,
      ...hosts.flatMap((h) => [
        `link add v${h.index} type veth peer name ${HOST_IFACE} netns ${h.ns}`,
        `link set v${h.index} master ${BRIDGE}`,
        `link set v${h.index} up`,
      ]),
      `link set ${BRIDGE} up`,
    ]);
    // IPv6 off on eth0: partitions are IPv4 rules, and link-local IPv6 between hosts would bypass them.
    // (It stays on lo: "localhost" may resolve to ::1 first.)
    await Promise.all(hosts.map((h) => disableIpv6(h.ns, HOST_IFACE)));
    await Promise.all(
      hosts.map((h) =>
        ipBatch(h.ns, [
          'link set lo up',
          `addr add ${h.ip}/${bits} dev ${HOST_IFACE}`,
          `link set ${HOST_IFACE} up`,
          `route add ${MULTICAST_ROUTE} dev ${HOST_IFACE}`,
        ]),
      ),
    );
  } catch (e) {
    killProcesses();
    deleteNamespacesSync(created);
    liveNetworks.delete(prefix);
    throw e;
  }

  const resolve = (ref: HostRef): Host => {
    const h =
      typeof ref === 'number'
        ? hosts[ref]
        : typeof ref === 'string'
          ? hosts.find((x) => x.name === ref || x.ns === ref)
          : hosts.find((x) => x.ns === ref.ns);
    if (!h) throw new Error(`netns: no host ${typeof ref === 'object' ? ref.ns : ref} in network ${prefix}`);
    return h;
  };

  // Partition state: the set of blocked directions "from->to" (host indices). Each host's filter table is
  // rewritten from this set, so rules can't drift from what blocked() reports.
  const blocked = new Set<string>();
  /** Per-host packet loss probability on eth0 (host index -> fraction), see setHostLoss. */
  const loss = new Map<number, number>();
  const pairKey = (from: Host, to: Host) => `${from.index}->${to.index}`;
  // Rule updates run one at a time and each reads the state when it runs, so overlapping partition()/heal()
  // calls can't leave an older rule set installed last.
  let rulesQueue: Promise<void> = Promise.resolve();
  const applyRules = (touched: Iterable<Host>): Promise<void> => {
    const hostsToUpdate = [...new Set(touched)];
    const run = rulesQueue.then(() => writeRules(hostsToUpdate));
    rulesQueue = run.catch(() => {});
    return run;
  };
  const writeRules = async (touched: Host[]) => {
    await Promise.all(
      touched.map(async (h) => {
        const rules: string[] = [];
        const p = loss.get(h.index);
        if (p !== undefined) {
          const random = `-m statistic --mode random --probability ${p.toFixed(6)} -j DROP`;
          rules.push(`-A INPUT -i ${HOST_IFACE} ${random}`, `-A OUTPUT -o ${HOST_IFACE} ${random}`);
        }
        for (const other of hosts) {
          if (other === h) continue;
          if (blocked.has(pairKey(h, other))) rules.push(`-A OUTPUT -d ${other.ip}/32 -j DROP`);
          if (blocked.has(pairKey(other, h))) rules.push(`-A INPUT -s ${other.ip}/32 -j DROP`);
        }
        const table = [
          '*filter',
          ':INPUT ACCEPT [0:0]',
          ':FORWARD ACCEPT [0:0]',
          ':OUTPUT ACCEPT [0:0]',
          ...rules,
        ];
        assertOurs(h.ns);
        await must('ip', ['netns', 'exec', h.ns, 'iptables-restore'], `${table.join('\n')}\nCOMMIT\n`);
      }),
    );
  };
  const block = async (from: readonly HostRef[], to: readonly HostRef[], bothWays: boolean) => {
    const touched: Host[] = [];
    for (const f of from.map(resolve)) {
      for (const t of to.map(resolve)) {
        if (f === t) throw new Error(`netns: host ${f.name} is on both sides of a partition`);
        blocked.add(pairKey(f, t));
        if (bothWays) blocked.add(pairKey(t, f));
        touched.push(f, t);
      }
    }
    await applyRules(touched);
  };

  let destroyed: Promise<void> | undefined;
  let procSeq = 0;

  const network: Network = {
    name: opts.name,
    prefix,
    subnet,
    hosts,
    bridgeNs,
    artifactsDir,
    host: resolve,

    exec(ref, cmd, args = [], execOpts = {}) {
      const h = resolve(ref);
      assertOurs(h.ns);
      return runCommand(cmd, args, { ...execOpts, ns: h.ns });
    },

    spawn(ref, cmd, args = [], spawnOpts = {}) {
      if (destroyed) throw new Error(`netns: network ${prefix} is destroyed`);
      const h = resolve(ref);
      assertOurs(h.ns);
      for (const x of handles) if (x.exitInfo) handles.delete(x);
      if (handles.size >= MAX_PROCESSES_PER_NETWORK) {
        throw new Error(`netns: more than ${MAX_PROCESSES_PER_NETWORK} live processes in network ${prefix}`);
      }
      const logFile =
        spawnOpts.logFile ?? join(artifactsDir, `${h.name}-${basename(cmd)}-${(procSeq++).toString()}.log`);
      const handle = spawnInNamespace(h, cmd, args, { ...spawnOpts, logFile });
      handles.add(handle);
      return handle;
    },

    partition: (a, b) => block(a, b, true),
    asymmetricPartition: (from, to) => block(from, to, false),

    async heal(a, b) {
      if (a === undefined && b === undefined) {
        blocked.clear();
        await applyRules(hosts);
        return;
      }
      const touched: Host[] = [];
      for (const x of (a ?? []).map(resolve)) {
        for (const y of (b ?? []).map(resolve)) {
          blocked.delete(pairKey(x, y));
          blocked.delete(pairKey(y, x));
          touched.push(x, y);
        }
      }
      await applyRules(touched);
    },

    blocked() {
      return [...blocked]
        .map((k) => k.split('->').map((i) => hosts[Number(i)]!.name))
        .map(([f, t]) => `${f}->${t}`)
        .sort();
    },

    async setHostLoss(ref, fraction) {
      if (!(fraction >= 0 && fraction <= 1))
        throw new RangeError(`netns: loss must be in 0..1, got ${fraction}`);
      const h = resolve(ref);
      if (fraction === 0) loss.delete(h.index);
      else loss.set(h.index, fraction);
      await applyRules([h]);
    },

    async setHostLink(ref, up) {
      const h = resolve(ref);
      await ipBatch(bridgeNs, [`link set v${h.index} ${up ? 'up' : 'down'}`]);
    },

    diagnostics(tailBytes = 2000) {
      const lossy = [...loss].map(([i, p]) => `h${i}=${p}`).join(', ') || 'none';
      const parts = [
        `network ${prefix} (${subnet}); blocked: ${network.blocked().join(', ') || 'none'}; loss: ${lossy}`,
      ];
      for (const x of handles) {
        const state = x.exitInfo ? `exited code=${x.exitInfo.code} signal=${x.exitInfo.signal}` : 'running';
        parts.push(`--- ${x.host.name} pid ${x.pid} (${state}) ${x.logFile}\n${x.logTail(tailBytes)}`);
      }
      return parts.join('\n');
    },

    destroy() {
      destroyed ??= (async () => {
        await Promise.all([...handles].map((x) => x.stop(STOP_GRACE_MS)));
        deleteNamespacesSync(created);
        liveNetworks.delete(prefix);
        // Namespace removal is asynchronous in the kernel for the interfaces, but the names are gone now.
        for (const ns of created) {
          if (existsSync(`/run/netns/${ns}`))
            throw new Error(`netns: namespace ${ns} still exists after destroy`);
        }
      })();
      return destroyed;
    },
  };
  return network;
}

// ---------------------------------------------------------------------------------------------------------
// Processes

interface InternalHandle extends ProcHandle {
  exitInfo: ExitInfo | undefined;
}

function spawnInNamespace(
  host: Host,
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions & { logFile: string },
): InternalHandle {
  const log = new CappedLog(opts.logFile, opts.logCapBytes ?? DEFAULT_LOG_CAP_BYTES);
  log.write(
    `[harness ${new Date().toISOString()}] spawn in ${host.ns} (${host.ip}): ${cmd} ${args.join(' ')}\n`,
  );
  // `ip netns exec` execs the command in place (no fork), so child.pid is the command's own pid.
  const child: ChildProcess = spawnChild('ip', ['netns', 'exec', host.ns, cmd, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: childEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (b: Buffer) => log.write(b));
  child.stderr!.on('data', (b: Buffer) => log.write(b));

  let settle!: (info: ExitInfo) => void;
  const exited = new Promise<ExitInfo>((r) => {
    settle = r;
  });
  const handle: InternalHandle = {
    pid: child.pid ?? -1,
    host,
    logFile: opts.logFile,
    exited,
    exitInfo: undefined,
    kill(signal = 'SIGTERM') {
      if (handle.exitInfo || handle.pid <= 0) return false;
      return signalPid(handle.pid, signal);
    },
    async stop(graceMs = STOP_GRACE_MS) {
      if (handle.exitInfo) return handle.exitInfo;
      handle.kill('SIGTERM');
      const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
      if ((await Promise.race([exited, timer])) === 'timeout') handle.kill('SIGKILL');
      return exited;
    },
    logTail: (bytes = 4096) => log.tail(bytes),
  };

  let finished = false;
  const finish = (info: ExitInfo) => {
    if (finished) return;
    finished = true;
    log.write(`[harness ${new Date().toISOString()}] exited code=${info.code} signal=${info.signal}\n`);
    log.close();
    handle.exitInfo = info;
    settle(info);
  };
  child.on('error', (e) => {
    log.write(`[harness] spawn error: ${e.message}\n`);
    finish({ code: 127, signal: null });
  });
  child.on('exit', (code, signal) => {
    // A grandchild may keep the pipes open; don't let that hold up the exit forever.
    setTimeout(() => finish({ code, signal }), PIPE_DRAIN_MS).unref();
  });
  child.on('close', (code, signal) => finish({ code, signal }));
  return handle;
}

// ---------------------------------------------------------------------------------------------------------
// Stale cleanup and environment check

function artifactsRoot(): string {
  return process.env.MESHRUN_TEST_ARTIFACTS ?? join(tmpdir(), 'meshrun-test');
}

export interface CleanupReport {
  /** Namespaces deleted (their owner process is gone). */
  removedNamespaces: string[];
  /** Pids killed inside those namespaces. */
  killedPids: number[];
  /** Artifact folders of old runs deleted (beyond the newest KEEP_OLD_RUN_ARTIFACTS). */
  removedArtifactDirs: string[];
}

/**
 * Removes what crashed runs left behind: every `mrt-` namespace whose owner process no longer exists (and
 * every process still inside it), plus artifact folders of finished runs beyond the newest few. Namespaces of
 * live runs (this one, or a concurrent test file) are left alone.
 */
export function cleanupStale(): CleanupReport {
  staleCleaned = true;
  const stale = listNamespaces().filter((ns) => {
    if (!ns.startsWith(GLOBAL_PREFIX)) return false;
    const owner = parseOwner(ns);
    return owner !== undefined && !ownerAlive(owner);
  });
  const { killed, removed } = deleteNamespacesSync(stale);

  const removedArtifactDirs: string[] = [];
  const root = artifactsRoot();
  if (existsSync(root)) {
    const finished = readdirSync(root)
      .filter((d) => {
        const owner = parseOwner(`${GLOBAL_PREFIX}${d}`);
        return owner !== undefined && !ownerAlive(owner);
      })
      .map((d) => ({ dir: join(root, d), mtime: statSync(join(root, d)).mtimeMs }))
      .sort((x, y) => y.mtime - x.mtime);
    for (const { dir } of finished.slice(KEEP_OLD_RUN_ARTIFACTS)) {
      rmSync(dir, { recursive: true, force: true });
      removedArtifactDirs.push(dir);
    }
  }
  return { removedNamespaces: removed, killedPids: killed, removedArtifactDirs };
}

let netnsCheck: string | null | undefined;

/**
 * Checks that network namespaces can be used here (Linux, root, `ip netns`, iptables inside a namespace).
 * Returns undefined when they can, else a reason to pass to node:test's `skip`. In CI (CI=true) an unusable
 * environment is a failure, never a silent skip, so this throws instead. Also runs cleanupStale() once.
 */
export function requireNetns(): string | undefined {
  if (netnsCheck === undefined) {
    netnsCheck = probeNetns();
    if (netnsCheck === null && !staleCleaned) cleanupStale();
  }
  if (netnsCheck === null) return undefined;
  if (process.env.CI === 'true') throw new Error(`network-namespace tests cannot run in CI: ${netnsCheck}`);
  return netnsCheck;
}

function probeNetns(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (run the tests as root)';
  const probe = `${RUN_PREFIX}-probe`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe', timeout: SETUP_COMMAND_TIMEOUT_MS });
  } catch (e) {
    return `\`ip netns add\` failed: ${(e as Error).message.split('\n')[0]}`;
  }
  try {
    execFileSync('ip', ['netns', 'exec', probe, 'iptables-restore', '--version'], {
      stdio: 'pipe',
      timeout: SETUP_COMMAND_TIMEOUT_MS,
    });
    return null;
  } catch (e) {
    return `iptables-restore is unusable inside a namespace: ${(e as Error).message.split('\n')[0]}`;
  } finally {
    deleteNamespacesSync([probe]);
  }
}

/** Waits until none of `names` is listed by `ip netns list` (bounded). */
export async function waitNamespacesGone(names: readonly string[], timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const present = new Set(listNamespaces());
    if (!names.some((n) => present.has(n))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}
