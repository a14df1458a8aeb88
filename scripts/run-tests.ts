// Runs every test file of the repository with Node's test runner and ends with one summary line for the
// whole run. Pure unit tests run two at a time; tests that start real daemons, containers or namespaces run
// one at a time so they do not starve each other of this machine's two cores.
import { spawnSync } from 'node:child_process';
import { globSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ignore = (p: string) => p.includes('node_modules') || p.startsWith('dist/') || p.includes('/out/');
const all = globSync(['**/*.test.ts'], { exclude: (p) => ignore(String(p)) })
  .filter((p) => !ignore(p))
  .sort();
const filter = process.argv.slice(2);
const selected = filter.length > 0 ? all.filter((f) => filter.some((x) => f.includes(x))) : all;
const heavy = (f: string) => f.startsWith('test/') || f.includes('/test/') || /executors|driver|e2e/.test(f);
const light = selected.filter((f) => !heavy(f));
const serial = selected.filter(heavy);
const tapDir = mkdtempSync(join(tmpdir(), 'meshrun-tests-'));

function run(
  name: string,
  files: string[],
  concurrency: number,
): { pass: number; fail: number; skip: number; status: number } {
  if (files.length === 0) return { pass: 0, fail: 0, skip: 0, status: 0 };
  const tap = join(tapDir, `${name}.tap`);
  const r = spawnSync(
    process.execPath,
    [
      '--test',
      `--test-concurrency=${concurrency}`,
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...files,
    ],
    { stdio: 'inherit' },
  );
  let text = '';
  try {
    text = readFileSync(tap, 'utf8');
  } catch {}
  const count = (k: string) => Number(new RegExp(`^# ${k} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  return {
    pass: count('pass'),
    fail: count('fail') + count('cancelled'),
    skip: count('skipped'),
    status: r.status ?? 1,
  };
}

console.log(`unit: ${light.length} files (2 at a time); integration: ${serial.length} files (1 at a time)`);
const a = run('unit', light, 2);
const b = run('integration', serial, 1);
rmSync(tapDir, { recursive: true, force: true });
const pass = a.pass + b.pass;
const fail = a.fail + b.fail;
const skip = a.skip + b.skip;
console.log(`\n${pass} passed, ${fail} failed, ${skip} skipped`);
process.exit(a.status || b.status || (fail > 0 ? 1 : 0));
