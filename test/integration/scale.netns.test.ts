// The scale benchmark (bench/scale.ts) at suite size: 5 real daemons in network namespaces, each
// `--max-concurrent 12`, run one job of 60 `sleep 5` Docker containers. Every task must succeed exactly once,
// no node may ever run more than 12 containers (sampled every second with `docker ps`, and checked again from
// the attempts' recorded start/end times), and every node must get work.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runScale, type ScaleReport } from '../../bench/scale.ts';
import { requireNetns } from '../src/netns.ts';
import { requireDocker } from './lib/docker.ts';

const skip = requireNetns() ?? requireDocker();
const HOSTS = 5;
const CONCURRENCY = 12;
const SLEEP_S = 5;
/** Cluster formation (~10-20 s), 60 container starts (~11 s at ~5.5/s), two rounds of sleeps, teardown. */
const TEST_TIMEOUT_MS = 240_000;

/** The report without the timeline, for assertion messages. */
function brief(r: ScaleReport): string {
  const { timeline: _t, ...rest } = r;
  return JSON.stringify(rest);
}

describe('scale: 5 nodes × 12 concurrent containers', { skip, timeout: TEST_TIMEOUT_MS }, () => {
  it('60 sleeping containers: each task succeeds exactly once, no node over its concurrency, every node works', async (t) => {
    const r = await runScale({
      name: 'scale',
      hosts: HOSTS,
      concurrency: CONCURRENCY,
      sleepS: SLEEP_S,
      runTimeoutMs: 150_000,
    });
    const tasks = HOSTS * CONCURRENCY;
    const why = brief(r);
    t.diagnostic(
      `wall ${r.wallMs} ms, all started after ${r.allStartedMs} ms, all running after ${r.allRunningMs} ms, ` +
        `peak running ${r.peakRunning}, max per node ${JSON.stringify(r.maxSampledPerNode)}, ` +
        `peak daemon RSS ${r.peakRssMiB} MiB`,
    );
    assert.equal(r.jobState, 'succeeded', why);
    assert.equal(r.succeededExactlyOnce, tasks, `every task succeeded exactly once: ${why}`);
    assert.equal(r.notExactlyOnceCount, 0, why);
    assert.equal(r.attemptOutcomes.succeeded, tasks, `the job summary agrees: ${why}`);
    // The sampler must actually have seen the containers, or "never over the cap" would prove nothing.
    assert.ok(r.samples - r.failedSamples >= SLEEP_S, `docker was sampled: ${why}`);
    assert.ok(r.peakRunning > CONCURRENCY, `more than one node's worth ran at once: ${why}`);
    assert.equal(r.overConcurrencyCount, 0, `no sample saw a node over ${CONCURRENCY}: ${why}`);
    for (const [node, max] of Object.entries(r.maxSampledPerNode))
      assert.ok(max <= CONCURRENCY, `${node} ran ${max} containers at once: ${why}`);
    for (const [node, max] of Object.entries(r.maxOverlapPerNodeFromLog))
      assert.ok(max <= CONCURRENCY, `${node} had ${max} overlapping attempts: ${why}`);
    assert.equal(Object.keys(r.tasksPerNode).length, HOSTS, why);
    for (const [node, n] of Object.entries(r.tasksPerNode)) assert.ok(n > 0, `${node} got no work: ${why}`);
    assert.ok(r.peakRssMiB > 0, `daemon RSS was sampled: ${why}`);
  });
});
