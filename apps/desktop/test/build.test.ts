/**
 * The build's outputs: the renderer is CSP-clean static files, main/preload exist, and the bundled node can
 * really start a WASM task (its worker is a separate file that the bundle must find next to itself).
 *
 * Run: node --test apps/desktop/test/build.test.ts
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { buildMain, buildNodeBundle, buildRenderer } from '../build.ts';

const desktop = resolve(import.meta.dirname, '..');
const repoRoot = resolve(desktop, '../..');
let work: string;

describe('desktop build', { timeout: 60_000 }, () => {
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'meshrun-desktop-build-'));
    await buildRenderer();
    await buildMain();
  });
  after(() => rm(work, { recursive: true, force: true }));

  it('emits the renderer, main, preload and the WASM worker', () => {
    for (const file of [
      'dist/renderer/index.html',
      'dist/renderer/app.js',
      'dist/renderer/styles.css',
      'out/main.js',
      'out/preload.cjs',
      'out/wasm-worker.js',
    ]) {
      assert.ok(existsSync(join(desktop, file)), `${file} exists`);
    }
  });

  it('index.html has a strict CSP, no inline script and no remote content', async () => {
    const html = await readFile(join(desktop, 'dist/renderer/index.html'), 'utf8');
    const csp = /http-equiv="Content-Security-Policy"\s+content="([^"]+)"/.exec(html)?.[1] ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, 'every script has a src');
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'no remote resources');
    const js = await readFile(join(desktop, 'dist/renderer/app.js'), 'utf8');
    assert.doesNotMatch(js, /\binnerHTML\s*=|insertAdjacentHTML|document\.write/, 'no HTML parsing of data');
  });

  it('the preload exposes only window.meshrun and stays CommonJS', async () => {
    const preload = await readFile(join(desktop, 'out/preload.cjs'), 'utf8');
    assert.match(preload, /exposeInMainWorld\("meshrun"/);
    assert.doesNotMatch(preload, /^import /m);
  });

  it('the bundled node runs a WASM task through its bundled worker', async (t) => {
    const wasm = join(repoRoot, 'core/src/executors/testdata/hello.wat');
    const wat2wasm = await promisify(execFile)('wat2wasm', [wasm, '-o', join(work, 'hello.wasm')]).catch(
      () => null,
    );
    if (!wat2wasm) return t.skip('wat2wasm (wabt) is not installed');
    // The entry lives inside the package (out/ is git-ignored) so it resolves workspace packages like main.ts.
    const outDir = join(desktop, 'out', 'smoke');
    await mkdir(outDir, { recursive: true });
    const entry = join(outDir, 'wasm-smoke.ts');
    await writeFile(
      entry,
      `import { readFileSync } from 'node:fs';
import { WasmExecutor } from '@meshrun/core/executors/wasm.ts';
const out: string[] = [];
const result = await new WasmExecutor().run(
  { taskId: 'smoke', jobId: 'smoke', attempt: 0, executor: 'wasm', wasm: { module: new Uint8Array(readFileSync(process.argv[2])) },
    resources: { cpus: 1, memoryBytes: 16 * 1024 * 1024 }, timeoutMs: 10_000 },
  { policy: { allowNetwork: false, allowGpu: false, allowedExecutors: ['wasm'], maxMemoryBytes: 64 * 1024 * 1024, maxCpus: 1, maxPids: 16, scratchBytes: 1024 * 1024 },
    onEvent: (e) => { if (e.type === 'output') out.push(Buffer.from(e.data).toString('utf8')); } },
);
console.log(JSON.stringify({ outcome: result.outcome, exitCode: result.exitCode, reason: result.reason, out: out.join('') }));
`,
    );
    await buildNodeBundle(entry, outDir, 'wasm-smoke.js');
    try {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [join(outDir, 'wasm-smoke.js'), join(work, 'hello.wasm')],
        {
          timeout: 30_000,
        },
      );
      const result = JSON.parse(stdout.trim().split('\n').pop()!);
      assert.equal(result.outcome, 'exited', result.reason);
      assert.equal(result.exitCode, 0);
      assert.match(result.out, /hello stdout/);
    } finally {
      await rm(outDir, { recursive: true, force: true });
    }
  });
});
