/**
 * Docker executor: runs a TaskSpec in a sandboxed container on the local engine (dockerode).
 *
 * Sandbox (always): not privileged, all capabilities dropped, no-new-privileges, no host mounts, read-only
 * rootfs, tmpfs /scratch (policy.scratchBytes) and a small tmpfs /tmp, memory = memory+swap, pids limit,
 * lowest CPU shares, NanoCpus from the spec, network 'none' unless both spec and policy allow it (then the
 * default bridge, never host), user 65534:65534 unless the operator lets images keep their own user.
 *
 * Inputs/outputs: the archive API cannot write into a container's own tmpfs, and a tmpfs *volume* loses its
 * contents when nothing mounts it. So for tasks with inputs or outputs, the scratch is a tmpfs volume (labelled
 * ours) kept mounted by a tiny "holder" container (see holder-image.ts): inputs go in through the holder before
 * the task starts, outputs come out through it after the task exits, then all three are removed.
 */
import { constants as osConstants } from 'node:os';
import { Readable, Writable } from 'node:stream';
import Docker from 'dockerode';
import { holderArchSupported, holderRootfsTar } from './holder-image.ts';
import { checkPolicy, safeRelativePath } from './policy.ts';
import { createTar, parseTar } from './tar.ts';
import type {
  Executor,
  ExecutorCaps,
  RunOptions,
  TaskEvent,
  TaskFile,
  TaskResult,
  TaskSpec,
} from './types.ts';

export const LABEL_MANAGED = 'meshrun.managed';
export const LABEL_NODE = 'meshrun.node';
export const LABEL_TASK = 'meshrun.task';
export const LABEL_ROLE = 'meshrun.role';

const NOBODY = '65534:65534';
const SCRATCH = '/scratch';
const HOLDER_IMAGE = 'meshrun-holder:1';
/** /tmp is for small temporaries only; real work goes to /scratch. */
const TMP_BYTES_MAX = 64 * 1024 * 1024;
/** A pull progress line longer than this is not a progress line; refuse rather than buffer forever. */
const PULL_LINE_MAX = 64 * 1024;
/** Stats stream lines are a few KB; anything past this is dropped. */
const STATS_LINE_MAX = 256 * 1024;
/** Per-layer progress events are throttled to one per this many ms (status changes always pass). */
const PULL_PROGRESS_INTERVAL_MS = 100;
/** After the container exits, how long we wait for the attach stream to deliver its last bytes. */
const OUTPUT_DRAIN_MS = 2000;
/** Output chunks held back until 'started' is emitted (start() resolves within milliseconds). */
const EARLY_OUTPUT_MAX_CHUNKS = 1024;
/**
 * How long a task killed by SIGKILL that the engine did not mark OOMKilled waits for a late 'oom' event: the
 * engine's OOM and exit events race (containerd sends them independently), and when the exit wins the
 * container's OOMKilled flag stays false for good.
 */
const LATE_OOM_WAIT_MS = 1000;
/** 'oom' events remembered (container ids), oldest dropped first. */
const OOM_SEEN_MAX = 4096;

export interface DockerExecutorOptions {
  /** Label value identifying this node's containers; cleanupLeftovers only touches these. */
  nodeId: string;
  docker?: Docker;
  /** GPUs the node offers to tasks (from the hardware probe). */
  gpus?: ExecutorCaps['gpus'];
  /** Let the image's own USER stand instead of forcing 65534:65534 (some images need it). */
  useImageUser?: boolean;
  /** Cancel: SIGTERM, then SIGKILL after this grace (rounded up to seconds by the engine). Default 5 s. */
  stopGraceMs?: number;
  /** A pull that takes longer fails as 'pull-failed'. Default 10 min. */
  pullTimeoutMs?: number;
}

type Outcome = TaskResult['outcome'];

function errMessage(e: unknown): string {
  if (e && typeof e === 'object') {
    const o = e as { json?: { message?: string }; message?: string; reason?: string };
    if (o.json?.message) return o.json.message.trim();
    if (o.message) return o.message.trim();
  }
  return String(e);
}

function isNotFound(e: unknown): boolean {
  return !!e && typeof e === 'object' && (e as { statusCode?: number }).statusCode === 404;
}

const SIGNAL_NAMES = new Map<number, string>(
  Object.entries(osConstants.signals).map(([name, n]) => [n, name]),
);

export class DockerExecutor implements Executor {
  readonly kind = 'docker' as const;
  readonly docker: Docker;
  readonly nodeId: string;
  readonly #options: DockerExecutorOptions;
  #info: Promise<{ arch: string; runtimes: string[] }> | null = null;
  #holderReady: Promise<void> | null = null;
  /** Our containers the engine reported an 'oom' event for (see #watchOom). */
  readonly #oomSeen = new Set<string>();
  #oomWatch: Promise<void> | null = null;

  constructor(options: DockerExecutorOptions) {
    this.#options = options;
    this.nodeId = options.nodeId;
    this.docker = options.docker ?? new Docker({ socketPath: '/var/run/docker.sock' });
  }

  async available(): Promise<{ ok: boolean; reason?: string; version?: string }> {
    try {
      const v = await this.docker.version();
      return { ok: true, version: v.Version };
    } catch (e) {
      return { ok: false, reason: `Docker engine unreachable: ${errMessage(e)}` };
    }
  }

  #engineInfo(): Promise<{ arch: string; runtimes: string[] }> {
    if (!this.#info) {
      this.#info = this.docker.info().then(
        (i: { Architecture?: string; Runtimes?: Record<string, unknown> }) => ({
          arch: String(i.Architecture ?? ''),
          runtimes: Object.keys(i.Runtimes ?? {}),
        }),
        (e: unknown) => {
          this.#info = null;
          throw e;
        },
      );
    }
    return this.#info;
  }

  /**
   * Keeps one engine event stream open for 'oom' events of this node's containers, so that an OOM kill whose
   * event arrives after the container's exit is still told from another SIGKILL. Opened before the first
   * task starts; reopened by the next task if it ends. Its socket does not keep the process alive.
   */
  #watchOom(): Promise<void> {
    this.#oomWatch ??= this.docker
      .getEvents({
        filters: { type: ['container'], event: ['oom'], label: [`${LABEL_NODE}=${this.nodeId}`] },
      })
      .then((stream) => {
        const events = stream as NodeJS.ReadableStream & { socket?: { unref?: () => void } };
        events.socket?.unref?.();
        const lines = lineSplitter(STATS_LINE_MAX, (line) => {
          try {
            const e = JSON.parse(line) as { id?: string; Actor?: { ID?: string } };
            const id = e.Actor?.ID ?? e.id;
            if (typeof id === 'string') {
              this.#oomSeen.add(id);
              if (this.#oomSeen.size > OOM_SEEN_MAX)
                this.#oomSeen.delete(this.#oomSeen.values().next().value!);
            }
          } catch {
            // not an event line: skip it
          }
        });
        events.on('data', (chunk: Buffer) => lines.push(chunk));
        const reopenLater = () => {
          this.#oomWatch = null;
        };
        events.on('end', reopenLater);
        events.on('error', reopenLater);
      })
      .catch(() => {
        this.#oomWatch = null; // the next task tries again
      });
    return this.#oomWatch;
  }

  /** Whether the engine reported an OOM for the container, waiting up to `waitMs` for a late event. */
  async #oomReported(containerId: string, waitMs: number): Promise<boolean> {
    const until = Date.now() + waitMs;
    while (!this.#oomSeen.has(containerId)) {
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    this.#oomSeen.delete(containerId);
    return true;
  }

  async caps(): Promise<ExecutorCaps> {
    const info = await this.#engineInfo();
    return {
      executors: ['docker'],
      gpus: this.#options.gpus ?? {},
      nvidiaRuntime: info.runtimes.includes('nvidia'),
    };
  }

  async cleanupLeftovers(): Promise<number> {
    const filters = { label: [`${LABEL_MANAGED}=true`, `${LABEL_NODE}=${this.nodeId}`] };
    let removed = 0;
    const containers = await this.docker.listContainers({ all: true, filters });
    // Tasks first, holders last: a holder keeps a volume busy until it is gone.
    containers.sort(
      (a, b) => Number(a.Labels[LABEL_ROLE] === 'holder') - Number(b.Labels[LABEL_ROLE] === 'holder'),
    );
    for (const c of containers) {
      try {
        await this.docker.getContainer(c.Id).remove({ force: true, v: true });
        removed++;
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
    const { Volumes } = await this.docker.listVolumes({ filters });
    for (const v of Volumes ?? []) {
      try {
        await this.docker.getVolume(v.Name).remove();
        removed++;
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
    return removed;
  }

  async run(spec: TaskSpec, opts: RunOptions): Promise<TaskResult> {
    const { policy, onEvent, signal } = opts;
    const result = (outcome: Outcome, reason: string, extra: Partial<TaskResult> = {}): TaskResult => ({
      outcome,
      exitCode: null,
      reason,
      endedAt: Date.now(),
      usage: { cpuMs: 0, peakMemoryBytes: 0 },
      ...extra,
    });

    // Policy first: a refused task creates nothing, not even an engine round trip when avoidable.
    const needsEngineCaps = (spec?.resources?.gpus?.count ?? 0) > 0;
    let caps: ExecutorCaps = { executors: ['docker'], gpus: this.#options.gpus ?? {}, nvidiaRuntime: false };
    if (needsEngineCaps) {
      try {
        caps = await this.caps();
      } catch (e) {
        return result('error', `Docker engine unreachable: ${errMessage(e)}`);
      }
    }
    const refusal = checkPolicy(spec, policy, caps);
    if (refusal) return result('refused', refusal);
    if (signal?.aborted) return result('cancelled', 'cancelled before start');

    const pulled = await this.#ensureImage(spec.image!, onEvent, signal);
    if (pulled !== null)
      return pulled.cancelled ? result('cancelled', pulled.reason) : result('pull-failed', pulled.reason);
    if (signal?.aborted) return result('cancelled', 'cancelled before start');

    const needsHolder = (spec.inputs?.length ?? 0) > 0 || (spec.outputs?.length ?? 0) > 0;
    const created: { kind: 'container' | 'volume'; id: string }[] = [];
    try {
      return await this.#runCreated(spec, opts, needsHolder, created, result);
    } catch (e) {
      return result('error', `engine error: ${errMessage(e)}`);
    } finally {
      await this.#removeAll(created);
    }
  }

  async #runCreated(
    spec: TaskSpec,
    opts: RunOptions,
    needsHolder: boolean,
    created: { kind: 'container' | 'volume'; id: string }[],
    result: (outcome: Outcome, reason: string, extra?: Partial<TaskResult>) => TaskResult,
  ): Promise<TaskResult> {
    const { policy, onEvent, signal } = opts;
    const useImageUser = this.#options.useImageUser === true;
    const owner = useImageUser ? { uid: 0, gid: 0 } : { uid: 65534, gid: 65534 };
    const scratchMode = useImageUser ? '1777' : '0700';
    const labels = (role: string) => ({
      [LABEL_MANAGED]: 'true',
      [LABEL_NODE]: this.nodeId,
      [LABEL_TASK]: spec.taskId.slice(0, 256),
      [LABEL_ROLE]: role,
    });
    const sandbox = {
      Privileged: false,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      ReadonlyRootfs: true,
      IpcMode: 'private',
      LogConfig: { Type: 'none', Config: {} }, // output is streamed over attach; nothing accumulates on disk
      // Under host memory pressure the kernel kills task processes before the owner's programs.
      OomScoreAdj: 1000,
      // No core dumps: they would fill scratch (or the rootfs of a misconfigured engine) for nobody's benefit.
      Ulimits: [{ Name: 'core', Soft: 0, Hard: 0 }],
    };
    const tmpBytes = Math.min(TMP_BYTES_MAX, policy.scratchBytes);

    let holder: Docker.Container | null = null;
    let volumeName: string | null = null;
    if (needsHolder) {
      const info = await this.#engineInfo();
      if (!holderArchSupported(info.arch))
        return result('refused', `inputs/outputs are not supported on engine architecture ${info.arch}`);
      await this.#ensureHolderImage(info.arch);
      const volume = await this.docker.createVolume({
        Name: `meshrun-scratch-${spec.taskId.replace(/[^a-zA-Z0-9_.-]/g, '_').slice(0, 64)}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`,
        Driver: 'local',
        DriverOpts: {
          type: 'tmpfs',
          device: 'tmpfs',
          o: `size=${policy.scratchBytes},uid=${owner.uid},gid=${owner.gid},mode=${scratchMode},nosuid,nodev`,
        },
        Labels: labels('scratch'),
      });
      volumeName = volume.name;
      created.push({ kind: 'volume', id: volumeName });
      holder = await this.docker.createContainer({
        Image: HOLDER_IMAGE,
        Entrypoint: ['/pause'],
        Cmd: [],
        User: NOBODY,
        Labels: labels('holder'),
        NetworkDisabled: true,
        HostConfig: {
          ...sandbox,
          NetworkMode: 'none',
          Memory: 16 * 1024 * 1024,
          MemorySwap: 16 * 1024 * 1024,
          PidsLimit: 4,
          CpuShares: 2,
          Mounts: [scratchMount(volumeName)],
        },
      });
      created.unshift({ kind: 'container', id: holder.id });
      await holder.start();
      if (spec.inputs?.length) {
        const files = spec.inputs.map((f) => ({ path: safeRelativePath(f.path)!, content: f.content }));
        await holder.putArchive(Buffer.from(createTar(files, owner)), { path: SCRATCH });
      }
    }

    const gpuCount = spec.resources.gpus?.count ?? 0;
    const network = spec.network === true && policy.allowNetwork;
    const pids = Math.min(spec.resources.pids ?? policy.maxPids, policy.maxPids);
    const hostConfig: Record<string, unknown> = {
      ...sandbox,
      NetworkMode: network ? 'bridge' : 'none',
      Memory: spec.resources.memoryBytes,
      MemorySwap: spec.resources.memoryBytes, // equal to Memory: no swap
      PidsLimit: pids,
      CpuShares: policy.cpuShares ?? 2,
      NanoCpus: Math.max(1, Math.round(spec.resources.cpus * 1e9)),
      Tmpfs: {
        // The engine copies the image's /tmp mode over ours, so for the forced user own it instead; with the
        // image's user, the image's own /tmp permissions (normally 1777) apply.
        '/tmp': useImageUser
          ? `rw,exec,nosuid,nodev,size=${tmpBytes},mode=1777`
          : `rw,exec,nosuid,nodev,size=${tmpBytes},uid=65534,gid=65534,mode=0700`,
        ...(volumeName
          ? {}
          : {
              [SCRATCH]: `rw,exec,nosuid,nodev,size=${policy.scratchBytes},uid=${owner.uid},gid=${owner.gid},mode=${scratchMode}`,
            }),
      },
      Mounts: volumeName ? [scratchMount(volumeName)] : [],
    };
    if (gpuCount > 0)
      hostConfig.DeviceRequests = [{ Driver: 'nvidia', Count: gpuCount, Capabilities: [['gpu']] }];
    const container = await this.docker.createContainer({
      Image: spec.image,
      ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}),
      ...(spec.command ? { Cmd: spec.command } : {}),
      Env: Object.entries(spec.env ?? {}).map(([k, v]) => `${k}=${v}`),
      WorkingDir: spec.workdir ?? SCRATCH,
      ...(useImageUser ? {} : { User: NOBODY }),
      Hostname: 'task',
      Labels: labels('task'),
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      OpenStdin: false,
      NetworkDisabled: !network,
      HostConfig: hostConfig,
    });
    created.unshift({ kind: 'container', id: container.id });
    if (signal?.aborted) return result('cancelled', 'cancelled before start');

    // Attach before start so the first bytes are not lost.
    const attached = (await container.attach({
      stream: true,
      stdout: true,
      stderr: true,
    })) as NodeJS.ReadableStream;
    // Output can arrive before start() resolves; hold it so 'started' is always the first event.
    let startedEmitted = false;
    const early: TaskEvent[] = [];
    const sink = (stream: 'stdout' | 'stderr') =>
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          const ev: TaskEvent = { type: 'output', stream, data: new Uint8Array(chunk), at: Date.now() };
          if (startedEmitted || early.length >= EARLY_OUTPUT_MAX_CHUNKS) onEvent(ev);
          else early.push(ev);
          cb();
        },
      });
    this.docker.modem.demuxStream(attached, sink('stdout'), sink('stderr'));
    const attachEnded = new Promise<void>((resolve) => {
      attached.on('end', resolve);
      attached.on('close', resolve);
      attached.on('error', () => resolve());
    });

    let stopping: 'timeout' | 'cancelled' | null = null;
    const grace = Math.max(1, Math.ceil((this.#options.stopGraceMs ?? 5000) / 1000));
    const onAbort = () => {
      if (stopping) return;
      stopping = 'cancelled';
      container.stop({ t: grace }).catch(() => {});
    };
    await this.#watchOom();
    await container.start();
    const startedAt = Date.now();
    onEvent({ type: 'started', at: startedAt });
    startedEmitted = true;
    for (const ev of early.splice(0)) onEvent(ev);
    const timer = setTimeout(() => {
      if (stopping) return;
      stopping = 'timeout';
      container.kill({ signal: 'SIGKILL' }).catch(() => {});
    }, spec.timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    const usage = { cpuMs: 0, peakMemoryBytes: 0 };
    const stopStats = this.#followStats(container, usage);
    let exit: { StatusCode?: number };
    try {
      exit = await container.wait();
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      stopStats();
    }
    await Promise.race([attachEnded, new Promise((r) => setTimeout(r, OUTPUT_DRAIN_MS))]);
    const endedAt = Date.now();
    const state = (await container.inspect()).State;
    const exitCode = typeof state.ExitCode === 'number' ? state.ExitCode : (exit.StatusCode ?? null);

    let outputs: TaskFile[] | undefined;
    let outputError: string | null = null;
    if (holder && spec.outputs?.length) {
      try {
        // A tmpfs volume keeps its files only while something mounts it: with the holder gone, reading through
        // it would find an empty scratch and report the outputs as never written.
        const held = (await holder.inspect()).State;
        if (!held.Running)
          throw new Error(
            `the scratch volume's holder container stopped (exit code ${held.ExitCode}${held.OOMKilled ? ', OOM-killed' : ''}) before the outputs were read`,
          );
        outputs = await this.#collectOutputs(holder, spec.outputs, policy.scratchBytes);
      } catch (e) {
        outputError = errMessage(e);
      }
    }
    const base = { startedAt, endedAt, usage, ...(outputs ? { outputs } : {}) };
    const stoppedBy = stopping as 'timeout' | 'cancelled' | null;
    if (stoppedBy === 'cancelled') return result('cancelled', 'cancelled by request', { ...base, exitCode });
    if (stoppedBy === 'timeout')
      return result('timeout', `exceeded ${spec.timeoutMs} ms`, { ...base, exitCode });
    // The seen event is taken first, so it never stays behind in #oomSeen when the engine's flag says it too.
    const oomKilled =
      this.#oomSeen.delete(container.id) ||
      state.OOMKilled ||
      (exitCode === 137 && (await this.#oomReported(container.id, LATE_OOM_WAIT_MS)));
    if (oomKilled)
      return result('oom', `killed: memory limit of ${spec.resources.memoryBytes} bytes exceeded`, {
        ...base,
        exitCode,
      });
    if (exitCode !== null && exitCode > 128 && SIGNAL_NAMES.has(exitCode - 128)) {
      const sig = SIGNAL_NAMES.get(exitCode - 128)!;
      return result('signaled', `terminated by ${sig}`, { ...base, exitCode, signal: sig });
    }
    if (outputError)
      return result('error', `collecting outputs failed: ${outputError}`, { ...base, exitCode });
    return result('exited', `exited with code ${exitCode}`, { ...base, exitCode });
  }

  async #collectOutputs(holder: Docker.Container, paths: string[], maxBytes: number): Promise<TaskFile[]> {
    const out: TaskFile[] = [];
    let budget = maxBytes;
    for (const raw of paths) {
      const rel = safeRelativePath(raw)!;
      let stream: NodeJS.ReadableStream;
      try {
        stream = await holder.getArchive({ path: `${SCRATCH}/${rel}` });
      } catch (e) {
        if (isNotFound(e)) continue; // the task did not produce it
        throw e;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of stream as AsyncIterable<Buffer>) {
        size += c.length;
        // tar overhead is bounded by a few blocks per file; the scratch size bounds the payload.
        if (size > budget + 1024 * 1024) throw new Error(`outputs exceed ${maxBytes} bytes`);
        chunks.push(c);
      }
      const entries = parseTar(Buffer.concat(chunks), budget);
      const base = rel.split('/').pop()!;
      const prefix = rel.slice(0, rel.length - base.length);
      for (const e of entries) {
        // The archive is rooted at the requested name; re-root it at the scratch-relative path.
        const p = safeRelativePath(`${prefix}${e.path}`);
        if (p === null) continue;
        budget -= e.content.byteLength;
        out.push({ path: p, content: e.content });
      }
    }
    return out;
  }

  /** Streams engine stats while the task runs; keeps the last CPU total and the peak memory. */
  #followStats(container: Docker.Container, usage: { cpuMs: number; peakMemoryBytes: number }): () => void {
    let stream: (NodeJS.ReadableStream & { destroy?: () => void }) | null = null;
    let stopped = false;
    const take = (line: string) => {
      try {
        const s = JSON.parse(line) as {
          cpu_stats?: { cpu_usage?: { total_usage?: number } };
          memory_stats?: { usage?: number; max_usage?: number };
        };
        const cpuNs = s.cpu_stats?.cpu_usage?.total_usage ?? 0;
        if (cpuNs > 0) usage.cpuMs = Math.max(usage.cpuMs, Math.round(cpuNs / 1e6));
        // cgroup v1 reports a true high-water mark (max_usage); v2 only current usage, sampled once a second.
        const mem = Math.max(s.memory_stats?.max_usage ?? 0, s.memory_stats?.usage ?? 0);
        usage.peakMemoryBytes = Math.max(usage.peakMemoryBytes, mem);
      } catch {
        // a partial or odd line: skip it
      }
    };
    const lines = lineSplitter(STATS_LINE_MAX, take);
    container
      .stats({ stream: true })
      .then((s) => {
        stream = s as typeof stream;
        if (stopped) return stream?.destroy?.();
        s.on('data', (chunk: Buffer) => lines.push(chunk));
        s.on('error', () => {});
      })
      .catch(() => {});
    return () => {
      stopped = true;
      const rest = lines.rest();
      if (rest) take(rest);
      stream?.destroy?.();
    };
  }

  async #ensureHolderImage(arch: string): Promise<void> {
    if (!this.#holderReady) {
      this.#holderReady = (async () => {
        try {
          await this.docker.getImage(HOLDER_IMAGE).inspect();
          return;
        } catch (e) {
          if (!isNotFound(e)) throw e;
        }
        const [repo, tag] = HOLDER_IMAGE.split(':');
        const stream = await this.docker.importImage(
          Readable.from([Buffer.from(holderRootfsTar(arch))]) as unknown as string,
          { repo, tag },
        );
        await drain(stream as NodeJS.ReadableStream, PULL_LINE_MAX);
        await this.docker.getImage(HOLDER_IMAGE).inspect();
      })().catch((e) => {
        this.#holderReady = null;
        throw e;
      });
    }
    return this.#holderReady;
  }

  /** Returns null when the image is local (pulled if needed), else why not. */
  async #ensureImage(
    image: string,
    onEvent: (e: TaskEvent) => void,
    signal?: AbortSignal,
  ): Promise<{ reason: string; cancelled?: boolean } | null> {
    try {
      await this.docker.getImage(image).inspect();
      return null;
    } catch (e) {
      if (!isNotFound(e)) return { reason: `image inspect failed: ${errMessage(e)}` };
    }
    const timeoutMs = this.#options.pullTimeoutMs ?? 10 * 60 * 1000;
    onEvent({ type: 'pull', status: `pulling ${image}` });
    if (signal?.aborted) return { reason: `cancelled while pulling ${image}`, cancelled: true };
    let stream: NodeJS.ReadableStream & { destroy?: (e?: Error) => void };
    try {
      stream = (await this.docker.pull(image)) as typeof stream;
    } catch (e) {
      return { reason: `pull of ${image} failed: ${classifyPullError(errMessage(e))}` };
    }
    const lastEmit = new Map<string, { at: number; status: string }>();
    let failure: string | null = null;
    const onLine = (line: string) => {
      let ev: {
        status?: string;
        id?: string;
        error?: string;
        errorDetail?: { message?: string };
        progressDetail?: { current?: number; total?: number };
      };
      try {
        ev = JSON.parse(line);
      } catch {
        return;
      }
      if (ev.error || ev.errorDetail) {
        failure = ev.errorDetail?.message ?? ev.error ?? 'unknown error';
        return;
      }
      const status = String(ev.status ?? '').slice(0, 200);
      const layer = ev.id ? String(ev.id).slice(0, 128) : undefined;
      const key = layer ?? '';
      const prev = lastEmit.get(key);
      const now = Date.now();
      if (prev && prev.status === status && now - prev.at < PULL_PROGRESS_INTERVAL_MS) return;
      if (lastEmit.size < 1024) lastEmit.set(key, { at: now, status });
      const cur = ev.progressDetail?.current;
      const total = ev.progressDetail?.total;
      onEvent({
        type: 'pull',
        status,
        ...(layer ? { layer } : {}),
        ...(typeof cur === 'number' ? { currentBytes: cur } : {}),
        ...(typeof total === 'number' ? { totalBytes: total } : {}),
      });
    };
    const outcome = await new Promise<'done' | 'timeout' | 'cancelled' | string>((resolve) => {
      let finished = false;
      const timer = setTimeout(() => finish('timeout'), timeoutMs);
      const onAbort = () => finish('cancelled');
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) onAbort();
      function finish(v: string) {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (v !== 'done') stream.destroy?.();
        resolve(v);
      }
      const lines = lineSplitter(
        PULL_LINE_MAX,
        (line) => onLine(line.trim()),
        () => finish('progress line too long'),
      );
      stream.on('data', (chunk: Buffer) => lines.push(chunk));
      stream.on('end', () => {
        const rest = lines.rest().trim();
        if (rest) onLine(rest);
        finish('done');
      });
      stream.on('error', (e: Error) => finish(e.message));
    });
    if (outcome === 'cancelled') return { reason: `cancelled while pulling ${image}`, cancelled: true };
    if (outcome === 'timeout') return { reason: `pull of ${image} took longer than ${timeoutMs} ms` };
    if (outcome !== 'done') return { reason: `pull of ${image} failed: ${classifyPullError(outcome)}` };
    if (failure) return { reason: `pull of ${image} failed: ${classifyPullError(failure)}` };
    try {
      await this.docker.getImage(image).inspect();
    } catch (e) {
      return { reason: `pull of ${image} finished but the image is missing: ${errMessage(e)}` };
    }
    onEvent({ type: 'pull', status: `pulled ${image}` });
    return null;
  }

  async #removeAll(created: { kind: 'container' | 'volume'; id: string }[]): Promise<void> {
    // Containers before volumes (created is kept task, holder, ..., volume).
    for (const c of created) {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          if (c.kind === 'container') await this.docker.getContainer(c.id).remove({ force: true, v: true });
          else await this.docker.getVolume(c.id).remove();
          break;
        } catch (e) {
          if (isNotFound(e)) break;
          // "removal already in progress" / volume still busy for a moment: back off and retry, bounded.
          await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
        }
      }
    }
  }
}

/** The scratch volume at /scratch; NoCopy keeps image content at that path out of it. */
function scratchMount(volumeName: string): Docker.MountSettings {
  return {
    Type: 'volume',
    Source: volumeName,
    Target: SCRATCH,
    VolumeOptions: { NoCopy: true } as Docker.MountSettings['VolumeOptions'],
  };
}

/** Prefixes the engine's message with what it means for the operator: no such image, or no registry. */
function classifyPullError(message: string): string {
  if (/not found|manifest unknown|does not exist|pull access denied|name unknown/i.test(message))
    return `image not found: ${message}`;
  if (
    /connection refused|no such host|dial tcp|i\/o timeout|timeout|network is unreachable|TLS|certificate/i.test(
      message,
    )
  )
    return `registry unreachable: ${message}`;
  return message;
}

/**
 * Cuts an engine stream of newline-delimited JSON (pull progress, stats, events) into lines for `onLine`. A
 * partial line longer than `maxLine` is dropped and reported to `onOverflow`: the stream is not what we read.
 */
function lineSplitter(maxLine: number, onLine: (line: string) => void, onOverflow: () => void = () => {}) {
  let buf = '';
  return {
    push(chunk: Buffer): void {
      buf += chunk.toString('utf8');
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
      }
      if (buf.length > maxLine) {
        buf = '';
        onOverflow();
      }
    },
    /** What is left after the last newline (a stream may end without one). */
    rest(): string {
      const r = buf;
      buf = '';
      return r;
    },
  };
}

async function drain(stream: NodeJS.ReadableStream, maxBytes: number): Promise<string> {
  let text = '';
  for await (const c of stream as AsyncIterable<Buffer>) {
    if (text.length < maxBytes) text += c.toString('utf8');
  }
  const err = /"error(?:Detail)?"\s*:\s*(?:\{"message":)?"([^"]*)"/.exec(text);
  if (err) throw new Error(err[1]);
  return text;
}
