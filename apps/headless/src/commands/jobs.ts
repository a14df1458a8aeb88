/**
 * Job commands: `run` (docker-run-like), `submit -f`, `jobs`, `status`, `logs`, `cancel`, `node
 * drain|pause|resume`, `cluster`. Every command works against any peer: followers forward writes to the
 * leader. Exit codes of `run` follow `docker run`: the task's own code, 125 when meshrun failed or refused
 * the job, 126 when the command cannot be invoked, 127 when it is not found.
 */
import { readFile } from 'node:fs/promises';
import { MAX_TAIL_LINES } from '@meshrun/core/cluster/jobs-service.ts';
import { RemoteRpcError } from '@meshrun/core/node/control-session.ts';
import type { Command } from 'commander';
import type { CliHelpers } from '../cli.ts';
import { CliError, type NodeClient } from '../client.ts';
import { duration, parseBytes, parseDuration, shortId, table } from '../format.ts';
import { DEFAULT_RESOURCES, specsFromJobFile } from '../job-file.ts';
import { LinePrefixer } from '../line-prefixer.ts';

/** `--tail N`: a whole number of lines, or `all` (as `docker logs --tail all`). */
function tailLines(text: string): number | undefined {
  if (text === 'all') return undefined;
  if (!/^\d+$/.test(text) || Number(text) > MAX_TAIL_LINES)
    throw new CliError(
      `--tail must be a number of lines up to ${MAX_TAIL_LINES} or "all", not "${text}"`,
      EXIT.meshrunFailed,
    );
  return Number(text);
}

/** Exit codes borrowed from `docker run`. */
export const EXIT = { meshrunFailed: 125, cannotInvoke: 126, notFound: 127, interrupted: 130 } as const;

export interface TaskView {
  taskId: string;
  index: number;
  state: string;
  attempt: number;
  nodeId: string | null;
  exitCode: number | null;
  outcome: string | null;
  reason: string | null;
  startedAt: number | null;
  endedAt: number | null;
  unplacedReason?: string | null;
  attempts?: {
    attempt: number;
    nodeId: string;
    outcome: string | null;
    exitCode: number | null;
    reason: string | null;
  }[];
  stdoutTail?: string;
  stderrTail?: string;
}

export interface JobView {
  jobId: string;
  name: string;
  state: string;
  submitter: string;
  executor: string;
  image: string | null;
  createdAt: number;
  taskCount?: number;
  counts: Record<string, number>;
  tasks?: TaskView[];
  /** Set when the reply holds one page of the tasks: the index to ask for next (see getJob). */
  nextTaskFrom?: number | null;
}

/** Which tasks a jobs.get or jobs.wait reply lists (the node pages them: at most ~2 MiB a reply). */
interface TaskPage {
  taskFrom?: number;
  taskLimit?: number;
  taskFilter?: 'all' | 'unsuccessful';
}

function collect(value: string, prev: string[] = []): string[] {
  return [...prev, value];
}

/** `--param i=1..100` or `--param lr=0.1,0.01` → the job spec's params. */
export function parseParam(text: string): [string, unknown] {
  const eq = text.indexOf('=');
  if (eq <= 0)
    throw new CliError(`--param "${text}" must be name=FROM..TO or name=a,b,c`, EXIT.meshrunFailed);
  const name = text.slice(0, eq);
  const value = text.slice(eq + 1);
  const range = /^(-?\d+)\.\.(-?\d+)$/.exec(value);
  if (range) return [name, { from: Number(range[1]), to: Number(range[2]) }];
  return [name, value.split(',').map((v) => (/^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v))];
}

function parseKv(items: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new CliError(`${what} "${item}" must be key=value`, EXIT.meshrunFailed);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

function jobsTable(jobs: JobView[]): string {
  if (jobs.length === 0) return 'no jobs';
  return table(
    ['JOB', 'NAME', 'STATE', 'TASKS', 'SUBMITTER', 'IMAGE', 'AGE'],
    jobs.map((j) => [
      j.jobId,
      j.name,
      j.state,
      Object.entries(j.counts)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${k}:${n}`)
        .join(' '),
      shortId(j.submitter),
      j.image ?? j.executor,
      duration(Math.max(0, Date.now() - j.createdAt)),
    ]),
  );
}

/** Tasks a job's status lists in full; past this, `run` prints a summary (see statusSummary). */
export const SUMMARY_MAX_ROWS = 20;

/**
 * What `run` prints when a job ends: the whole status for a small job; for a sweep, its counts and the first
 * SUMMARY_MAX_ROWS tasks that did not succeed, and where to see the rest (`meshrun status` lists them all).
 */
export function statusSummary(job: JobView): string {
  const tasks = job.tasks ?? [];
  const total = job.taskCount ?? tasks.length;
  if (total <= SUMMARY_MAX_ROWS && tasks.length === total) return statusText(job);
  const counts = Object.entries(job.counts)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  const head = `job ${job.jobId} (${job.name}) ${job.state} — ${total} tasks: ${counts}`;
  // The tasks given may be all of them or only the unsuccessful ones (jobs.wait's taskFilter).
  const unsuccessful = total - (job.counts.succeeded ?? 0);
  if (unsuccessful === 0) return head;
  const shown = tasks.filter((t) => t.state !== 'succeeded').slice(0, SUMMARY_MAX_ROWS);
  const more =
    unsuccessful > shown.length
      ? `\n… ${unsuccessful - shown.length} more that did not succeed: meshrun status ${job.jobId}`
      : '';
  return `${head}\n${taskTable(shown)}${more}`;
}

/** The newest `limit` jobs (in `state`), oldest first, fetched page by page (at most ~2 MiB a reply). */
async function listJobs(client: NodeClient, state: string | undefined, limit: number): Promise<JobView[]> {
  let jobs: JobView[] = [];
  let skip = 0;
  // Bounded: every page holds at least one job.
  for (let pages = 0; pages < 10_000 && jobs.length < limit; pages++) {
    const page = (await client.call('jobs.list', {
      ...(state ? { state } : {}),
      limit: limit - jobs.length,
      skip,
    })) as { jobs: JobView[]; nextSkip: number | null };
    jobs = [...page.jobs, ...jobs];
    if (page.nextSkip === null) break;
    skip = page.nextSkip;
  }
  return jobs;
}

/** A job with all its tasks, fetched page by page (a node's reply carries at most ~2 MiB of them). */
async function getJob(client: NodeClient, jobId: string): Promise<JobView> {
  const first = (await client.call('jobs.get', { jobId })) as JobView;
  const tasks = [...(first.tasks ?? [])];
  let next = first.nextTaskFrom;
  // Bounded: every page holds at least one task and a job has at most JOB_LIMITS.maxTasksPerJob.
  for (let pages = 0; next !== null && next !== undefined && pages < 10_000; pages++) {
    const page = (await client.call('jobs.get', { jobId, taskFrom: next })) as JobView;
    tasks.push(...(page.tasks ?? []));
    next = page.nextTaskFrom;
  }
  const { nextTaskFrom: _, ...view } = first;
  return { ...view, tasks };
}

function taskTable(tasks: TaskView[]): string {
  const rows = tasks.map((t) => [
    t.taskId,
    t.state,
    String(t.attempt),
    t.nodeId ? shortId(t.nodeId) : '-',
    t.exitCode === null ? '-' : String(t.exitCode),
    t.reason ?? t.unplacedReason ?? '',
  ]);
  return table(['TASK', 'STATE', 'ATTEMPT', 'NODE', 'EXIT', 'REASON'], rows);
}

function statusText(job: JobView): string {
  const head = `job ${job.jobId} (${job.name}) ${job.state} — submitted by ${job.submitter}\n`;
  return head + taskTable(job.tasks ?? []);
}

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/**
 * Streams a task's output to this process's stdout/stderr until the task ends; `json`: to stdout instead, one
 * JSON object per chunk and line (`{"taskId","stream","at","data"}`, data as UTF-8 text), for machines.
 */
async function followLogs(
  client: NodeClient,
  taskId: string,
  follow: boolean,
  json = false,
  tail?: number,
): Promise<void> {
  await client.call(
    'logs.stream',
    { taskId, follow, ...(tail === undefined ? {} : { tail }) },
    {
      onItem: (item) => {
        const it = item as { stream: 'stdout' | 'stderr'; data: Uint8Array | string; at?: number };
        const stream = it.stream === 'stderr' ? 'stderr' : 'stdout';
        if (json) {
          const data = typeof it.data === 'string' ? it.data : Buffer.from(it.data).toString('utf8');
          process.stdout.write(`${JSON.stringify({ taskId, stream, at: it.at ?? null, data })}\n`);
          return;
        }
        process[stream].write(typeof it.data === 'string' ? it.data : Buffer.from(it.data));
      },
    },
  );
}

/**
 * Tasks of one job whose output `--follow` streams at once, in index order. A task's turn may come after it
 * ended: its output is then read back from the node that ran it (or the log's tail), so none is lost.
 */
export const FOLLOW_PARALLEL = 8;

/** How `run` and `submit` stay attached to what they submitted. */
export type AttachMode = 'detach' | 'wait' | 'follow';

/** The one of `--detach`, `--wait` and `--follow` given, or null for none; more than one is a usage error. */
export function attachModeOf(o: { detach?: boolean; wait?: boolean; follow?: boolean }): AttachMode | null {
  const given = (['detach', 'wait', 'follow'] as const).filter((k) => o[k]);
  if (given.length > 1)
    throw new CliError(
      `choose one of --detach, --wait and --follow (got ${given.map((k) => `--${k}`).join(' and ')})`,
      EXIT.meshrunFailed,
    );
  return given[0] ?? null;
}

/**
 * Streams the output of every task of a job, each line labelled `label(index)` as `docker compose logs`
 * labels containers, FOLLOW_PARALLEL tasks at a time in index order. A task whose output cannot be read is
 * named on stderr; the others go on.
 */
async function followJob(
  client: NodeClient,
  jobId: string,
  tasks: number,
  label: (index: number) => string,
): Promise<void> {
  let next = 0;
  const follower = async () => {
    while (next < tasks) {
      const index = next++;
      const lines = { stdout: new LinePrefixer(label(index)), stderr: new LinePrefixer(label(index)) };
      try {
        await client.call(
          'logs.stream',
          { taskId: `${jobId}/${index}`, follow: true },
          {
            onItem: (item) => {
              const it = item as { stream: 'stdout' | 'stderr'; data: Uint8Array | string };
              const stream = it.stream === 'stderr' ? 'stderr' : 'stdout';
              process[stream].write(lines[stream].push(it.data));
            },
          },
        );
      } catch (err) {
        process.stderr.write(
          `meshrun: cannot stream the output of task ${jobId}/${index}: ${(err as Error).message}\n`,
        );
      }
      process.stdout.write(lines.stdout.end());
      process.stderr.write(lines.stderr.end());
    }
  };
  await Promise.all(Array.from({ length: Math.min(FOLLOW_PARALLEL, tasks) }, follower));
}

/**
 * After the live output of a one-task job's attempt ended: when the task is to run again (`--retries`, or its
 * node was lost), says so on stderr, since its next attempt is not streamed. Returns the attempt that was
 * streamed when the task goes on, else 0.
 */
async function noteRetry(client: NodeClient, jobId: string): Promise<number> {
  // The stream ends as the run ends, before its result is in the log: wait for the log to record it.
  for (let i = 0; i < 100; i++) {
    const job = (await client.call('jobs.get', { jobId })) as JobView;
    const task = job.tasks?.[0];
    if (!task || TERMINAL.has(task.state)) return 0;
    // Queued again: its latest attempt ended. Already placed again: the one before the current ended.
    const ended =
      task.state === 'queued' ? task.attempts?.at(-1) : task.attempt > 1 ? task.attempts?.at(-2) : undefined;
    if (ended && ended.outcome !== null) {
      process.stderr.write(
        `meshrun: attempt ${ended.attempt} ended (${ended.reason ?? ended.outcome}); the task runs again\n`,
      );
      return ended.attempt;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return 0;
}

/** Waits until the job has ended; the reply lists the tasks `page` asks for (by default the first page). */
async function waitForJob(client: NodeClient, jobId: string, page: TaskPage = {}): Promise<JobView> {
  // The node answers when the job reaches a terminal state (or after its own poll window): bounded loop.
  for (let i = 0; i < 100_000; i++) {
    const job = (await client.call(
      'jobs.wait',
      { jobId, timeoutMs: 30_000, ...page },
      { timeoutMs: 60_000 },
    )) as JobView;
    if (TERMINAL.has(job.state)) return job;
  }
  throw new CliError(`gave up waiting for job ${jobId}`, EXIT.meshrunFailed);
}

/** The exit code `meshrun run` returns for a finished single-task job. */
export function exitCodeOf(job: JobView): number {
  const task = job.tasks?.[0];
  if (job.state === 'succeeded') return 0;
  if (!task) return EXIT.meshrunFailed;
  if (task.outcome === 'exited' || task.outcome === 'failed' || task.outcome === 'succeeded')
    return task.exitCode ?? 1;
  if (task.exitCode === EXIT.notFound || task.exitCode === EXIT.cannotInvoke) return task.exitCode;
  if (task.exitCode !== null && task.exitCode !== undefined && task.exitCode > 0) return task.exitCode;
  return EXIT.meshrunFailed;
}

export function installJobCommands(program: Command, helpers: CliHelpers): void {
  program
    .command('run')
    .description(
      'run a job on the cluster, like `docker run`: waits for it and exits with its code (--follow, --wait or --detach)',
    )
    .argument('[image]', 'container image (omit with --wasm)')
    .argument('[command...]', 'command and arguments (after --)')
    .option('--name <name>', 'job name')
    .option('--cpus <n>', 'CPU cores per task (fractions ok)', String(DEFAULT_RESOURCES.cpus))
    .option(
      '--memory <size>',
      'memory per task (e.g. 512M, 2G)',
      `${DEFAULT_RESOURCES.memoryBytes / 1024 ** 2}M`,
    )
    .option('--gpus <n>', 'GPUs per task')
    .option('--gpu-vendor <vendor>', 'GPU vendor (nvidia, amd, intel)')
    .option('--gpu-min-vram <size>', 'minimum VRAM per GPU')
    .option('-e, --env <k=v>', 'environment variable (repeatable)', collect, [])
    .option('--label-constraint <k=v>', 'only nodes with this label (repeatable)', collect, [])
    .option('--arch <arch>', 'only nodes of this CPU architecture')
    .option('--timeout <duration>', 'task run timeout (e.g. 30s, 10m)')
    .option('--retries <n>', 'extra attempts after a failure (losing its node is not one)', '0')
    .option('--priority <n>', 'higher runs first (0-100)', '50')
    .option('--count <n>', 'identical tasks', '1')
    .option('--param <name=spec>', 'sweep parameter: i=1..100 or x=a,b,c (repeatable)', collect, [])
    .option('--network', 'ask for network access (the node owner must allow it)')
    .option('--wasm <file>', 'run a WASI module instead of a container')
    .option('-d, --detach', 'print the job ID and return')
    .option('--wait', 'wait until the job ends, then print its status (the default for several tasks)')
    .option(
      '--follow',
      'stream the output until the job ends, each line labelled [N] by task when there are several (the default for one task)',
    )
    .action(async (image: string | undefined, command: string[], o, cmd: Command) => {
      const attach = attachModeOf(o);
      const params = Object.fromEntries((o.param as string[]).map(parseParam));
      let wasm: Uint8Array | undefined;
      if (o.wasm) {
        try {
          wasm = new Uint8Array(await readFile(o.wasm));
        } catch (err) {
          throw new CliError(`cannot read --wasm ${o.wasm}: ${(err as Error).message}`, EXIT.meshrunFailed);
        }
        if (image) command = [image, ...command];
      } else if (!image) {
        throw new CliError('run needs an IMAGE (or --wasm FILE)', EXIT.meshrunFailed);
      }
      const spec: Record<string, unknown> = {
        name: o.name ?? (o.wasm ? String(o.wasm).split('/').pop() : image),
        executor: wasm ? 'wasm' : 'docker',
        ...(wasm ? { wasm: { bytes: wasm } } : { image }),
        command,
        env: parseKv(o.env, '--env'),
        resources: {
          cpus: Number(o.cpus),
          memoryBytes: parseBytes(o.memory),
          ...(o.gpus
            ? {
                gpus: {
                  count: Number(o.gpus),
                  ...(o.gpuVendor ? { vendor: o.gpuVendor } : {}),
                  ...(o.gpuMinVram ? { minVramBytes: parseBytes(o.gpuMinVram) } : {}),
                },
              }
            : {}),
        },
        constraints: {
          ...(o.labelConstraint.length > 0
            ? { labels: parseKv(o.labelConstraint, '--label-constraint') }
            : {}),
          ...(o.arch ? { arch: o.arch } : {}),
        },
        ...(o.timeout ? { timeoutMs: parseDuration(o.timeout) } : {}),
        retry: { maxAttempts: Number(o.retries) + 1 },
        priority: Number(o.priority),
        count: Number(o.count),
        params,
        network: Boolean(o.network),
      };
      const code = await helpers.withClient(cmd, async (client, opts) => {
        let submitted: { jobId: string; tasks: number };
        try {
          submitted = (await client.call('jobs.submit', { spec })) as { jobId: string; tasks: number };
        } catch (err) {
          if (err instanceof RemoteRpcError)
            throw new CliError(`job refused: ${err.message}`, EXIT.meshrunFailed);
          throw err;
        }
        const mode = attach ?? (submitted.tasks === 1 ? 'follow' : 'wait');
        if (mode === 'detach') {
          helpers.print(opts, submitted, () => submitted.jobId);
          return 0;
        }
        // Ctrl-C while attached stops the job, as `docker run` stops its container: the job is cancelled and
        // run exits 130 once it has ended. A second Ctrl-C stops waiting for that.
        let interrupted = false;
        const onInterrupt = () => {
          if (interrupted) process.exit(EXIT.interrupted);
          interrupted = true;
          process.stderr.write(
            `\nmeshrun: cancelling job ${submitted.jobId} (Ctrl-C again to stop waiting for it)\n`,
          );
          client.call('jobs.cancel', { jobId: submitted.jobId }).catch((err: Error) => {
            process.stderr.write(`meshrun: could not cancel job ${submitted.jobId}: ${err.message}\n`);
            process.exit(EXIT.interrupted);
          });
        };
        process.on('SIGINT', onInterrupt);
        let followed = 0;
        let job: JobView;
        try {
          if (mode === 'follow' && submitted.tasks === 1) {
            await followLogs(client, `${submitted.jobId}/0`, true);
            followed = await noteRetry(client, submitted.jobId);
          } else if (mode === 'follow')
            await followJob(client, submitted.jobId, submitted.tasks, (i) => `[${i}] `);
          // A sweep's summary needs only its unsuccessful tasks, and only the first few.
          const sweep = submitted.tasks > SUMMARY_MAX_ROWS && !opts.json;
          job = await waitForJob(
            client,
            submitted.jobId,
            sweep ? { taskFilter: 'unsuccessful', taskLimit: SUMMARY_MAX_ROWS } : {},
          );
          if (opts.json) job = await getJob(client, submitted.jobId);
        } finally {
          process.off('SIGINT', onInterrupt);
        }
        const last = job.tasks?.[0];
        if (followed > 0 && last && last.attempt > followed && !opts.json) {
          // The live stream showed the first attempt; the one that decided the result ran later: its output
          // as the log keeps it (the last 16 Ki characters of each stream).
          process.stderr.write(`meshrun: output of attempt ${last.attempt}, the last:\n`);
          process.stdout.write(last.stdoutTail ?? '');
          process.stderr.write(last.stderrTail ?? '');
        }
        if (opts.json) helpers.print(opts, job, () => '');
        // stdout carries the tasks' output when following; with --wait the status is the command's output.
        else if (mode === 'wait') process.stdout.write(`${statusSummary(job)}\n`);
        else if (submitted.tasks > 1) process.stderr.write(`${statusSummary(job)}\n`);
        if (interrupted) return EXIT.interrupted;
        const rc = submitted.tasks === 1 ? exitCodeOf(job) : job.state === 'succeeded' ? 0 : 1;
        if (rc === EXIT.meshrunFailed)
          process.stderr.write(`meshrun: ${job.tasks?.[0]?.reason ?? `job ${job.state}`}\n`);
        return rc;
      });
      process.exitCode = code;
    });

  program
    .command('submit')
    .description(
      'submit jobs from a YAML or JSON file: one spec or a list (wasm: FILE, memory: 512M, timeout: 10m, retries: N)',
    )
    .requiredOption('-f, --file <file>', 'jobs file')
    .option('--wait', 'wait until every job ends and print their states; exit 0 only if all succeeded')
    .option('--follow', "stream every task's output, each line labelled [NAME/N], until every job ends")
    .action(async (o, cmd: Command) => {
      const attach = attachModeOf(o) ?? 'detach';
      const text = await readFile(o.file, 'utf8').catch((err: Error) => {
        throw new CliError(`cannot read ${o.file}: ${err.message}`);
      });
      const specs = await specsFromJobFile(
        text,
        o.file,
        async (path) => new Uint8Array(await readFile(path)),
      );
      await helpers.withClient(cmd, async (client, opts) => {
        const results: { jobId?: string; tasks?: number; error?: string }[] = [];
        for (const spec of specs) {
          try {
            results.push((await client.call('jobs.submit', { spec })) as { jobId: string; tasks: number });
          } catch (err) {
            results.push({ error: (err as Error).message });
          }
        }
        const refused = results.filter((r) => r.error);
        if (attach === 'detach') {
          helpers.print(opts, results, () => results.map((r) => r.jobId ?? `refused: ${r.error}`).join('\n'));
          if (refused.length > 0) process.exitCode = 1;
          return;
        }
        // Refusals are known now: say so before waiting on the others.
        if (!opts.json) for (const r of refused) process.stderr.write(`refused: ${r.error}\n`);
        const ended: (JobView | { error: string })[] = [];
        for (const [i, r] of results.entries()) {
          if (r.error !== undefined || r.jobId === undefined) {
            ended.push({ error: r.error ?? 'no job ID' });
            continue;
          }
          const jobId = r.jobId;
          if (attach === 'follow') {
            const name = (specs[i] as { name?: unknown } | null)?.name;
            const label = typeof name === 'string' && name.length > 0 ? name : jobId;
            await followJob(client, jobId, r.tasks ?? 1, (n) => `[${label}/${n}] `);
          }
          // The table shows counts; --json gets every task.
          const job = await waitForJob(client, jobId, { taskLimit: 1 });
          ended.push(opts.json ? await getJob(client, jobId) : job);
        }
        const jobs = ended.filter((e): e is JobView => 'jobId' in e);
        helpers.print(opts, ended, () => jobsTable(jobs));
        if (refused.length > 0 || jobs.some((j) => j.state !== 'succeeded')) process.exitCode = 1;
      });
    });

  program
    .command('jobs')
    .description('list jobs')
    .option('--state <state>', 'only jobs in this state (queued, running, succeeded, failed, cancelled)')
    .option('--limit <n>', 'at most this many (newest first)', '100')
    .action(async (o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const jobs = await listJobs(client, o.state, Number(o.limit));
        helpers.print(opts, jobs, () => jobsTable(jobs));
      });
    });

  program
    .command('status')
    .description('a job with its tasks and every attempt')
    .argument('<job>', 'job ID')
    .action(async (jobId: string, _o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const job = await getJob(client, jobId);
        helpers.print(opts, job, () => statusText(job));
      });
    });

  program
    .command('logs')
    .description("a task's output (JOB means its first task); --follow streams until the task ends")
    .argument('<task>', 'task ID (JOB/N) or job ID')
    .option('-f, --follow', 'stream new output until the task ends')
    .option('-n, --tail <lines>', 'only the last N lines of the output so far (then, with --follow, all new)')
    .action(async (id: string, o, cmd: Command) => {
      const tail = o.tail === undefined ? undefined : tailLines(o.tail);
      await helpers.withClient(cmd, async (client, opts) => {
        await followLogs(client, id.includes('/') ? id : `${id}/0`, Boolean(o.follow), opts.json, tail);
      });
    });

  program
    .command('cancel')
    .description('cancel a job (running tasks are stopped)')
    .argument('<job>', 'job ID')
    .action(async (jobId: string, _o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const r = await client.call('jobs.cancel', { jobId });
        helpers.print(opts, r, () => `cancelled ${jobId}`);
      });
    });

  const node = program
    .command('node')
    .description("change a node's mode (default: the node you are talking to)");
  for (const [name, mode, what] of [
    ['drain', 'draining', 'stop new assignments; running tasks finish (or are re-queued after --deadline)'],
    ['pause', 'paused', 'stop taking new work (a volunteer’s switch)'],
    ['resume', 'active', 'take work again'],
  ] as const) {
    const c = node
      .command(name)
      .description(what)
      .argument('[node]', 'peer ID (default: the node answering)');
    if (name === 'drain') c.option('--deadline <duration>', 're-queue tasks still running after this long');
    c.action(async (nodeId: string | undefined, o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const r = await client.call('node.setMode', {
          ...(nodeId ? { nodeId } : {}),
          mode,
          ...(o.deadline ? { deadlineMs: parseDuration(o.deadline) } : {}),
        });
        helpers.print(opts, r, () => `${(r as { nodeId: string }).nodeId} is now ${mode}`);
      });
    });
  }

  program
    .command('cluster')
    .description('the Raft cluster: leader, term, commit/applied index, voters and learners')
    .option('--local', "the answering node's own view (default: the leader's, which knows match indexes)")
    .action(async (o, cmd: Command) => {
      await helpers.withClient(cmd, async (client, opts) => {
        const s = (await client.call('cluster.status', { local: Boolean(o.local) })) as {
          id: string;
          leader: string | null;
          term: number;
          commit: number;
          applied: number;
          role: string;
          voters: { id: string; match: number; reachable: boolean }[];
          learners: { id: string; match: number; reachable: boolean }[];
        };
        helpers.print(opts, s, () => {
          const rows = [
            ...s.voters.map((v) => [
              v.id,
              v.id === s.leader ? 'leader' : 'voter',
              String(v.match),
              v.reachable ? 'yes' : 'no',
            ]),
            ...s.learners.map((v) => [v.id, 'learner', String(v.match), v.reachable ? 'yes' : 'no']),
          ];
          return `leader ${s.leader ?? '(none)'}  term ${s.term}  commit ${s.commit}  applied ${s.applied}  (answered by ${shortId(s.id)}, ${s.role})\n${table(['MEMBER', 'ROLE', 'MATCH', 'REACHABLE'], rows)}`;
        });
      });
    });
}
