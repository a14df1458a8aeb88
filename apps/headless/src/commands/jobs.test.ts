// The pure parts of the job commands: the end-of-run summary of a sweep, and which of --detach, --wait and
// --follow applies.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { attachModeOf, type JobView, SUMMARY_MAX_ROWS, statusSummary, type TaskView } from './jobs.ts';

function task(
  index: number,
  state: string,
  exitCode: number | null = state === 'succeeded' ? 0 : 1,
): TaskView {
  return {
    taskId: `j1/${index}`,
    index,
    state,
    attempt: 1,
    nodeId: 'node-a',
    exitCode,
    outcome: state,
    reason: state === 'succeeded' ? null : `exited with code ${exitCode}`,
    startedAt: 1,
    endedAt: 2,
  };
}

function job(tasks: TaskView[]): JobView {
  const counts: Record<string, number> = { queued: 0, succeeded: 0, failed: 0 };
  for (const t of tasks) counts[t.state] = (counts[t.state] ?? 0) + 1;
  return {
    jobId: 'j1',
    name: 'sweep',
    state: tasks.every((t) => t.state === 'succeeded') ? 'succeeded' : 'failed',
    submitter: 'alice',
    executor: 'docker',
    image: 'img',
    createdAt: 0,
    taskCount: tasks.length,
    counts,
    tasks,
  };
}

describe('statusSummary', () => {
  it('lists every task of a small job', () => {
    const text = statusSummary(job([task(0, 'succeeded'), task(1, 'failed', 3)]));
    assert.match(text, /j1\/0\s+succeeded/);
    assert.match(text, /j1\/1\s+failed\s+1\s+node-a\s+3\s+exited with code 3/);
  });

  it('sums up a sweep that succeeded in one line', () => {
    const text = statusSummary(job(Array.from({ length: 500 }, (_, i) => task(i, 'succeeded'))));
    assert.equal(text, 'job j1 (sweep) succeeded — 500 tasks: 500 succeeded');
  });

  it('lists only the first tasks of a sweep that did not succeed, and says how many more', () => {
    const tasks = Array.from({ length: 500 }, (_, i) => task(i, i % 10 === 3 ? 'failed' : 'succeeded'));
    const text = statusSummary(job(tasks));
    const lines = text.split('\n');
    assert.equal(lines[0], 'job j1 (sweep) failed — 500 tasks: 450 succeeded, 50 failed');
    const rows = lines.filter((l) => l.startsWith('j1/'));
    assert.equal(rows.length, SUMMARY_MAX_ROWS);
    assert.ok(rows.every((r) => /failed/.test(r)));
    assert.equal(rows[0]!.split(/\s+/)[0], 'j1/3');
    assert.equal(lines.at(-1), `… ${50 - SUMMARY_MAX_ROWS} more that did not succeed: meshrun status j1`);
  });

  it('sums up from the counts when the node sent only the unsuccessful tasks (jobs.wait taskFilter)', () => {
    const all = Array.from({ length: 100 }, (_, i) => task(i, i === 7 || i === 70 ? 'failed' : 'succeeded'));
    const view = { ...job(all), tasks: all.filter((t) => t.state !== 'succeeded') };
    const lines = statusSummary(view).split('\n');
    assert.equal(lines[0], 'job j1 (sweep) failed — 100 tasks: 98 succeeded, 2 failed');
    assert.deepEqual(
      lines.filter((l) => l.startsWith('j1/')).map((l) => l.split(/\s+/)[0]),
      ['j1/7', 'j1/70'],
    );
    assert.ok(!lines.some((l) => l.startsWith('…')), 'no more to mention');
    // A small job given only its failures is summed up too, not shown as if it had two tasks.
    const small = job([task(0, 'succeeded'), task(1, 'failed')]);
    assert.match(statusSummary({ ...small, tasks: [task(1, 'failed')] }), /— 2 tasks: 1 succeeded, 1 failed/);
  });
});

describe('attachModeOf', () => {
  it('takes the one flag given, or none', () => {
    assert.equal(attachModeOf({}), null);
    assert.equal(attachModeOf({ wait: true }), 'wait');
    assert.equal(attachModeOf({ follow: true, detach: false }), 'follow');
  });

  it('refuses two at once, naming them', () => {
    assert.throws(() => attachModeOf({ detach: true, follow: true }), /--detach and --follow/);
  });
});
