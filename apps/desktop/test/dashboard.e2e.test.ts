/**
 * End-to-end: the dashboard renderer in Debian's Chromium (playwright-core) against a REAL meshrun daemon.
 *
 * Starts `meshrun daemon` on loopback with a fresh data dir and cluster key, opens the dashboard URL it prints,
 * and checks from the outside (the node's API, and `meshrun nodes --json`) that what the UI does really
 * happened: the contribute switch pauses/resumes the node, preferences change its advertised capacity, and
 * the API refuses requests without the token. Screenshots of every view go to test-artifacts/desktop/.
 *
 * Run: node --test apps/desktop/test/dashboard.e2e.test.ts   (from the repo root; needs /usr/bin/chromium)
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { type BrowserContext, chromium, type Page } from 'playwright-core';

const execFileAsync = promisify(execFile);
const repoRoot = resolve(import.meta.dirname, '../../..');
const desktopDir = resolve(import.meta.dirname, '..');
/** The CLI under test; overridable only to point at another build of the same CLI. */
const meshrunBin = process.env.MESHRUN_BIN ?? join(repoRoot, 'apps/headless/bin/meshrun.js');
const nodeBin = process.execPath;
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const artifacts = join(repoRoot, 'test-artifacts/desktop');
const DAEMON_START_TIMEOUT_MS = 45_000;
/** Bound on daemon output kept for failure diagnostics. */
const MAX_OUTPUT_LINES = 300;

const skip = !existsSync(chromiumPath)
  ? `no Chromium at ${chromiumPath}`
  : !existsSync(meshrunBin)
    ? `no meshrun CLI at ${meshrunBin}`
    : false;

interface Daemon {
  process: ChildProcess;
  url: string;
  origin: string;
  token: string;
  dataDir: string;
  output: string[];
}

let workDir: string;
let daemon: Daemon;
let browser: BrowserContext;
let page: Page;
const pageErrors: string[] = [];

async function startDaemon(): Promise<Daemon> {
  const keyFile = join(workDir, 'cluster.key');
  const dataDir = join(workDir, 'data');
  await execFileAsync(nodeBin, [meshrunBin, 'keygen', keyFile], { timeout: 20_000 });
  const child = spawn(
    nodeBin,
    [
      meshrunBin,
      'daemon',
      '--data-dir',
      dataDir,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--api',
      '127.0.0.1:0',
      '--cluster-key',
      keyFile,
      '--no-mdns',
      // A one-node cluster: with the default of 3 voters a lone node waits for peers and never takes jobs.
      '--voters',
      '1',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } },
  );
  const output: string[] = [];
  return await new Promise<Daemon>((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      reject(
        new Error(
          `daemon printed no dashboard URL within ${DAEMON_START_TIMEOUT_MS} ms:\n${output.join('\n')}`,
        ),
      );
    }, DAEMON_START_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        output.push(line);
        if (output.length > MAX_OUTPUT_LINES) output.shift();
        const match = /dashboard: (http:\/\/127\.0\.0\.1:\d+)\/\?token=([A-Za-z0-9_\-.~%]+)/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolvePromise({
            process: child,
            url: `${match[1]}/?token=${match[2]}`,
            origin: match[1],
            token: decodeURIComponent(match[2]),
            dataDir,
            output,
          });
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(
        new Error(`daemon exited with ${code} before printing the dashboard URL:\n${output.join('\n')}`),
      );
    });
  });
}

async function stopDaemon(d: Daemon | undefined): Promise<void> {
  if (!d || d.process.exitCode !== null) return;
  const exited = new Promise((r) => d.process.once('exit', r));
  d.process.kill('SIGTERM');
  const timeout = setTimeout(() => d.process.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timeout);
}

/** Call the node's API from outside the browser, like any other client would. */
async function rpc<T = unknown>(
  method: string,
  params: unknown = {},
  token: string | null = daemon.token,
): Promise<T> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${daemon.origin}/api/rpc`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ method, params }),
  });
  assert.equal(res.status, 200, `${method}: HTTP ${res.status}`);
  const body = (await res.json()) as { ok: boolean; result?: T; error?: { message: string } };
  assert.equal(body.ok, true, `${method}: ${body.error?.message}`);
  return body.result as T;
}

interface Offered {
  cpus: number;
  memoryBytes: number;
  executors: string[];
}
interface Status {
  peerId: string;
  mode: string;
  contributing: boolean;
  offered: Offered;
}
interface NodeAd {
  peerId: string;
  mode: string;
  offered: Offered;
}

/** This node's advertisement as `meshrun nodes --json` reports it (the CLI finds the API via the data dir). */
async function ownNodeViaCli(peerId: string): Promise<NodeAd | undefined> {
  const { stdout } = await execFileAsync(
    nodeBin,
    [meshrunBin, 'nodes', '--json', '--data-dir', daemon.dataDir],
    {
      timeout: 20_000,
    },
  );
  const nodes = JSON.parse(stdout) as NodeAd[];
  return nodes.find((n) => n.peerId === peerId);
}

/** Poll a condition with a bound (the node applies changes asynchronously). */
async function eventually<T>(
  what: string,
  probe: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    try {
      last = await probe();
      if (ok(last)) return last;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 1000)));
  }
  assert.fail(
    `${what}: not reached within ${timeoutMs} ms; last value ${JSON.stringify(last)} ${lastError ?? ''}`,
  );
}

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

async function openView(id: string): Promise<void> {
  await page.click(`#tab-${id}`);
  await page.waitForSelector(`#view-${id}:not([hidden])`);
}

describe('desktop dashboard against a real daemon', { skip, timeout: 120_000 }, () => {
  before(async () => {
    const build = spawnSync(nodeBin, [join(desktopDir, 'build.ts'), '--only=renderer'], { encoding: 'utf8' });
    assert.equal(build.status, 0, `renderer build failed: ${build.stderr}`);
    await mkdir(artifacts, { recursive: true });
    workDir = await mkdtemp(join(tmpdir(), 'meshrun-desktop-e2e-'));
    daemon = await startDaemon();
    // A fresh profile per run (playwright takes the user-data-dir as a parameter, not as an argument).
    browser = await chromium.launchPersistentContext(join(workDir, 'chromium-profile'), {
      executablePath: chromiumPath,
      viewport: { width: 1280, height: 860 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.setDefaultTimeout(10_000);
    page.on('console', (msg) => {
      // Failed HTTP responses are reported below with their URL and RPC method, which the console omits.
      if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource'))
        pageErrors.push(msg.text());
    });
    page.on('response', (response) => {
      if (response.status() < 400) return;
      const body = response.request().postData() ?? '';
      const method = /"method":"([^"]+)"/.exec(body)?.[1];
      pageErrors.push(
        `HTTP ${response.status()} ${new URL(response.url()).pathname}${method ? ` (${method})` : ''}`,
      );
    });
    page.on('pageerror', (err) => pageErrors.push(String(err)));
  });

  after(async () => {
    await browser?.close();
    await stopDaemon(daemon);
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it('refuses API requests without the token or with a wrong one', async () => {
    const noToken = await fetch(`${daemon.origin}/api/rpc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ method: 'status', params: {} }),
    });
    assert.equal(noToken.status, 401);
    const wrong = await fetch(`${daemon.origin}/api/rpc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer not-the-token' },
      body: JSON.stringify({ method: 'status', params: {} }),
    });
    assert.equal(wrong.status, 401);
    const events = await fetch(`${daemon.origin}/api/events`);
    assert.equal(events.status, 401);
    await events.body?.cancel();
  });

  it('opens the dashboard, hides the token from the address bar and shows live status', async () => {
    await page.goto(daemon.url);
    await page.waitForSelector('#connection.ok', { timeout: 15_000 });
    assert.doesNotMatch(page.url(), /token=/, 'token must be removed from the address bar');
    const stored = await page.evaluate(() => sessionStorage.getItem('meshrun.token'));
    assert.equal(stored, daemon.token);
    const status = await rpc<Status>('status');
    await page.locator('#view-status').getByText(status.peerId).first().waitFor();
    await page.waitForSelector('#contribute-switch[data-state="on"]');
    await shot('status');
  });

  it('the contribute switch pauses the node (finish current tasks) and resumes it', async () => {
    await page.click('#contribute-switch');
    await page.waitForSelector('#pause-dialog[open]');
    assert.equal(await page.inputValue('#snooze'), String(60 * 60 * 1000), 'snooze defaults to 1 h');
    await shot('pause-dialog');
    await page.click('#pause-finish');
    const paused = await eventually(
      'node paused via API',
      () => rpc<Status>('status'),
      (s) => s.mode !== 'active' && !s.contributing,
    );
    assert.match(paused.mode, /^(paused|draining)$/);
    const viaCli = await eventually(
      'node paused in `meshrun nodes --json`',
      () => ownNodeViaCli(paused.peerId),
      (n) => n !== undefined && n.mode !== 'active',
    );
    assert.notEqual(viaCli?.mode, 'active');
    await page.waitForSelector(
      '#contribute-switch[data-state="off"], #contribute-switch[data-state="draining"]',
    );
    // The status view says why: the node's pausedReason, live from the event stream.
    await page.locator('#paused-reason', { hasText: /snooze/i }).waitFor();
    await shot('paused');

    await page.click('#contribute-switch');
    await eventually(
      'node resumed via API',
      () => rpc<Status>('status'),
      (s) => s.mode === 'active',
    );
    await page.waitForSelector('#contribute-switch[data-state="on"]');
  });

  it('a running task shows up with live logs, then in the history', async () => {
    const marker = `e2e-${Date.now()}`;
    const { stdout } = await execFileAsync(
      nodeBin,
      [
        meshrunBin,
        'run',
        '--data-dir',
        daemon.dataDir,
        '--detach',
        '--name',
        marker,
        '--cpus',
        '0.5',
        '--memory',
        '64M',
        'meshrun-test/busybox:1',
        '--',
        'sh',
        '-c',
        `for i in 1 2 3 4 5 6; do echo ${marker}-line-$i; sleep 1; done`,
      ],
      { timeout: 30_000 },
    );
    assert.ok(stdout.trim().length > 0, 'run --detach prints the job id');
    await openView('tasks');
    await page.locator('#tasks-table tr[data-task]', { hasText: marker }).waitFor({ timeout: 30_000 });
    await page.locator('#log-output', { hasText: `${marker}-line-` }).waitFor({ timeout: 20_000 });
    await shot('tasks-running');
    await openView('history');
    await eventually(
      'finished task in the history view',
      async () => ((await page.locator('#history-table tbody').textContent()) ?? '').includes(marker),
      (seen) => seen,
      30_000,
    );
    await shot('history');
  });

  it('"Stop now" stops a running task at once', async (t) => {
    const marker = `e2e-stop-${Date.now()}`;
    const { stdout } = await execFileAsync(
      nodeBin,
      [
        meshrunBin,
        'run',
        '--data-dir',
        daemon.dataDir,
        '--detach',
        '--name',
        marker,
        '--cpus',
        '0.5',
        '--memory',
        '64M',
        'meshrun-test/busybox:1',
        '--',
        'sh',
        '-c',
        'while true; do echo still-running; sleep 1; done',
      ],
      { timeout: 30_000 },
    );
    const jobId = stdout.trim().split(/\s+/).pop()!;
    await openView('tasks');
    await page.locator('#tasks-table tr[data-task]', { hasText: marker }).waitFor({ timeout: 30_000 });

    await page.click('#contribute-switch');
    await page.waitForSelector('#pause-dialog[open]');
    await page.selectOption('#snooze', ''); // until I resume
    await page.click('#pause-now');
    await eventually(
      'task stopped on this node',
      () => rpc<unknown[]>('tasks.local'),
      (tasks) => tasks.length === 0,
    );
    // The view learns it only from the event stream (no polling), so it needs the node to announce the end.
    await t.test('the running-tasks view drops the stopped task', async () => {
      await page.waitForFunction(
        () => document.querySelectorAll('#tasks-table tr[data-task]').length === 0,
        undefined,
        { timeout: 5_000 },
      );
    });
    assert.notEqual((await rpc<Status>('status')).mode, 'active');

    // So it does not come back after resume (it may already have ended as failed: then cancel is refused).
    await execFileAsync(nodeBin, [meshrunBin, 'cancel', jobId, '--data-dir', daemon.dataDir], {
      timeout: 20_000,
    }).catch(() => undefined);
    await page.click('#contribute-switch');
    await eventually(
      'resumed',
      () => rpc<Status>('status'),
      (s) => s.mode === 'active',
    );
  });

  it('saving preferences changes the capacity the node advertises', async () => {
    const before = await rpc<Status>('status');
    await openView('preferences');
    await page.waitForSelector('input[name="cpu.inUsePercent"]');
    await page.fill('input[name="cpu.inUsePercent"]', '5');
    await page.fill('input[name="cpu.idlePercent"]', '5');
    await page.fill('input[name="memory.inUsePercent"]', '5');
    await page.fill('input[name="memory.idlePercent"]', '5');
    await page.uncheck('input[name="executors.docker"]');
    await shot('preferences');
    await page.click('#preferences-save');
    await page.waitForSelector('#preferences-message.ok');

    const saved = await rpc<{ cpu: { idlePercent: number }; executors: { docker: boolean } }>(
      'preferences.get',
    );
    assert.equal(saved.cpu.idlePercent, 5);
    assert.equal(saved.executors.docker, false);
    const advertised = await eventually(
      'smaller capacity advertised in `nodes`',
      async () => (await rpc<NodeAd[]>('nodes')).find((n) => n.peerId === before.peerId),
      (n) =>
        n !== undefined && !n.offered.executors.includes('docker') && n.offered.cpus < before.offered.cpus,
    );
    assert.ok(advertised!.offered.memoryBytes < before.offered.memoryBytes, 'memory offer shrinks too');

    // An invalid value is refused in the form and never reaches the node.
    await page.fill('input[name="cpu.idlePercent"]', '150');
    await page.click('#preferences-save');
    await page.waitForSelector('#preferences-message.error');
    assert.equal((await rpc<{ cpu: { idlePercent: number } }>('preferences.get')).cpu.idlePercent, 5);
  });

  it('every view renders; screenshots in light and dark themes', async () => {
    for (const id of ['tasks', 'history', 'nodes', 'stats', 'events']) {
      await openView(id);
      await page.waitForLoadState('networkidle');
      await shot(id);
    }
    await page.waitForSelector('#nodes-list .card, #view-nodes .empty', { state: 'attached' });
    await page.evaluate(() => {
      localStorage.setItem('meshrun.theme', 'dark');
    });
    await page.click('#theme-toggle'); // system → dark
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark');
    await openView('status');
    await shot('status-dark');
  });

  it('the event log filters by level and text', async () => {
    await openView('events');
    // The pause/resume above left "node paused…" and "node active" events (level info).
    const items = page.locator('#events-list li.event');
    await items.first().waitFor();
    await page.fill('#events-search', 'PAUSED');
    // Search is debounced: wait until only matching events are listed (case-insensitive).
    await page.waitForFunction(() => {
      const shown = [...document.querySelectorAll('#events-list li.event')];
      return shown.length > 0 && shown.every((li) => li.textContent?.toLowerCase().includes('paused'));
    });
    await page.fill('#events-search', 'zz-no-such-event-zz');
    await page.waitForSelector('#events-list li.empty');
    await page.fill('#events-search', '');
    await items.first().waitFor();
    await page.uncheck('input[name="level-info"]');
    await page.waitForSelector('#events-list li.empty');
    assert.equal(await page.locator('#events-list li.level-info').count(), 0);
    await page.check('input[name="level-info"]');
    await items.first().waitFor();
  });

  it('the same renderer works through the Electron preload API (window.meshrun)', async () => {
    // Stand in for preload.ts: the IPC transport is replaced by calls to the real daemon from the page.
    const electronPage = await browser.newPage();
    await electronPage.addInitScript(
      ({ token }) => {
        const api = {
          call: async (method: string, params: unknown) => {
            const res = await fetch('/api/rpc', {
              method: 'POST',
              headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
              body: JSON.stringify({ method, params }),
            });
            return res.json();
          },
          subscribe: (handler: (e: unknown) => void) => {
            const source = new EventSource(`/api/events?token=${token}`);
            for (const type of ['status', 'task', 'log', 'event']) {
              source.addEventListener(type, (m) =>
                handler({ type, data: JSON.parse((m as MessageEvent).data) }),
              );
            }
            handler({ type: 'connection', data: { connected: true } });
            return () => source.close();
          },
        };
        Object.defineProperty(window, 'meshrun', { value: Object.freeze(api) });
      },
      { token: daemon.token },
    );
    try {
      await electronPage.goto(`${daemon.origin}/`); // no token in the URL: the preload API is the transport
      const status = await rpc<Status>('status');
      await electronPage.locator('#view-status').getByText(status.peerId).first().waitFor();
      await electronPage.waitForSelector('#contribute-switch[data-state="on"]');
      await electronPage.click('#tab-preferences');
      // Desktop-only settings appear only in the app.
      await electronPage.waitForSelector('input[name="startAtLogin"]');
      assert.equal(await electronPage.evaluate(() => sessionStorage.getItem('meshrun.token')), null);
    } finally {
      await electronPage.close();
    }
  });

  it('first run of the app: a setup page asks for the cluster key', async () => {
    const setupPage = await browser.newPage();
    await setupPage.addInitScript(() => {
      const api = {
        call: async (method: string) =>
          method === 'app.importClusterKey'
            ? { ok: false, error: { code: 'CANCELLED', message: 'no file chosen' } }
            : {
                ok: false,
                error: { code: 'SETUP_REQUIRED', message: 'meshrun needs the network cluster key' },
              },
        subscribe: () => () => {},
      };
      Object.defineProperty(window, 'meshrun', { value: Object.freeze(api) });
    });
    try {
      await setupPage.goto(`${daemon.origin}/`);
      await setupPage.waitForSelector('#choose-cluster-key');
      await setupPage.locator('main.setup', { hasText: 'cluster key' }).waitFor();
      await setupPage.click('#choose-cluster-key');
      await setupPage.locator('#setup-status', { hasText: 'no file chosen' }).waitFor();
      await setupPage.screenshot({ path: join(artifacts, 'setup.png') });
    } finally {
      await setupPage.close();
    }
  });

  it('the page raised no errors, failed requests or CSP violations', () => {
    assert.deepEqual(pageErrors, []);
  });
});
