/**
 * The Electron main process (src/main/main.ts) run under Node with a fake `electron` module (the binary
 * cannot be downloaded here) but with everything else real: the embedded meshrun node, the preferences file,
 * systeminformation, the rules loop. Checks the window's security settings, IPC trust, that preferences and
 * the idle rules really change what the node offers and whether it works, pause/snooze/resume, what closing
 * the window does, and that quitting stops the node.
 *
 * Run: node --test apps/desktop/test/main-process.test.ts
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { register } from 'node:module';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { defaultPreferences, type Preferences } from '../src/main/preferences.ts';
import { shareOfCores } from '../src/main/rules.ts';
import type { NodeStatus } from '../src/shared/api.ts';

const repoRoot = resolve(import.meta.dirname, '../../..');
const meshrunBin = join(repoRoot, 'apps/headless/bin/meshrun.js');
const fakeUrl = new URL('./fake-electron.ts', import.meta.url).href;
const trustedUrl = pathToFileURL(resolve(import.meta.dirname, '../dist/renderer/index.html')).href;
/** Slightly more than main.ts's RULES_INTERVAL_MS, so "eventually" covers a rules tick. */
const RULES_TICK_MS = 3_500;

type Fake = typeof import('./fake-electron.ts');
let electron: Fake;
let userData: string;

interface Reply<T = unknown> {
  ok: boolean;
  result?: T;
  error?: { code: string; message: string };
}

async function ipc<T = unknown>(
  method: string,
  params: unknown = {},
  senderUrl = trustedUrl,
): Promise<Reply<T>> {
  const handler = electron.fake.handlers.get('meshrun:rpc');
  assert.ok(handler, 'main process registered its IPC handler');
  return (await handler({ senderFrame: { url: senderUrl } }, method, params)) as Reply<T>;
}

async function status(): Promise<NodeStatus> {
  const reply = await ipc<NodeStatus>('status');
  assert.equal(reply.ok, true, reply.error?.message);
  return reply.result!;
}

async function eventually<T>(
  what: string,
  probe: () => Promise<T> | T,
  ok: (v: T) => boolean,
  timeoutMs = 4 * RULES_TICK_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  while (Date.now() < deadline) {
    last = await probe();
    if (ok(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what}: not reached within ${timeoutMs} ms; last ${JSON.stringify(last)}`);
}

async function savedPrefs(): Promise<Preferences> {
  return JSON.parse(await readFile(join(userData, 'preferences.json'), 'utf8')) as Preferences;
}

async function setPrefs(change: (p: Preferences) => void): Promise<Preferences> {
  const current = await ipc<Preferences>('preferences.get');
  const next = structuredClone(current.result!);
  change(next);
  const reply = await ipc('preferences.set', { prefs: next });
  assert.equal(reply.ok, true, reply.error?.message);
  return next;
}

describe('Electron main process (fake electron, real node)', {
  timeout: 90_000,
  skip: !existsSync(meshrunBin) && 'no meshrun CLI',
}, () => {
  before(async () => {
    userData = await mkdtemp(join(tmpdir(), 'meshrun-desktop-main-'));
    await promisify(execFile)(process.execPath, [meshrunBin, 'keygen', join(userData, 'cluster.key')], {
      timeout: 20_000,
    });
    const prefs = defaultPreferences();
    prefs.resumeGraceSeconds = 0; // the grace period has its own unit tests; here it would only slow things down
    await writeFile(join(userData, 'preferences.json'), JSON.stringify(prefs));
    process.env.MESHRUN_MDNS = 'false';
    process.env.MESHRUN_LISTEN = '/ip4/127.0.0.1/tcp/0';
    process.env.MESHRUN_LOG_LEVEL = 'warn';
    delete process.env.MESHRUN_CLUSTER_KEY;
    register(new URL('./electron-hooks.ts', import.meta.url), { data: { fakeUrl } });
    electron = (await import(fakeUrl)) as Fake;
    electron.fake.userData = userData;
    electron.fake.idleSeconds = 0;
    // MESHRUN_DESKTOP_MAIN=out/main.js runs the same checks against the esbuild bundle.
    await import(
      process.env.MESHRUN_DESKTOP_MAIN
        ? pathToFileURL(resolve(process.env.MESHRUN_DESKTOP_MAIN)).href
        : '../src/main/main.ts'
    );
    await eventually(
      'main process started',
      () => electron.fake.handlers.size + electron.fake.errorBoxes.length,
      (n) => n > 0,
      30_000,
    );
    assert.deepEqual(electron.fake.errorBoxes, []);
  });

  after(async () => {
    if (electron && electron.fake.exitCode === null) electron.app.quit();
    if (electron)
      await eventually(
        'app exited',
        () => electron.fake.exitCode,
        (c) => c !== null,
        20_000,
      ).catch(() => undefined);
    await rm(userData, { recursive: true, force: true });
  });

  it('opens a sandboxed, context-isolated window on the built renderer, and a tray', () => {
    const win = electron.fake.windows[0];
    assert.ok(win, 'a window was created');
    const prefs = win.options.webPreferences as Record<string, unknown>;
    assert.equal(prefs.contextIsolation, true);
    assert.equal(prefs.nodeIntegration, false);
    assert.equal(prefs.sandbox, true);
    assert.equal(prefs.webSecurity, true);
    assert.match(String(prefs.preload), /out[/\\]preload\.cjs$|main[/\\]preload\.cjs$/);
    assert.match(String(win.loadedFile), /dist[/\\]renderer[/\\]index\.html$/);
    assert.equal(electron.fake.trays.length, 1);
    assert.deepEqual(
      electron.fake.loginItem,
      { openAtLogin: false, args: ['--hidden'] },
      'start at login is opt-in',
    );
  });

  it('answers IPC only from its own renderer', async () => {
    const evil = await ipc('status', {}, 'https://evil.example/');
    assert.equal(evil.ok, false);
    assert.equal(evil.error?.code, 'FORBIDDEN');
    const s = await status();
    assert.match(s.peerId, /^12D3KooW/);
  });

  it('saved preferences change what the node offers (in-use share while the user is active)', async () => {
    await setPrefs((p) => {
      p.cpu.inUsePercent = 50;
      p.executors.docker = false;
    });
    const cores = cpus().length;
    const s = await eventually('offer applied', status, (x) => x.offered.cpus === shareOfCores(cores, 50));
    assert.deepEqual(s.offered.executors, ['wasm']);
    assert.equal((await savedPrefs()).cpu.inUsePercent, 50, 'persisted in the app-data dir');
  });

  it('idle-only: the rules pause the node while the user is active and resume it when idle', async () => {
    await setPrefs((p) => {
      p.idle = { onlyWhenIdle: true, idleMinutes: 5 };
    });
    const paused = await eventually('paused by rules', status, (x) => x.mode !== 'active');
    assert.equal(paused.contributing, false);
    assert.match(electron.fake.trays[0].tooltip, /using the computer/);

    electron.fake.idleSeconds = 3600;
    const cores = cpus().length;
    const resumed = await eventually('resumed when idle', status, (x) => x.mode === 'active');
    await eventually('idle share offered', status, (x) => x.offered.cpus === shareOfCores(cores, 75));
    assert.equal(resumed.contributing, true);

    electron.fake.idleSeconds = 1; // the user is back: yield within one rules tick
    const started = Date.now();
    await eventually('yielded on return', status, (x) => x.mode !== 'active');
    assert.ok(Date.now() - started <= 2 * RULES_TICK_MS, 'yields within seconds');
    await setPrefs((p) => {
      p.idle.onlyWhenIdle = false;
    });
    await eventually('back to contributing', status, (x) => x.mode === 'active');
  });

  it('a snoozed pause holds against the rules until resumed', async () => {
    const reply = await ipc('node.pause', { mode: 'finish', snoozeMs: 3_600_000 });
    assert.equal(reply.ok, true, reply.error?.message);
    assert.ok(((await savedPrefs()).snoozeUntil ?? 0) > Date.now());
    await eventually('paused', status, (x) => x.mode !== 'active');
    await new Promise((r) => setTimeout(r, RULES_TICK_MS));
    assert.notEqual((await status()).mode, 'active', 'the rules did not lift the snooze');
    const contributeItem = electron.fake.trays[0].menu.find((i) => i.label === 'Contribute');
    assert.equal(contributeItem?.checked, false, 'the tray switch shows paused');

    assert.equal((await ipc('node.resume')).ok, true);
    await eventually('resumed', status, (x) => x.mode === 'active');
    assert.equal((await savedPrefs()).snoozeUntil, null);
  });

  it('closing the window asks, then keeps running in the tray', async () => {
    electron.fake.messageBoxResponse = { response: 0, checkboxChecked: true };
    const win = electron.fake.windows[0];
    win.userClose();
    await eventually('choice saved', savedPrefs, (p) => p.askOnClose === false);
    assert.equal(win.isDestroyed(), false);
    assert.equal(win.visible, false, 'hidden, not closed');
    assert.equal((await status()).mode, 'active', 'the node keeps running');
  });

  it('quitting stops the node and exits cleanly', async () => {
    const api = JSON.parse(await readFile(join(userData, 'node', 'api.json'), 'utf8')) as { url: string };
    assert.equal((await fetch(`${api.url}/healthz`)).status, 200);
    electron.app.quit();
    await eventually(
      'exited',
      () => electron.fake.exitCode,
      (c) => c !== null,
      20_000,
    );
    assert.equal(electron.fake.exitCode, 0);
    await assert.rejects(fetch(`${api.url}/healthz`), 'the node API is closed');
  });
});
