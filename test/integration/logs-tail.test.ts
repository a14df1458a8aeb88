// `meshrun logs --tail N` on three real daemons over loopback, as `docker logs --tail` behaves: the last N lines
// of a task's output, read on the node that ran it and relayed through another; with --follow, the last N
// lines so far and then everything new until the task ends.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  type LoopbackCluster,
  type LoopbackNode,
  newLoopbackCluster,
} from '@meshrun/headless/local-cluster.ts';
import { describeResult, waitFor } from '../src/proc.ts';
import { wasmOf } from './lib/wasm.ts';

/**
 * A WASI module that writes "line 1\n" … "line N\n" to stdout, one fd_write per line, sleeping `pauseMs`
 * after each (poll_oneoff on a relative monotonic clock).
 */
function linesWat(n: number, pauseMs: number): string {
  const data = Array.from({ length: n }, (_, i) => `line ${i + 1}\\n`);
  let offset = 256;
  const segments: string[] = [];
  const body: string[] = [];
  for (const text of data) {
    const len = text.length - 1; // "\\n" is one byte
    segments.push(`(data (i32.const ${offset}) "${text}")`);
    body.push(
      `(i32.store (i32.const 0) (i32.const ${offset}))`,
      `(i32.store (i32.const 4) (i32.const ${len}))`,
      '(drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))',
    );
    if (pauseMs > 0)
      body.push(
        '(i32.store (i32.const 40) (i32.const 1))',
        `(i64.store (i32.const 48) (i64.const ${pauseMs * 1_000_000}))`,
        '(drop (call $poll (i32.const 24) (i32.const 128) (i32.const 1) (i32.const 192)))',
      );
    offset += len;
  }
  return `(module
    (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    ${segments.join('\n    ')}
    (func (export "_start")
      ${body.join('\n      ')}))`;
}

describe('logs --tail', () => {
  let c: LoopbackCluster;
  before(async () => {
    c = await newLoopbackCluster({ prefix: 'meshrun-logs-tail-' });
    for (const i of [0, 1, 2]) await c.start(i, ['--label', `slot=${i}`]);
    await waitFor(
      async () => {
        const r = await c.nodes[0]!.cli(['cluster', '--json']);
        const s = r.code === 0 ? JSON.parse(r.stdout) : null;
        return s?.leader && s.voters.length === 3;
      },
      { timeoutMs: 30_000, description: 'a leader with three voters' },
    );
  });
  after(async () => c?.destroy());

  /** Submits the module to run on node 1 (by its label); returns the job ID. */
  async function runOnNode1(name: string, wat: string): Promise<string> {
    const file = join(c.dir, `${name}.wasm`);
    writeFileSync(file, await wasmOf(wat));
    const r = await c.nodes[0]!.cli([
      'run',
      '--detach',
      '--memory',
      '16M',
      '--cpus',
      '0.1',
      '--label-constraint',
      'slot=1',
      '--wasm',
      file,
    ]);
    assert.equal(r.code, 0, describeResult(r));
    return r.stdout.trim();
  }
  async function logs(n: LoopbackNode, args: string[]): Promise<string> {
    const r = await n.cli(['logs', ...args]);
    assert.equal(r.code, 0, describeResult(r));
    return r.stdout;
  }

  it('gives the last N lines on the node that ran the task and through any other; 0 and all too', async () => {
    const jobId = await runOnNode1('ten', linesWat(10, 0));
    await waitFor(async () => (await logs(c.nodes[1]!, [jobId])).endsWith('line 10\n'), {
      timeoutMs: 20_000,
      description: 'all ten lines stored',
    });
    for (const n of [c.nodes[1]!, c.nodes[2]!]) {
      assert.equal(await logs(n, ['--tail', '3', jobId]), 'line 8\nline 9\nline 10\n');
      assert.equal(await logs(n, ['-n', '1', jobId]), 'line 10\n');
      assert.equal(await logs(n, ['--tail', '0', jobId]), '');
      assert.equal(await logs(n, ['--tail', '50', jobId]), await logs(n, [jobId]));
      assert.equal(await logs(n, ['--tail', 'all', jobId]), await logs(n, [jobId]));
    }
    const json = (await logs(c.nodes[2]!, ['--tail', '2', jobId, '--json'])).trim().split('\n');
    assert.deepEqual(
      json.map((l) => JSON.parse(l).data),
      ['line 9\n', 'line 10\n'],
    );
    const bad = await c.nodes[0]!.cli(['logs', '--tail', 'some', jobId]);
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /--tail must be a number of lines/);
  });

  it('with --follow: the last N lines so far, then every new one until the task ends', async () => {
    const jobId = await runOnNode1('slow', linesWat(8, 400));
    // Start following once at least three lines are out, from a node that did not run it.
    await waitFor(async () => (await logs(c.nodes[1]!, [jobId])).split('\n').length > 3, {
      timeoutMs: 20_000,
      description: 'three lines out',
    });
    const followed = await logs(c.nodes[2]!, ['--follow', '--tail', '2', jobId]);
    const lines = followed.trimEnd().split('\n');
    const first = Number(/^line (\d+)$/.exec(lines[0]!)?.[1]);
    assert.ok(first >= 2, `starts with the last 2 lines so far, not the first: ${JSON.stringify(followed)}`);
    assert.deepEqual(
      lines,
      Array.from({ length: 9 - first }, (_, i) => `line ${first + i}`),
      'then every line to the end, none twice',
    );
  });
});
