/**
 * `npm run bench [-- section...]`: runs the benchmarks, prints one table per section and the whole result as
 * JSON (also written to bench-results/latest.json). Sections: foundation, scheduler, executors, raft, bullmq,
 * latency, scale (scale is long and only runs when named).
 */
import { mkdirSync, writeFileSync } from 'node:fs';

type Section = () => Promise<Record<string, unknown>>;
const sections: Record<string, () => Promise<Section>> = {
  foundation: async () => (await import('./foundation.ts')).benchFoundation,
  scheduler: async () => (await import('./scheduler.ts')).benchScheduler,
  executors: async () => (await import('./executors.ts')).benchExecutors,
  raft: async () => (await import('./raft.ts')).benchRaft,
  latency: async () => (await import('./latency.ts')).benchLatency,
  bullmq: async () => (await import('./bullmq.ts')).benchBullmq,
  scale: async () => (await import('./scale.ts')).benchScale,
};
const optional = new Set(['scale']);

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const names = wanted.length > 0 ? wanted : Object.keys(sections).filter((n) => !optional.has(n));
const results: Record<string, unknown> = {
  at: new Date().toISOString(),
  machine: `${process.platform} ${process.arch}`,
};
let failed = false;
for (const name of names) {
  const load = sections[name];
  if (!load) {
    console.error(`unknown bench section "${name}" (have: ${Object.keys(sections).join(', ')})`);
    failed = true;
    continue;
  }
  console.log(`\n== ${name} ==`);
  try {
    const fn = await load();
    const r = await fn();
    results[name] = r;
    const cell = (v: unknown) => {
      const text = typeof v === 'object' ? JSON.stringify(v) : String(v);
      return text.length > 100 ? `${text.slice(0, 99)}…` : text;
    };
    console.table(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, { value: cell(v) }])));
  } catch (err) {
    failed = true;
    results[name] = { error: (err as Error).message };
    console.error(`${name} failed: ${(err as Error).stack}`);
  }
}
mkdirSync('bench-results', { recursive: true });
writeFileSync('bench-results/latest.json', `${JSON.stringify(results, null, 2)}\n`);
console.log(`\n${JSON.stringify(results)}`);
process.exit(failed ? 1 : 0);
