/**
 * First run of the desktop app (no cluster key yet): the main process opens the window in setup mode instead
 * of failing, refuses node calls with SETUP_REQUIRED, rejects a file that is not a cluster key, and keeps a
 * valid one (owner-only) and restarts. Same fake `electron` as main-process.test.ts; its own process.
 *
 * Run: node --test apps/desktop/test/main-setup.test.ts
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { register } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const repoRoot = resolve(import.meta.dirname, '../../..');
const meshrunBin = join(repoRoot, 'apps/headless/bin/meshrun.js');
const fakeUrl = new URL('./fake-electron.ts', import.meta.url).href;
const trustedUrl = pathToFileURL(resolve(import.meta.dirname, '../dist/renderer/index.html')).href;

type Fake = typeof import('./fake-electron.ts');
let electron: Fake;
let work: string;
let userData: string;

async function ipc(method: string): Promise<{ ok: boolean; result?: unknown; error?: { code: string } }> {
  const handler = electron.fake.handlers.get('meshrun:rpc')!;
  return (await handler({ senderFrame: { url: trustedUrl } }, method, {})) as never;
}

async function until(what: string, ok: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('desktop first run without a cluster key', {
  timeout: 60_000,
  skip: !existsSync(meshrunBin) && 'no meshrun CLI',
}, () => {
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'meshrun-desktop-setup-'));
    userData = join(work, 'userData');
    delete process.env.MESHRUN_CLUSTER_KEY;
    register(new URL('./electron-hooks.ts', import.meta.url), { data: { fakeUrl } });
    electron = (await import(fakeUrl)) as Fake;
    electron.fake.userData = userData;
    await import('../src/main/main.ts');
    await until('IPC handler registered', () => electron.fake.handlers.size > 0);
  });
  after(() => rm(work, { recursive: true, force: true }));

  it('opens the window in setup mode; no node, no tray', async () => {
    assert.equal(electron.fake.windows.length, 1);
    assert.equal(electron.fake.trays.length, 0);
    assert.deepEqual(electron.fake.errorBoxes, []);
    const reply = await ipc('status');
    assert.equal(reply.ok, false);
    assert.equal(reply.error?.code, 'SETUP_REQUIRED');
  });

  it('rejects a file that is not a cluster key', async () => {
    const bad = join(work, 'not-a-key.txt');
    await writeFile(bad, 'hello');
    electron.fake.openDialogResult = { canceled: false, filePaths: [bad] };
    const reply = await ipc('app.importClusterKey');
    assert.equal(reply.error?.code, 'BAD_CLUSTER_KEY');
    assert.equal(existsSync(join(userData, 'cluster.key')), false);
  });

  it('keeps a valid key, owner-only, and restarts', async () => {
    const good = join(work, 'net.key');
    await promisify(execFile)(process.execPath, [meshrunBin, 'keygen', good], { timeout: 20_000 });
    electron.fake.openDialogResult = { canceled: false, filePaths: [good] };
    const reply = await ipc('app.importClusterKey');
    assert.equal(reply.ok, true);
    const kept = join(userData, 'cluster.key');
    assert.equal(await readFile(kept, 'utf8'), await readFile(good, 'utf8'));
    assert.equal((await stat(kept)).mode & 0o777, 0o600);
    await until('relaunched', () => electron.fake.relaunched && electron.fake.exitCode === 0);
  });
});
