/**
 * Pure policy check: decides whether this node may run a task, before anything is created.
 * The spec comes from another peer, so everything here assumes it may be hostile.
 */
import type { ExecutorCaps, NodePolicy, TaskSpec } from './types.ts';

/** Fields a TaskSpec may carry; anything else (privileged, binds, networkMode...) is refused, never ignored. */
const KNOWN_SPEC_FIELDS = new Set([
  'taskId',
  'jobId',
  'attempt',
  'executor',
  'image',
  'entrypoint',
  'command',
  'env',
  'workdir',
  'resources',
  'timeoutMs',
  'network',
  'inputs',
  'outputs',
  'wasm',
  'args',
  'stdin',
]);
const KNOWN_RESOURCE_FIELDS = new Set(['cpus', 'memoryBytes', 'pids', 'diskBytes', 'gpus']);

/** Fields that mean "escape the sandbox"; named so the refusal reason says what was asked for. */
const SANDBOX_ESCAPES: Record<string, string> = {
  privileged: 'privileged containers are never allowed',
  binds: 'host mounts are never allowed',
  mounts: 'host mounts are never allowed',
  volumes: 'host mounts are never allowed',
  devices: 'host devices are never allowed',
  capAdd: 'adding capabilities is never allowed',
  networkMode: 'choosing the network mode (e.g. host) is never allowed',
  hostNetwork: 'host network is never allowed',
  pidMode: 'sharing the host PID namespace is never allowed',
  ipcMode: 'sharing the host IPC namespace is never allowed',
  user: 'choosing the user is not allowed',
  hostConfig: 'raw engine host config is never allowed',
  securityOpt: 'security options are never allowed',
};

/** Upper bounds on spec sizes, so a hostile spec cannot exhaust the node before the task even starts. */
export const SPEC_LIMITS = {
  maxArgs: 1024,
  maxArgBytes: 128 * 1024,
  maxEnvVars: 1024,
  maxEnvBytes: 128 * 1024,
  maxInputs: 1024,
  maxOutputs: 256,
  maxPathBytes: 1024,
  /** A day; longer jobs should checkpoint. */
  maxTimeoutMs: 24 * 3600 * 1000,
};

// Docker reference: [registry[:port]/]path[:tag][@sha256:hex]; a registry has a dot or a port, or is localhost.
const IMAGE_REF =
  /^(?:(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?|[a-zA-Z0-9-]+:[0-9]+)\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A path relative to the scratch dir that cannot climb out of it. Returns the normalized path or null. */
export function safeRelativePath(p: unknown): string | null {
  if (typeof p !== 'string' || p.length === 0 || Buffer.byteLength(p) > SPEC_LIMITS.maxPathBytes) return null;
  if (p.startsWith('/') || p.includes('\0') || p.includes('\\')) return null;
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0 || parts.some((s) => s === '..')) return null;
  return parts.join('/');
}

function isStringArray(v: unknown, maxItems: number): v is string[] {
  return (
    Array.isArray(v) && v.length <= maxItems && v.every((s) => typeof s === 'string' && !s.includes('\0'))
  );
}

function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) < 0x20 || s.charCodeAt(i) === 0x7f) return true;
  return false;
}

function positiveFinite(n: unknown): n is number {
  return typeof n === 'number' && Number.isFinite(n) && n > 0;
}

/**
 * Returns the reason the node refuses `spec`, or null when it may run.
 * `caps` is what the node can provide (available executors, GPUs, engine runtimes).
 */
export function checkPolicy(spec: TaskSpec, policy: NodePolicy, caps: ExecutorCaps): string | null {
  if (spec === null || typeof spec !== 'object') return 'spec is not an object';
  for (const key of Object.keys(spec)) {
    if (key in SANDBOX_ESCAPES) return `${key}: ${SANDBOX_ESCAPES[key]}`;
    if (!KNOWN_SPEC_FIELDS.has(key)) return `unsupported spec field '${key}'`;
  }
  for (const id of ['taskId', 'jobId'] as const) {
    const v = spec[id];
    if (typeof v !== 'string' || v.length === 0 || v.length > 256 || hasControlChar(v))
      return `${id} must be a printable string of 1-256 characters`;
  }
  if (!Number.isInteger(spec.attempt) || spec.attempt < 0) return 'attempt must be a non-negative integer';
  if (spec.executor !== 'docker' && spec.executor !== 'wasm')
    return `unknown executor '${String(spec.executor)}'`;
  if (!policy.allowedExecutors.includes(spec.executor))
    return `executor '${spec.executor}' is not allowed on this node`;
  if (!caps.executors.includes(spec.executor))
    return `executor '${spec.executor}' is not available on this node`;

  const r = spec.resources;
  if (r === null || typeof r !== 'object') return 'resources missing';
  for (const key of Object.keys(r))
    if (!KNOWN_RESOURCE_FIELDS.has(key)) return `unsupported resource '${key}'`;
  if (!positiveFinite(r.cpus)) return 'resources.cpus must be a positive number';
  if (r.cpus > policy.maxCpus) return `asks for ${r.cpus} CPUs, node allows ${policy.maxCpus}`;
  if (!positiveFinite(r.memoryBytes) || !Number.isInteger(r.memoryBytes))
    return 'resources.memoryBytes must be a positive integer';
  if (r.memoryBytes > policy.maxMemoryBytes)
    return `asks for ${r.memoryBytes} bytes of memory, node allows ${policy.maxMemoryBytes}`;
  if (r.pids !== undefined) {
    if (!positiveFinite(r.pids) || !Number.isInteger(r.pids))
      return 'resources.pids must be a positive integer';
    if (r.pids > policy.maxPids) return `asks for ${r.pids} processes, node allows ${policy.maxPids}`;
  }
  if (r.diskBytes !== undefined) {
    if (!positiveFinite(r.diskBytes)) return 'resources.diskBytes must be a positive number';
    if (r.diskBytes > policy.scratchBytes)
      return `asks for ${r.diskBytes} bytes of scratch, node allows ${policy.scratchBytes}`;
  }
  if (r.gpus !== undefined && r.gpus !== null) {
    const g = r.gpus;
    if (typeof g.count !== 'number' || !Number.isInteger(g.count) || g.count < 0)
      return 'resources.gpus.count must be a non-negative integer';
    if (g.count > 0) {
      if (!policy.allowGpu) return 'GPUs are not allowed on this node';
      if (spec.executor !== 'docker') return `executor '${spec.executor}' cannot use GPUs`;
      const vendor = g.vendor ?? 'nvidia';
      if (vendor !== 'nvidia')
        return `GPU vendor '${vendor}' is not supported (only nvidia via DeviceRequests)`;
      const have = caps.gpus.nvidia ?? 0;
      if (have === 0) return 'this node has no nvidia GPU';
      if (g.count > have) return `asks for ${g.count} GPUs, node has ${have}`;
      if (!caps.nvidiaRuntime) return 'the Docker engine lacks the nvidia runtime (nvidia-container-toolkit)';
    }
  }

  if (!positiveFinite(spec.timeoutMs)) return 'timeoutMs must be a positive number';
  if (spec.timeoutMs > SPEC_LIMITS.maxTimeoutMs) return `timeoutMs exceeds ${SPEC_LIMITS.maxTimeoutMs}`;
  if (spec.network !== undefined && typeof spec.network !== 'boolean') return 'network must be a boolean';
  if (spec.network === true) {
    if (!policy.allowNetwork) return 'network access is not allowed on this node';
    if (spec.executor === 'wasm') return 'wasm tasks have no network (WASI preview1)';
  }

  for (const name of ['entrypoint', 'command', 'args'] as const) {
    const v = spec[name];
    if (v === undefined) continue;
    if (!isStringArray(v, SPEC_LIMITS.maxArgs)) return `${name} must be an array of strings`;
    if (v.reduce((n, s) => n + Buffer.byteLength(s), 0) > SPEC_LIMITS.maxArgBytes)
      return `${name} is too large`;
  }
  if (spec.env !== undefined) {
    if (spec.env === null || typeof spec.env !== 'object' || Array.isArray(spec.env))
      return 'env must be an object';
    const entries = Object.entries(spec.env);
    if (entries.length > SPEC_LIMITS.maxEnvVars) return 'too many env vars';
    let bytes = 0;
    for (const [k, v] of entries) {
      if (!ENV_NAME.test(k)) return `invalid env var name '${k.slice(0, 64)}'`;
      if (typeof v !== 'string' || v.includes('\0')) return `env var '${k}' must be a string`;
      bytes += Buffer.byteLength(k) + Buffer.byteLength(v);
    }
    if (bytes > SPEC_LIMITS.maxEnvBytes) return 'env is too large';
  }
  if (spec.workdir !== undefined) {
    if (typeof spec.workdir !== 'string' || !spec.workdir.startsWith('/') || spec.workdir.includes('\0'))
      return 'workdir must be an absolute path';
    if (spec.executor === 'wasm') return 'workdir is not supported for wasm tasks';
  }

  let inputBytes = 0;
  if (spec.inputs !== undefined) {
    if (!Array.isArray(spec.inputs) || spec.inputs.length > SPEC_LIMITS.maxInputs)
      return 'inputs must be a bounded array';
    const seen = new Set<string>();
    for (const f of spec.inputs) {
      const p = safeRelativePath(f?.path);
      if (p === null) return `input path '${String(f?.path).slice(0, 64)}' leaves the scratch dir`;
      if (seen.has(p)) return `duplicate input path '${p}'`;
      seen.add(p);
      if (!(f.content instanceof Uint8Array)) return `input '${p}' content must be bytes`;
      inputBytes += f.content.byteLength;
    }
  }
  if (inputBytes > policy.scratchBytes)
    return `inputs (${inputBytes} bytes) do not fit in scratch (${policy.scratchBytes})`;
  if (spec.outputs !== undefined) {
    if (!Array.isArray(spec.outputs) || spec.outputs.length > SPEC_LIMITS.maxOutputs)
      return 'outputs must be a bounded array';
    for (const o of spec.outputs)
      if (safeRelativePath(o) === null)
        return `output path '${String(o).slice(0, 64)}' leaves the scratch dir`;
  }

  if (spec.executor === 'docker') {
    if (typeof spec.image !== 'string' || !IMAGE_REF.test(spec.image) || spec.image.length > 512)
      return 'image must be a valid image reference';
    if (spec.wasm !== undefined) return 'docker tasks take no wasm module';
    if (spec.stdin !== undefined) return 'stdin is only supported for wasm tasks';
  } else {
    if (!(spec.wasm?.module instanceof Uint8Array) || spec.wasm.module.byteLength === 0)
      return 'wasm tasks need a module';
    if (spec.image !== undefined || spec.entrypoint !== undefined)
      return 'wasm tasks take no image or entrypoint';
    if (spec.stdin !== undefined && !(spec.stdin instanceof Uint8Array)) return 'stdin must be bytes';
  }
  return null;
}
