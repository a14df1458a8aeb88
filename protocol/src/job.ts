/**
 * The job model: what a user submits (a `JobSpec`), how it expands into tasks, and the commands that the
 * replicated job state machine (core/src/jobs/state-machine.ts) applies from the Raft log.
 *
 * Everything here validates input that crosses a process or network boundary: a spec from the CLI, a command
 * read back from the log or arriving from a peer. Every limit is a named constant in `JOB_LIMITS` so callers
 * (CLI help, docs, tests) can quote the same numbers the validator enforces.
 */
import { z } from 'zod';
import { ProtocolError, validate } from './codec.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const JOB_LIMITS = {
  /** Longest job name. */
  maxNameLength: 128,
  /** Longest docker image reference (docker's own limit is 255 for the repository part). */
  maxImageLength: 512,
  /** Largest WASM module carried inline in a spec (a message is at most 4 MiB; leave room for the rest). */
  maxWasmModuleBytes: 3 * MiB,
  /** Arguments in `command` / `entrypoint`. */
  maxCommandArgs: 256,
  /** Length of one argument. */
  maxArgLength: 4096,
  /** Environment variables per task (spec env plus sweep params plus meshrun's own). */
  maxEnvVars: 256,
  /** Total UTF-8 bytes of all env names and values of one task. */
  maxEnvBytes: 64 * KiB,
  maxWorkdirLength: 1024,
  maxCpus: 1024,
  /** Largest memory request: 16 TiB, far above any real node, only to keep arithmetic sane. */
  maxMemoryBytes: 16 * 1024 * GiB,
  maxDiskBytes: 1024 * 1024 * GiB,
  maxGpus: 64,
  maxLabels: 64,
  maxLabelKeyLength: 128,
  maxLabelValueLength: 256,
  defaultTimeoutMs: 60 * 60 * 1000,
  maxTimeoutMs: 7 * 24 * 60 * 60 * 1000,
  minTimeoutMs: 1000,
  defaultMaxAttempts: 1,
  maxAttempts: 10,
  defaultBackoffMs: 5000,
  maxBackoffMs: 60 * 60 * 1000,
  minPriority: 0,
  maxPriority: 100,
  defaultPriority: 50,
  /** Sweep parameters per job. */
  maxParams: 16,
  /** Values in one explicit parameter list. */
  maxParamValues: 10_000,
  /** Longest string parameter value. */
  maxParamValueLength: 1024,
  /** Replicas (`count`) per job. */
  maxCount: 10_000,
  /** Tasks per job after expanding `count` × the cartesian product of all params. */
  maxTasksPerJob: 10_000,
  /** `stdoutTail` / `stderrTail` in a taskFinished command, UTF-8 bytes each. */
  maxOutputTailBytes: 64 * KiB,
  /** Free-form `reason` strings in commands. */
  maxReasonLength: 4096,
  maxIdLength: 128,
  maxSubmitterLength: 256,
  /** Tasks one finish report may ask for (`takeNext`): its own successor plus a few held ready. */
  maxTakeNext: 8,
} as const;

/** Env vars meshrun sets in every task; a spec may not set them itself. */
export const TASK_INDEX_ENV = 'MESHRUN_TASK_INDEX';
export const JOB_ID_ENV = 'MESHRUN_JOB_ID';

/** UTF-8 length without allocating (TextEncoder would copy the whole string). */
export function utf8ByteLength(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

function formatBytes(n: number): string {
  if (n >= GiB && n % GiB === 0) return `${n / GiB} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (n >= KiB) return `${(n / KiB).toFixed(1)} KiB`;
  return `${n} bytes`;
}

// ---------------------------------------------------------------------------------------------------------
// Building blocks

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
/** Ids are printable and safe in file names, URLs and log lines. */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;

export const IdSchema = z
  .string()
  .min(1)
  .max(JOB_LIMITS.maxIdLength)
  .regex(ID_PATTERN, 'must be [A-Za-z0-9._:-]');
export const JobIdSchema = IdSchema;
export const NodeIdSchema = IdSchema;
export const TaskIdSchema = z
  .string()
  .min(3)
  .max(JOB_LIMITS.maxIdLength + 8)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*\/[0-9]+$/, 'must be <jobId>/<index>');
export const SubmitterSchema = z.string().min(1).max(JOB_LIMITS.maxSubmitterLength);
/** Leader's wall-clock time in ms since the epoch, carried in each command so applying it is deterministic. */
export const TimestampSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export const AttemptSchema = z.number().int().min(1).max(JOB_LIMITS.maxAttempts);

export function taskIdOf(jobId: string, index: number): string {
  return `${jobId}/${index}`;
}

/** Splits `<jobId>/<index>`; returns null when the id is not of that shape. */
export function parseTaskId(taskId: string): { jobId: string; index: number } | null {
  const slash = taskId.lastIndexOf('/');
  if (slash <= 0) return null;
  const index = Number(taskId.slice(slash + 1));
  if (!Number.isSafeInteger(index) || index < 0) return null;
  return { jobId: taskId.slice(0, slash), index };
}

/**
 * Builds a cluster-unique, time-sortable job id from the submitter's clock and random bytes that the caller
 * draws (kept out of here so this module stays pure): `j<ms in base36, 9 digits>-<hex entropy>`.
 */
export function formatJobId(atMs: number, entropy: Uint8Array): string {
  if (entropy.byteLength < 8) throw new ProtocolError('INVALID', 'job id entropy must be at least 8 bytes');
  const time = Math.max(0, Math.floor(atMs)).toString(36).padStart(9, '0');
  let hex = '';
  for (const b of entropy.subarray(0, 16)) hex += b.toString(16).padStart(2, '0');
  return `j${time}-${hex}`;
}

const ArgSchema = z.string().max(JOB_LIMITS.maxArgLength);
const ArgsSchema = z.array(ArgSchema).max(JOB_LIMITS.maxCommandArgs);

export const GpuRequestSchema = z.strictObject({
  count: z.number().int().min(1).max(JOB_LIMITS.maxGpus),
  /** 'nvidia' | 'amd' | 'intel' | ... — compared case-insensitively with what nodes report. */
  vendor: z.string().min(1).max(64).optional(),
  minVramBytes: z.number().int().positive().max(JOB_LIMITS.maxMemoryBytes).optional(),
});

export const ResourcesSchema = z.strictObject({
  cpus: z.number().positive().max(JOB_LIMITS.maxCpus),
  memoryBytes: z.number().int().positive().max(JOB_LIMITS.maxMemoryBytes),
  diskBytes: z.number().int().nonnegative().max(JOB_LIMITS.maxDiskBytes).optional(),
  gpus: GpuRequestSchema.optional(),
});

const LabelsSchema = z
  .record(z.string().min(1).max(JOB_LIMITS.maxLabelKeyLength), z.string().max(JOB_LIMITS.maxLabelValueLength))
  .refine((labels) => Object.keys(labels).length <= JOB_LIMITS.maxLabels, {
    message: `at most ${JOB_LIMITS.maxLabels} labels`,
  });

export const ConstraintsSchema = z.strictObject({
  /** Node CPU architecture as Node reports it (`process.arch`: 'x64', 'arm64', ...). */
  arch: z.string().min(1).max(32).optional(),
  /** Node OS as Node reports it (`process.platform`: 'linux', 'darwin', 'win32'). */
  os: z.string().min(1).max(32).optional(),
  /** Every label must be present on the node with exactly this value. */
  labels: LabelsSchema.optional(),
  /** true: only nodes with a working Docker engine. */
  docker: z.boolean().optional(),
});

export const WasmModuleSchema = z
  .strictObject({
    bytes: z
      .instanceof(Uint8Array)
      .refine((b) => b.byteLength > 0, 'is empty')
      .refine((b) => b.byteLength <= JOB_LIMITS.maxWasmModuleBytes, {
        message: `is larger than ${formatBytes(JOB_LIMITS.maxWasmModuleBytes)}`,
      })
      .optional(),
    /** sha-256 hex of the module bytes (sent alongside, or already cached on the nodes). */
    sha256: z.string().regex(SHA256_HEX, 'must be 64 lowercase hex digits').optional(),
  })
  .refine((m) => m.bytes !== undefined || m.sha256 !== undefined, {
    message: 'a wasm module needs its bytes or its sha256',
  });

const ParamValueSchema = z.union([
  z.string().max(JOB_LIMITS.maxParamValueLength),
  z.number().refine(Number.isFinite, 'must be finite'),
]);

const ParamRangeSchema = z
  .strictObject({
    from: z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER),
    to: z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER),
    step: z.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .refine((r) => r.to >= r.from, { message: '`to` must be ≥ `from`' });

/** A sweep parameter: an inclusive integer range or an explicit list of values. */
export const ParamSchema = z.union([
  ParamRangeSchema,
  z.array(ParamValueSchema).min(1).max(JOB_LIMITS.maxParamValues),
]);

export type ParamValue = z.infer<typeof ParamValueSchema>;
export type ParamDef = z.infer<typeof ParamSchema>;

/** Number of values a parameter takes (computed, not materialised: a range may be huge). */
export function paramSize(param: ParamDef): number {
  if (Array.isArray(param)) return param.length;
  const step = param.step ?? 1;
  return Math.floor((param.to - param.from) / step) + 1;
}

function paramValueAt(param: ParamDef, i: number): ParamValue {
  if (Array.isArray(param)) return param[i];
  return param.from + i * (param.step ?? 1);
}

/** `count` × product of param sizes, saturating at Infinity instead of losing precision. */
export function taskCountOf(spec: { count: number; params: Record<string, ParamDef> }): number {
  let n = spec.count;
  for (const p of Object.values(spec.params)) {
    n *= paramSize(p);
    if (!Number.isFinite(n) || n > Number.MAX_SAFE_INTEGER) return Number.POSITIVE_INFINITY;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------------
// The job spec

const JobSpecObject = z.strictObject({
  name: z.string().min(1).max(JOB_LIMITS.maxNameLength),
  executor: z.enum(['docker', 'wasm'], { message: "executor must be 'docker' or 'wasm'" }),
  /** Docker image reference; required when executor is 'docker'. */
  image: z.string().min(1).max(JOB_LIMITS.maxImageLength).optional(),
  /** WASM module; required when executor is 'wasm'. */
  wasm: WasmModuleSchema.optional(),
  command: ArgsSchema.default([]),
  entrypoint: ArgsSchema.optional(),
  env: z.record(z.string(), z.string()).default({}),
  workdir: z
    .string()
    .min(1)
    .max(JOB_LIMITS.maxWorkdirLength)
    .startsWith('/', 'workdir must be absolute')
    .optional(),
  resources: ResourcesSchema,
  constraints: ConstraintsSchema.default({}),
  timeoutMs: z
    .number()
    .int()
    .min(JOB_LIMITS.minTimeoutMs)
    .max(JOB_LIMITS.maxTimeoutMs, { message: `timeoutMs must be ≤ ${JOB_LIMITS.maxTimeoutMs} (7 days)` })
    .default(JOB_LIMITS.defaultTimeoutMs),
  retry: z
    .strictObject({
      maxAttempts: z.number().int().min(1).max(JOB_LIMITS.maxAttempts).default(JOB_LIMITS.defaultMaxAttempts),
      backoffMs: z
        .number()
        .int()
        .nonnegative()
        .max(JOB_LIMITS.maxBackoffMs)
        .default(JOB_LIMITS.defaultBackoffMs),
    })
    .prefault({}),
  priority: z
    .number()
    .int()
    .min(JOB_LIMITS.minPriority)
    .max(JOB_LIMITS.maxPriority)
    .default(JOB_LIMITS.defaultPriority),
  /** Whether the task may use the network (off by default: tasks are sandboxed). */
  network: z.boolean().default(false),
  /** Replicas of every parameter combination. */
  count: z.number().int().min(1).max(JOB_LIMITS.maxCount).default(1),
  /** Sweep: each task gets one combination (cartesian product) of these values in its env. */
  params: z.record(z.string(), ParamSchema).default({}),
});

export const JobSpecSchema = JobSpecObject.superRefine((spec, ctx) => {
  if (spec.executor === 'docker') {
    if (spec.image === undefined)
      ctx.addIssue({ code: 'custom', path: ['image'], message: 'docker jobs need an image' });
    if (spec.wasm !== undefined)
      ctx.addIssue({ code: 'custom', path: ['wasm'], message: 'docker jobs take no wasm module' });
  } else {
    if (spec.wasm === undefined)
      ctx.addIssue({ code: 'custom', path: ['wasm'], message: 'wasm jobs need a wasm module' });
    if (spec.image !== undefined)
      ctx.addIssue({ code: 'custom', path: ['image'], message: 'wasm jobs take no image' });
    if (spec.resources.gpus !== undefined)
      ctx.addIssue({ code: 'custom', path: ['resources', 'gpus'], message: 'wasm jobs cannot use GPUs' });
  }
  // Names are checked here rather than in the record's key schema so the message says what is wrong.
  for (const [field, names] of [
    ['env', Object.keys(spec.env)],
    ['params', Object.keys(spec.params)],
  ] as const) {
    for (const name of names) {
      if (!ENV_NAME.test(name))
        ctx.addIssue({
          code: 'custom',
          path: [field, name],
          message: `${JSON.stringify(name.slice(0, 64))} is not a valid env name ([A-Za-z_][A-Za-z0-9_]*)`,
        });
    }
  }
  const paramNames = Object.keys(spec.params);
  if (paramNames.length > JOB_LIMITS.maxParams) {
    ctx.addIssue({
      code: 'custom',
      path: ['params'],
      message: `at most ${JOB_LIMITS.maxParams} sweep params`,
    });
    return;
  }
  const tasks = taskCountOf(spec);
  if (tasks > JOB_LIMITS.maxTasksPerJob) {
    const shown = Number.isFinite(tasks) ? tasks.toLocaleString('en-US') : 'too many';
    ctx.addIssue({
      code: 'custom',
      path: ['params'],
      message: `job expands to ${shown} tasks; the limit is ${JOB_LIMITS.maxTasksPerJob.toLocaleString('en-US')} tasks per job (split the sweep into several jobs)`,
    });
  }
  for (const reserved of [TASK_INDEX_ENV, JOB_ID_ENV]) {
    if (reserved in spec.env || reserved in spec.params)
      ctx.addIssue({ code: 'custom', path: ['env', reserved], message: `${reserved} is set by meshrun` });
  }
  for (const name of paramNames) {
    if (name in spec.env)
      ctx.addIssue({ code: 'custom', path: ['params', name], message: `param ${name} also set in env` });
  }
  // Env bound: the spec's own env plus the worst case the sweep and meshrun add to each task.
  const envCount = Object.keys(spec.env).length + paramNames.length + 2;
  if (envCount > JOB_LIMITS.maxEnvVars) {
    ctx.addIssue({
      code: 'custom',
      path: ['env'],
      message: `${envCount} env vars (with params and meshrun's own); the limit is ${JOB_LIMITS.maxEnvVars}`,
    });
  }
  let envBytes = 0;
  for (const [k, v] of Object.entries(spec.env)) envBytes += utf8ByteLength(k) + utf8ByteLength(v) + 2;
  for (const [k, p] of Object.entries(spec.params)) envBytes += utf8ByteLength(k) + 2 + maxParamValueBytes(p);
  envBytes += TASK_INDEX_ENV.length + JOB_ID_ENV.length + 4 + 8 + JOB_LIMITS.maxIdLength;
  if (envBytes > JOB_LIMITS.maxEnvBytes) {
    ctx.addIssue({
      code: 'custom',
      path: ['env'],
      message: `env is ${formatBytes(envBytes)}; the limit is ${formatBytes(JOB_LIMITS.maxEnvBytes)} per task`,
    });
  }
});

function maxParamValueBytes(p: ParamDef): number {
  if (!Array.isArray(p)) return 21; // a safe integer with sign
  let most = 0;
  for (const v of p) most = Math.max(most, typeof v === 'string' ? utf8ByteLength(v) : String(v).length);
  return most;
}

/** A validated job spec with every default filled in. */
export type JobSpec = z.output<typeof JobSpecSchema>;
/** What a user may write: defaults optional. */
export type JobSpecInput = z.input<typeof JobSpecSchema>;
export type Resources = z.output<typeof ResourcesSchema>;
export type GpuRequest = z.output<typeof GpuRequestSchema>;
export type Constraints = z.output<typeof ConstraintsSchema>;
export type Executor = JobSpec['executor'];

/** Validate a spec from an untrusted source. Throws `ProtocolError` ('INVALID') with a message naming the field. */
export function validateJobSpec(raw: unknown): JobSpec {
  return validate(JobSpecSchema, raw);
}

export interface TaskTemplate {
  /** 0-based position in the expansion; the task id is `<jobId>/<index>`. */
  index: number;
  /** This task's sweep values (empty when the job has no params). */
  params: Record<string, ParamValue>;
  /** The spec's env plus this task's param values (as strings) plus MESHRUN_TASK_INDEX. */
  env: Record<string, string>;
}

/** The param values of task `index` (mixed-radix decode; the last param varies fastest, replicas slowest). */
export function paramsForIndex(spec: Pick<JobSpec, 'params'>, index: number): Record<string, ParamValue> {
  const names = Object.keys(spec.params);
  const out: Record<string, ParamValue> = {};
  let rest = index;
  for (let i = names.length - 1; i >= 0; i--) {
    const p = spec.params[names[i]];
    const size = paramSize(p);
    out[names[i]] = paramValueAt(p, rest % size);
    rest = Math.floor(rest / size);
  }
  // Keep the spec's param order in the object (the loop above filled it backwards).
  const ordered: Record<string, ParamValue> = {};
  for (const name of names) ordered[name] = out[name];
  return ordered;
}

/** The env one task runs with; `jobId` is added when known (the state machine knows it, a dry run may not). */
export function taskEnv(
  spec: Pick<JobSpec, 'env' | 'params'>,
  index: number,
  jobId?: string,
): Record<string, string> {
  const env: Record<string, string> = { ...spec.env };
  for (const [k, v] of Object.entries(paramsForIndex(spec, index))) env[k] = String(v);
  env[TASK_INDEX_ENV] = String(index);
  if (jobId !== undefined) env[JOB_ID_ENV] = jobId;
  return env;
}

/**
 * Expand a validated spec into its tasks: `count` replicas of every combination of param values.
 * Throws `ProtocolError` when the spec exceeds `JOB_LIMITS.maxTasksPerJob` (the schema refuses that already;
 * this guards callers that build specs by hand).
 */
export function expandTasks(spec: JobSpec): TaskTemplate[] {
  const total = taskCountOf(spec);
  if (total > JOB_LIMITS.maxTasksPerJob) {
    throw new ProtocolError(
      'INVALID',
      `job expands to ${Number.isFinite(total) ? total : 'too many'} tasks; the limit is ${JOB_LIMITS.maxTasksPerJob}`,
    );
  }
  const tasks: TaskTemplate[] = [];
  for (let index = 0; index < total; index++) {
    tasks.push({ index, params: paramsForIndex(spec, index), env: taskEnv(spec, index) });
  }
  return tasks;
}

// ---------------------------------------------------------------------------------------------------------
// Commands applied by the job state machine (each is one Raft log entry)

const ReasonSchema = z.string().max(JOB_LIMITS.maxReasonLength);
const TailSchema = z
  .string()
  .refine(
    (s) => s.length <= JOB_LIMITS.maxOutputTailBytes && utf8ByteLength(s) <= JOB_LIMITS.maxOutputTailBytes,
    {
      message: `output tail is larger than ${formatBytes(JOB_LIMITS.maxOutputTailBytes)}`,
    },
  );

export const NODE_MODES = ['active', 'paused', 'draining'] as const;
export const NodeModeSchema = z.enum(NODE_MODES);
export type NodeMode = z.infer<typeof NodeModeSchema>;

/** How an attempt ended as the node saw it. 'lost' and 'cancelled' are recorded by the state machine itself. */
export const TaskOutcomeSchema = z.enum(['succeeded', 'failed', 'timedOut', 'error']);
export type TaskOutcome = z.infer<typeof TaskOutcomeSchema>;

export const TaskUsageSchema = z.strictObject({
  wallMs: z.number().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  cpuMs: z.number().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  maxMemoryBytes: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
});
export type TaskUsage = z.infer<typeof TaskUsageSchema>;

export const SubmitJobCommandSchema = z.strictObject({
  type: z.literal('submitJob'),
  jobId: JobIdSchema,
  spec: JobSpecSchema,
  submitter: SubmitterSchema,
  at: TimestampSchema,
});

export const AssignCommandSchema = z.strictObject({
  type: z.literal('assign'),
  taskId: TaskIdSchema,
  nodeId: NodeIdSchema,
  /** Previous attempt + 1: the fencing token every later report about this run must carry. */
  attempt: AttemptSchema,
  /** Indices into the node's GPU list reserved for this attempt (omitted for CPU-only tasks). */
  gpus: z.array(z.number().int().nonnegative().max(1023)).max(JOB_LIMITS.maxGpus).optional(),
  at: TimestampSchema,
});

export const TaskStartedCommandSchema = z.strictObject({
  type: z.literal('taskStarted'),
  taskId: TaskIdSchema,
  attempt: AttemptSchema,
  at: TimestampSchema,
});

export const TaskFinishedCommandSchema = z.strictObject({
  type: z.literal('taskFinished'),
  taskId: TaskIdSchema,
  attempt: AttemptSchema,
  outcome: TaskOutcomeSchema,
  exitCode: z
    .number()
    .int()
    .min(-(2 ** 31))
    .max(2 ** 32)
    .nullable(),
  reason: ReasonSchema.nullable().default(null),
  stdoutTail: TailSchema.default(''),
  stderrTail: TailSchema.default(''),
  usage: TaskUsageSchema.default({}),
  /** When the run started, if its taskStarted report was folded into this one (a task that ended at once). */
  startedAt: TimestampSchema.optional(),
  /**
   * The node has room for more tasks of this job: `true` (or 1) for the slot this one frees, a larger count
   * when it also asks to hold a few assigned tasks ready to start (prefetch). If the run succeeded, applying
   * this report assigns up to that many of the job's next tasks to the same node, each only while the
   * scheduler would serve this job's submitter next anyway (see JobStateMachine.takeNext). Saves the
   * leader's assign commands and the Raft round a freed slot would otherwise wait for.
   */
  takeNext: z.union([z.boolean(), z.number().int().min(1).max(JOB_LIMITS.maxTakeNext)]).optional(),
  at: TimestampSchema,
});

export const RequeueCommandSchema = z.strictObject({
  type: z.literal('requeue'),
  taskId: TaskIdSchema,
  attempt: AttemptSchema,
  reason: ReasonSchema,
  /**
   * Sent only by the node holding the attempt, for a run it never started and never will (a task held ready
   * for a slot, handed back when the node was paused, drained or stopped): if the log agrees that the attempt
   * never started, it is undone instead of ending as lost: no attempt record, and its number is used again
   * (a lost one uses up none of the job's attempts either, but counts towards JOB_LIMITS.maxAttempts).
   */
  neverStarted: z.boolean().optional(),
  at: TimestampSchema,
});

export const CancelJobCommandSchema = z.strictObject({
  type: z.literal('cancelJob'),
  jobId: JobIdSchema,
  by: SubmitterSchema,
  at: TimestampSchema,
});

export const SetNodeModeCommandSchema = z.strictObject({
  type: z.literal('setNodeMode'),
  nodeId: NodeIdSchema,
  mode: NodeModeSchema,
  at: TimestampSchema,
});

export const JobCommandSchema = z.discriminatedUnion('type', [
  SubmitJobCommandSchema,
  AssignCommandSchema,
  TaskStartedCommandSchema,
  TaskFinishedCommandSchema,
  RequeueCommandSchema,
  CancelJobCommandSchema,
  SetNodeModeCommandSchema,
]);

export type SubmitJobCommand = z.output<typeof SubmitJobCommandSchema>;
export type AssignCommand = z.output<typeof AssignCommandSchema>;
export type TaskStartedCommand = z.output<typeof TaskStartedCommandSchema>;
export type TaskFinishedCommand = z.output<typeof TaskFinishedCommandSchema>;
/** A taskFinished as a proposer builds it: defaults optional. */
export type TaskFinishedInput = z.input<typeof TaskFinishedCommandSchema>;
export type RequeueCommand = z.output<typeof RequeueCommandSchema>;
export type CancelJobCommand = z.output<typeof CancelJobCommandSchema>;
export type SetNodeModeCommand = z.output<typeof SetNodeModeCommandSchema>;
/** A validated command (defaults filled in). */
export type JobCommand = z.output<typeof JobCommandSchema>;
/** What a proposer may build: defaults optional. */
export type JobCommandInput = z.input<typeof JobCommandSchema>;

/** Validate a command from the log or the network. Throws `ProtocolError`. */
export function validateJobCommand(raw: unknown): JobCommand {
  return validate(JobCommandSchema, raw);
}

// ---------------------------------------------------------------------------------------------------------
// Folded finish reports: many plain successes of one job in one compact command

/** Plain successes one `tasksFinished` command carries at most. */
export const MAX_FOLDED_REPORTS = 1000;

const MsSchema = z.number().nonnegative().max(Number.MAX_SAFE_INTEGER);
const TakeNextCountSchema = z.number().int().min(0).max(JOB_LIMITS.maxTakeNext);

/**
 * The reports of runs of one job that succeeded plainly (exit 0, no output, no reason), as columns: item `i`
 * is task `jobId/index[i]` at attempt `attempt[i]`, and so on. It stands for the taskFinished commands
 * `expandTasksFinished` rebuilds, applied in that order as if each were its own. It exists for cost alone: a
 * node finishing thousands of short tasks a second sent one 13-field map per task, and every node decoded
 * and validated each one; columns of numbers cost a fraction of that. Only inside a batch entry (see
 * core/src/cluster/command-batcher.ts): like the reports it stands for, it is fenced by attempt numbers.
 */
export const TasksFinishedCommandSchema = z
  .strictObject({
    type: z.literal('tasksFinished'),
    jobId: JobIdSchema,
    index: z
      .array(
        z
          .number()
          .int()
          .min(0)
          .max(JOB_LIMITS.maxTasksPerJob - 1),
      )
      .min(1)
      .max(MAX_FOLDED_REPORTS),
    attempt: z.array(AttemptSchema).max(MAX_FOLDED_REPORTS),
    /** The run's start when the report carries it (its taskStarted was folded in), else null. */
    startedAt: z.array(TimestampSchema.nullable()).max(MAX_FOLDED_REPORTS),
    at: z.array(TimestampSchema).max(MAX_FOLDED_REPORTS),
    wallMs: z.array(MsSchema).max(MAX_FOLDED_REPORTS),
    cpuMs: z.array(MsSchema).max(MAX_FOLDED_REPORTS),
    maxMemoryBytes: z
      .array(z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER))
      .max(MAX_FOLDED_REPORTS),
    /** takeNext of each report: 0 when it asked for none. */
    takeNext: z.array(TakeNextCountSchema).max(MAX_FOLDED_REPORTS),
  })
  .refine(
    (c) =>
      [c.attempt, c.startedAt, c.at, c.wallMs, c.cpuMs, c.maxMemoryBytes, c.takeNext].every(
        (column) => column.length === c.index.length,
      ),
    'every column must have one value per task',
  );
export type TasksFinishedCommand = z.output<typeof TasksFinishedCommandSchema>;

/** Validates a folded report from the log. Throws `ProtocolError`. */
export function validateTasksFinished(raw: unknown): TasksFinishedCommand {
  return validate(TasksFinishedCommandSchema, raw);
}

/**
 * The job and index of a finish report that a `tasksFinished` command can carry without losing anything: it
 * succeeded with exit code 0, no reason and no output, and every value it has is one the folded command's
 * schema takes. Null for any other report, which then travels as it is. The values are checked here because a
 * folded command is validated as a whole: one bad value would have the log refuse every report folded with
 * it, where alone it refuses only its own.
 */
export function foldableFinish(cmd: JobCommandInput): { jobId: string; index: number } | null {
  if (cmd.type !== 'taskFinished' || cmd.outcome !== 'succeeded' || cmd.exitCode !== 0) return null;
  if ((cmd.reason ?? null) !== null || (cmd.stdoutTail ?? '') !== '' || (cmd.stderrTail ?? '') !== '')
    return null;
  const u = cmd.usage;
  if (!u || !isMs(u.wallMs) || !isMs(u.cpuMs) || !isCount(u.maxMemoryBytes)) return null;
  if (!isCount(cmd.at) || (cmd.startedAt !== undefined && !isCount(cmd.startedAt))) return null;
  if (!Number.isInteger(cmd.attempt) || cmd.attempt < 1 || cmd.attempt > JOB_LIMITS.maxAttempts) return null;
  const t = cmd.takeNext;
  if (t !== undefined && typeof t !== 'boolean' && !(isCount(t) && t >= 1 && t <= JOB_LIMITS.maxTakeNext))
    return null;
  const id = typeof cmd.taskId === 'string' ? parseTaskId(cmd.taskId) : null;
  if (!id || id.index >= JOB_LIMITS.maxTasksPerJob || !JobIdSchema.safeParse(id.jobId).success) return null;
  return id;
}

/** A duration or CPU time the schemas take: a finite number from 0 to MAX_SAFE_INTEGER. */
function isMs(v: unknown): v is number {
  return typeof v === 'number' && v >= 0 && v <= Number.MAX_SAFE_INTEGER;
}

/** A timestamp, byte count or count the schemas take: a safe integer of at least 0. */
function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

/**
 * Folds finish reports that `foldableFinish` accepted, all of job `jobId`, in order, into one command. The
 * caller keeps at most MAX_FOLDED_REPORTS per command.
 */
export function foldFinished(jobId: string, reports: readonly TaskFinishedInput[]): TasksFinishedCommand {
  const c: TasksFinishedCommand = {
    type: 'tasksFinished',
    jobId,
    index: [],
    attempt: [],
    startedAt: [],
    at: [],
    wallMs: [],
    cpuMs: [],
    maxMemoryBytes: [],
    takeNext: [],
  };
  for (const r of reports) {
    c.index.push(parseTaskId(r.taskId)!.index);
    c.attempt.push(r.attempt);
    c.startedAt.push(r.startedAt ?? null);
    c.at.push(r.at);
    c.wallMs.push(r.usage!.wallMs!);
    c.cpuMs.push(r.usage!.cpuMs!);
    c.maxMemoryBytes.push(r.usage!.maxMemoryBytes!);
    c.takeNext.push(r.takeNext === true ? 1 : r.takeNext || 0);
  }
  return c;
}

/** The taskFinished commands a folded report stands for, in order, as validation would have filled them in. */
export function expandTasksFinished(c: TasksFinishedCommand): TaskFinishedCommand[] {
  const out: TaskFinishedCommand[] = [];
  for (let i = 0; i < c.index.length; i++) {
    const startedAt = c.startedAt[i];
    const takeNext = c.takeNext[i]!;
    out.push({
      type: 'taskFinished',
      taskId: `${c.jobId}/${c.index[i]}`,
      attempt: c.attempt[i]!,
      outcome: 'succeeded',
      exitCode: 0,
      reason: null,
      stdoutTail: '',
      stderrTail: '',
      usage: { wallMs: c.wallMs[i]!, cpuMs: c.cpuMs[i]!, maxMemoryBytes: c.maxMemoryBytes[i]! },
      ...(startedAt === null || startedAt === undefined ? {} : { startedAt }),
      ...(takeNext > 0 ? { takeNext: takeNext === 1 ? true : takeNext } : {}),
      at: c.at[i]!,
    });
  }
  return out;
}
