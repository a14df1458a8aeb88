// Process helpers for integration tests: run a command (optionally inside a network namespace) with a
// timeout and bounded output capture, run the meshrun CLI, and poll for a condition with a bounded budget.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file lives in <repo>/test/src). */
export const REPO_ROOT: string = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Node 22 binary used for every child process. The machine's default `node` may be older, so prefer the
 * one installed from npm; fall back to the binary running the tests (which must be 22 to run them at all).
 */
export const NODE_BIN: string = existsSync(join(REPO_ROOT, 'node_modules/.bin/node'))
  ? join(REPO_ROOT, 'node_modules/.bin/node')
  : process.execPath;

/** The meshrun CLI entry point (written by the headless app). */
export const MESHRUN_CLI: string = join(REPO_ROOT, 'apps/headless/bin/meshrun.js');

/** Default limit on captured stdout and on captured stderr of one command (each). */
export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;
/** After a command exits, how long to wait for its output pipes to close (a grandchild may hold them). */
export const PIPE_DRAIN_MS = 500;
/** Default wall-clock limit of one command. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

export interface RunOptions {
  /** Network namespace to run in (`ip netns exec <ns>`); a host object from netns.ts works too. */
  ns?: string | { ns: string };
  /** Extra environment, merged over the test process's environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Written to the child's stdin, then stdin is closed. Without it stdin is empty. */
  input?: string | Uint8Array;
  /** Kill the child with SIGKILL after this long; the result then has `timedOut: true`. */
  timeoutMs?: number;
  /** Capture at most this many bytes of stdout (and, separately, stderr); the rest is drained and dropped. */
  maxOutputBytes?: number;
}

export interface RunResult {
  /** Exit code; null when the child was ended by a signal. 127 when the command could not be started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** True when stdout or stderr exceeded maxOutputBytes and was cut. */
  truncated: boolean;
}

/**
 * Environment for child processes: the test's own environment minus node:test's internal variable (a child
 * node process that inherits it would talk the test-runner protocol on stdout), plus `extra`.
 */
export function childEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...extra })) {
    if (v !== undefined && k !== 'NODE_TEST_CONTEXT') env[k] = v;
  }
  return env;
}

/** The argv that runs `cmd args` inside namespace `ns` (or directly when ns is undefined). */
export function nsArgv(
  ns: string | { ns: string } | undefined,
  cmd: string,
  args: readonly string[],
): string[] {
  const name = typeof ns === 'string' ? ns : ns?.ns;
  return name === undefined ? [cmd, ...args] : ['ip', 'netns', 'exec', name, cmd, ...args];
}

/**
 * Runs a command to completion. Never rejects for a non-zero exit, a timeout or a missing binary: all of
 * these are reported in the result, so tests can assert on them (and a failing command can't hang a test).
 */
export function runCommand(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const maxBytes = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  const [file, ...argv] = nsArgv(opts.ns, cmd, args);
  return new Promise((resolve) => {
    const child = spawn(file!, argv, {
      cwd: opts.cwd ?? REPO_ROOT,
      env: childEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out = new BoundedText(maxBytes);
    const err = new BoundedText(maxBytes);
    let timedOut = false;
    let spawnError: Error | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => {}); // the child may exit without reading its input
    child.stdin.end(opts.input ?? '');
    child.on('error', (e) => {
      spawnError = e;
    });
    let done = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.stdout.destroy();
      child.stderr.destroy();
      const stderr = err.text() + (spawnError ? `${spawnError.message}\n` : '');
      resolve({
        // A command that could not be started reports like a shell would (libuv gives a negative errno).
        code: spawnError ? 127 : code,
        signal,
        stdout: out.text(),
        stderr,
        timedOut,
        truncated: out.truncated || err.truncated,
      });
    };
    // A background grandchild may keep the pipes open after the command exits: don't wait for it forever.
    child.on('exit', (code, signal) => setTimeout(() => finish(code, signal), PIPE_DRAIN_MS).unref());
    child.on('close', finish);
  });
}

export interface CliOptions extends RunOptions {
  /** Entry script to run with Node 22; defaults to apps/headless/bin/meshrun.js. */
  cliPath?: string;
}

/** Runs the meshrun CLI (`node meshrun.js ...args`), optionally inside a namespace. */
export function runCli(args: readonly string[], opts: CliOptions = {}): Promise<RunResult> {
  return runCommand(NODE_BIN, [opts.cliPath ?? MESHRUN_CLI, ...args], opts);
}

/**
 * A description of a result for assertion messages: a command's RunResult, or the code and output the
 * loopback cluster's CLI runs give (those have no signal or timeout to tell).
 */
export function describeResult(
  r: Pick<RunResult, 'code' | 'stdout' | 'stderr'> & Partial<Pick<RunResult, 'signal' | 'timedOut'>>,
  tailBytes = 2000,
): string {
  const tail = (s: string) => (s.length > tailBytes ? `…${s.slice(-tailBytes)}` : s);
  const how = 'signal' in r ? ` signal=${r.signal} timedOut=${r.timedOut}` : '';
  return `code=${r.code}${how}\nstdout: ${tail(r.stdout)}\nstderr: ${tail(r.stderr)}`;
}

export interface WaitForOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** Pause between attempts (default 100 ms). */
  intervalMs?: number;
  /** Said in the timeout error, e.g. "node 2 to see 3 peers". */
  description?: string;
  /** Stops polling early; waitFor then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Thrown (or rejected) by a waitFor predicate to stop waiting at once, e.g. when the process died. */
export class StopWaiting extends Error {
  override name = 'StopWaiting';
}

/**
 * Polls `predicate` until it returns a truthy value, which is returned. A predicate that throws counts as
 * "not yet" (its last error is included in the timeout error), except a StopWaiting, which ends the wait
 * with that error. The number of attempts is bounded by
 * timeoutMs / intervalMs (plus one final attempt at the deadline).
 */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  opts: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = Math.max(1, opts.intervalMs ?? 100);
  const maxAttempts = Math.ceil(timeoutMs / intervalMs) + 1;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    opts.signal?.throwIfAborted();
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
      lastError = undefined;
    } catch (e) {
      if (e instanceof StopWaiting) throw e;
      lastError = e;
    }
    const left = deadline - Date.now();
    if (left <= 0) break;
    await sleep(Math.min(intervalMs, left));
  }
  const what = opts.description ?? 'condition';
  const why = lastError instanceof Error ? `: last error: ${lastError.message}` : '';
  throw new Error(`waitFor: timed out after ${timeoutMs} ms waiting for ${what}${why}`, { cause: lastError });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Collects up to `max` bytes and counts (but drops) the rest, so a chatty child can't exhaust memory. */
class BoundedText {
  readonly max: number;
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(max: number) {
    this.max = max;
  }
  push(b: Buffer): void {
    const room = this.max - this.size;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const part = b.length > room ? b.subarray(0, room) : b;
    if (part.length < b.length) this.truncated = true;
    this.chunks.push(part);
    this.size += part.length;
  }
  text(): string {
    return Buffer.concat(this.chunks).toString('utf8') + (this.truncated ? '\n[output truncated]\n' : '');
  }
}
