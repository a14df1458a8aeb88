/**
 * The volunteer app's main process: runs the meshrun node in-process, applies the volunteer's rules to it,
 * shows the dashboard in a locked-down window and keeps a tray icon with the status and the contribute switch.
 *
 * Safety posture: the renderer is sandboxed with context isolation and no Node; it reaches the node only
 * through the preload's two functions; it may not navigate, open windows, load remote content or ask for
 * permissions. The machine always comes first: rules are re-evaluated every few seconds and stopping never
 * waits for a grace period.
 */

import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { readClusterKey } from '@meshrun/core/node/cluster-key.ts';
import {
  app,
  BrowserWindow,
  dialog,
  type IpcMainInvokeEvent,
  ipcMain,
  Menu,
  Notification,
  nativeImage,
  session,
  shell,
  Tray,
} from 'electron';
import { IPC_EVENT, IPC_RPC, type LiveEvent } from '../shared/api.ts';
import { DEFAULT_SNOOZE_MS } from '../shared/constants.ts';
import { type EmbeddedNode, type RpcReply, startEmbeddedNode } from './embedded-node.ts';
import { MachineSampler } from './machine-state.ts';
import { type NodeAction, type OfferLimits, planNodeActions } from './node-control.ts';
import {
  loadPreferences,
  mergePreferences,
  type Preferences,
  parsePreferences,
  savePreferences,
} from './preferences.ts';
import { type Decision, decide } from './rules.ts';
import { TRAY_ICON_CONTRIBUTING, TRAY_ICON_PAUSED } from './tray-icons.ts';

/** How often the rules run: short enough to yield "within seconds" of the user's return. */
export const RULES_INTERVAL_MS = 3_000;
/** Quitting waits at most this long for tasks to stop and the node to leave the cluster. */
export const QUIT_TIMEOUT_MS = 15_000;
/** At most one error notification per this interval, so a failing node cannot spam the desktop. */
export const ERROR_NOTIFICATION_INTERVAL_MS = 60_000;

const here = import.meta.dirname;
/** apps/desktop (or the packaged app root): main runs bundled from out/, or from src/main/ in tests. */
const appRoot = path.basename(here) === 'out' ? path.resolve(here, '..') : path.resolve(here, '../..');
const rendererDir = path.join(appRoot, 'dist/renderer');
const rendererIndex = path.join(rendererDir, 'index.html');
const rendererUrlPrefix = pathToFileURL(rendererDir).href;
const userData = app.getPath('userData');

let prefs: Preferences;
let node: EmbeddedNode | null = null;
let sampler: MachineSampler | null = null;
let mainWindow: BrowserWindow | null = null;
let tray: Tray | null = null;
let lastDecision: Decision | null = null;
let appliedLimits: OfferLimits | null = null;
let pausedByRules = false;
let rulesTimer: NodeJS.Timeout | null = null;
let rulesRunning = false;
let quitting = false;
let lastErrorNotification = 0;
/** True until the volunteer has given the network's cluster key (first run). */
let setupRequired = false;
const clusterKeyFile = process.env.MESHRUN_CLUSTER_KEY ?? path.join(userData, 'cluster.key');

// ---------- start-up ----------

if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  app.on('second-instance', () => showWindow());
  app
    .whenReady()
    .then(start)
    .catch((err: Error) => fatal('meshrun could not start', err));
}

async function start(): Promise<void> {
  lockDownSessions();
  await mkdir(userData, { recursive: true });
  const loaded = await loadPreferences(userData);
  prefs = loaded.prefs;
  if (loaded.problems.length > 0) {
    notifyError(`Some settings were invalid and were reset: ${loaded.problems.join(', ')}`);
  }
  applyLoginItem();

  if (!existsSync(clusterKeyFile)) {
    // First run: the window explains what is missing and lets the volunteer pick the key file.
    setupRequired = true;
    ipcMain.handle(IPC_RPC, handleRpc);
    showWindow();
    return;
  }
  try {
    node = await startEmbeddedNode({
      dataDir: path.join(userData, 'node'),
      clusterKeyFile,
      bootstrap: (process.env.MESHRUN_BOOTSTRAP ?? '').split(/[\s,]+/).filter(Boolean),
      dashboardDir: rendererDir,
    });
  } catch (err) {
    fatal('The meshrun node could not start', err as Error);
    return;
  }
  node.subscribe(forwardToRenderer);
  sampler = await MachineSampler.create();

  createTray();
  ipcMain.handle(IPC_RPC, handleRpc);
  if (!process.argv.includes('--hidden')) showWindow();
  await evaluateRules();
  rulesTimer = setInterval(() => void evaluateRules(), RULES_INTERVAL_MS);
}

function fatal(title: string, err: Error): void {
  dialog.showErrorBox(title, err.message);
  app.exit(1);
}

// ---------- security ----------

function lockDownSessions(): void {
  const ses = session.defaultSession;
  ses.setPermissionRequestHandler((_wc, _permission, callback) => callback(false));
  ses.setPermissionCheckHandler(() => false);
  // No remote content: the renderer's own files and devtools only.
  ses.webRequest.onBeforeRequest((details, callback) => {
    const allowed =
      details.url.startsWith(rendererUrlPrefix) ||
      details.url.startsWith('devtools://') ||
      details.url.startsWith('data:');
    callback({ cancel: !allowed });
  });
  app.on('web-contents-created', (_event, contents) => {
    contents.setWindowOpenHandler(({ url }) => {
      // Links to the outside world open in the user's browser, never inside the app.
      if (url.startsWith('https://')) void shell.openExternal(url);
      return { action: 'deny' };
    });
    contents.on('will-navigate', (event, url) => {
      if (!url.startsWith(rendererUrlPrefix)) event.preventDefault();
    });
    contents.on('will-attach-webview', (event) => event.preventDefault());
  });
}

function isTrustedSender(event: IpcMainInvokeEvent): boolean {
  const url = event.senderFrame?.url ?? '';
  return url.startsWith(rendererUrlPrefix);
}

// ---------- window & tray ----------

function showWindow(): void {
  if (mainWindow && !mainWindow.isDestroyed()) {
    mainWindow.show();
    mainWindow.focus();
    return;
  }
  mainWindow = new BrowserWindow({
    width: 1180,
    height: 820,
    minWidth: 720,
    minHeight: 480,
    title: 'meshrun',
    show: false,
    autoHideMenuBar: true,
    webPreferences: {
      preload: path.join(appRoot, 'out/preload.cjs'),
      contextIsolation: true,
      nodeIntegration: false,
      sandbox: true,
      webSecurity: true,
      allowRunningInsecureContent: false,
      spellcheck: false,
    },
  });
  mainWindow.once('ready-to-show', () => mainWindow?.show());
  mainWindow.webContents.on('did-finish-load', () => {
    mainWindow?.webContents.send(IPC_EVENT, {
      type: 'connection',
      data: { connected: node !== null },
    } satisfies LiveEvent);
  });
  mainWindow.on('close', (event) => {
    if (quitting) return;
    if (setupRequired) {
      app.quit(); // nothing runs yet, so closing the setup window simply quits
      return;
    }
    if (!prefs.askOnClose && !prefs.keepRunningOnClose) {
      app.quit();
      return;
    }
    // Decide after the dialog: the window stays until the volunteer has been told what closing does.
    event.preventDefault();
    if (!prefs.askOnClose) {
      mainWindow?.hide();
      return;
    }
    void askOnClose();
  });
  void mainWindow.loadFile(rendererIndex);
}

async function askOnClose(): Promise<void> {
  if (!mainWindow) return;
  const { response, checkboxChecked } = await dialog.showMessageBox(mainWindow, {
    type: 'question',
    buttons: ['Keep contributing in the background', 'Quit meshrun'],
    defaultId: prefs.keepRunningOnClose ? 0 : 1,
    cancelId: 0,
    title: 'Close meshrun?',
    message: 'Keep contributing after closing the window?',
    detail:
      'In the background meshrun keeps running tasks within your settings; the tray icon shows its status and ' +
      'pauses it. Quitting stops the running tasks and leaves the network cleanly.',
    checkboxLabel: "Don't ask again",
  });
  const keep = response === 0;
  await updatePreferences({ keepRunningOnClose: keep, askOnClose: !checkboxChecked });
  if (keep) mainWindow?.hide();
  else app.quit();
}

function createTray(): void {
  tray = new Tray(nativeImage.createFromDataURL(TRAY_ICON_PAUSED));
  tray.setToolTip('meshrun');
  tray.on('click', () => showWindow());
  updateTray();
}

function updateTray(): void {
  if (!tray) return;
  const contributing = node?.mode() === 'active' && lastDecision?.contribute === true;
  tray.setImage(nativeImage.createFromDataURL(contributing ? TRAY_ICON_CONTRIBUTING : TRAY_ICON_PAUSED));
  const status = lastDecision?.reason ?? 'Starting…';
  tray.setToolTip(`meshrun — ${status}`);
  tray.setContextMenu(
    Menu.buildFromTemplate([
      { label: status, enabled: false },
      { type: 'separator' },
      {
        label: 'Contribute',
        type: 'checkbox',
        checked: prefs.contribute && (prefs.snoozeUntil ?? 0) <= Date.now(),
        click: (item) => void (item.checked ? userResume() : userPause('finish', null)),
      },
      {
        label: 'Pause for 1 hour (finish current tasks)',
        click: () => void userPause('finish', DEFAULT_SNOOZE_MS),
      },
      { label: 'Stop tasks now', click: () => void userPause('now', null) },
      { type: 'separator' },
      { label: 'Open meshrun', click: () => showWindow() },
      {
        label: 'Open dashboard in browser',
        enabled: node !== null,
        click: () => node && void shell.openExternal(node.dashboardUrl),
      },
      { type: 'separator' },
      { label: 'Quit (stops tasks)', click: () => app.quit() },
    ]),
  );
}

// ---------- notifications (errors only) ----------

function notifyError(message: string): void {
  const now = Date.now();
  if (now - lastErrorNotification < ERROR_NOTIFICATION_INTERVAL_MS || !Notification.isSupported()) return;
  lastErrorNotification = now;
  new Notification({ title: 'meshrun', body: message.slice(0, 240) }).show();
}

function forwardToRenderer(event: LiveEvent): void {
  if (event.type === 'event' && event.data.level === 'error') notifyError(event.data.msg);
  if (event.type === 'status') updateTray();
  for (const win of BrowserWindow.getAllWindows()) {
    if (!win.isDestroyed()) win.webContents.send(IPC_EVENT, event);
  }
}

// ---------- preferences & user actions ----------

function applyLoginItem(): void {
  app.setLoginItemSettings({ openAtLogin: prefs.startAtLogin, args: ['--hidden'] });
}

async function updatePreferences(patch: Partial<Preferences>): Promise<void> {
  prefs = mergePreferences(prefs, patch);
  await savePreferences(userData, prefs);
  applyLoginItem();
  // Not forwarded to the node's own `preferences.set`: a headless node applies only the idle caps, while here
  // the rules decide the offer and pauses; two writers of the same limits would fight.
  await evaluateRules();
}

async function userPause(mode: 'finish' | 'now', snoozeMs: number | null): Promise<RpcReply> {
  // A snooze is a timed pause the rules lift by themselves; "until I resume" is the master switch.
  if (snoozeMs) await updatePreferences({ snoozeUntil: Date.now() + snoozeMs });
  else await updatePreferences({ contribute: false, snoozeUntil: null });
  const reply = await pauseNode(mode, snoozeMs ? 'Snoozed by you.' : 'Paused by you.');
  pausedByRules = snoozeMs !== null;
  updateTray();
  return reply;
}

async function userResume(): Promise<RpcReply> {
  await updatePreferences({ contribute: true, snoozeUntil: null });
  pausedByRules = false;
  const reply = await resumeNode();
  updateTray();
  return reply;
}

async function pauseNode(mode: 'finish' | 'now', reason: string): Promise<RpcReply> {
  if (!node) return { ok: false, error: { code: 'UNAVAILABLE', message: 'node not running' } };
  return node.pause(mode, reason);
}

async function resumeNode(): Promise<RpcReply> {
  if (!node) return { ok: false, error: { code: 'UNAVAILABLE', message: 'node not running' } };
  return node.resume();
}

async function handleRpc(event: IpcMainInvokeEvent, method: unknown, params: unknown): Promise<RpcReply> {
  if (!isTrustedSender(event))
    return { ok: false, error: { code: 'FORBIDDEN', message: 'untrusted sender' } };
  if (typeof method !== 'string' || method.length > 64) {
    return { ok: false, error: { code: 'BAD_REQUEST', message: 'method must be a short string' } };
  }
  const p = (params ?? {}) as Record<string, unknown>;
  if (setupRequired) return handleSetupRpc(method);
  try {
    switch (method) {
      case 'preferences.get':
        return { ok: true, result: prefs };
      case 'preferences.set': {
        const next = parsePreferences(p.prefs);
        await updatePreferences(next);
        return { ok: true, result: prefs };
      }
      case 'node.pause': {
        const mode = p.mode === 'now' ? 'now' : 'finish';
        const snoozeMs = typeof p.snoozeMs === 'number' && p.snoozeMs > 0 ? p.snoozeMs : null;
        return await userPause(mode, snoozeMs);
      }
      case 'node.resume':
        return await userResume();
      default:
        if (!node) return { ok: false, error: { code: 'UNAVAILABLE', message: 'node not running' } };
        return await node.call(method, p);
    }
  } catch (err) {
    return { ok: false, error: { code: 'BAD_REQUEST', message: (err as Error).message } };
  }
}

// ---------- first run: the cluster key ----------

async function handleSetupRpc(method: string): Promise<RpcReply> {
  if (method !== 'app.importClusterKey') {
    return {
      ok: false,
      error: {
        code: 'SETUP_REQUIRED',
        message: `meshrun needs the network's cluster key (ask the network's operator for the file); it will be kept at ${clusterKeyFile}`,
      },
    };
  }
  const choice = await dialog.showOpenDialog({
    title: "Choose the network's cluster key file",
    properties: ['openFile'],
  });
  if (choice.canceled || choice.filePaths.length === 0) {
    return { ok: false, error: { code: 'CANCELLED', message: 'no file chosen' } };
  }
  try {
    // Validate before keeping it: a wrong file would only fail later, deep inside the node's start.
    await readClusterKey(choice.filePaths[0]);
  } catch (err) {
    return { ok: false, error: { code: 'BAD_CLUSTER_KEY', message: (err as Error).message } };
  }
  await mkdir(path.dirname(clusterKeyFile), { recursive: true });
  await copyFile(choice.filePaths[0], clusterKeyFile);
  await chmod(clusterKeyFile, 0o600);
  // The node starts with the key on the next launch; restart now so the volunteer sees it connect.
  setTimeout(() => {
    app.relaunch();
    app.exit(0);
  }, 200);
  return { ok: true, result: { restarting: true } };
}

// ---------- the rules loop ----------

async function evaluateRules(): Promise<void> {
  if (rulesRunning || quitting || !node || !sampler) return; // bounded: one evaluation at a time
  rulesRunning = true;
  try {
    const machine = await sampler.sample(prefs.pauseWhilePrograms.length > 0);
    const decision = decide(prefs, machine, lastDecision);
    const actions = planNodeActions(decision, { nodeMode: node.mode(), pausedByRules, appliedLimits });
    for (const action of actions) await apply(action);
    const changed = lastDecision?.reason !== decision.reason;
    lastDecision = decision;
    if (changed || actions.length > 0) updateTray();
  } catch (err) {
    notifyError(`Checking the contribution rules failed: ${(err as Error).message}`);
  } finally {
    rulesRunning = false;
  }
}

async function apply(action: NodeAction): Promise<void> {
  if (!node) return;
  if (action.kind === 'limits') {
    node.setOfferLimits(action.limits);
    appliedLimits = action.limits;
  } else if (action.kind === 'pause') {
    const reply = await pauseNode(action.mode, action.reason);
    // Only a pause the user did not ask for is ours to lift later.
    if (reply.ok) pausedByRules = !(lastDecision?.reasonCode === 'paused-by-user');
  } else {
    const reply = await resumeNode();
    if (reply.ok) pausedByRules = false;
  }
}

// ---------- quitting ----------

app.on('window-all-closed', () => {
  // The tray keeps the app alive; quitting is explicit.
});

app.on('before-quit', (event) => {
  if (quitting) return;
  quitting = true;
  event.preventDefault();
  if (rulesTimer) clearInterval(rulesTimer);
  const stop = async () => {
    if (node) {
      await pauseNode('now', 'The volunteer quit meshrun.').catch(() => undefined);
      await node.stop();
    }
  };
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, QUIT_TIMEOUT_MS).unref());
  void Promise.race([stop(), timeout])
    .catch(() => undefined)
    .finally(() => {
      tray?.destroy();
      app.exit(0);
    });
});
