/**
 * Dashboard entry point. Picks the transport (Electron preload if present, else HTTP with the URL token),
 * subscribes once to the node's event stream and renders the views. Views load their data when shown and
 * then live off the event stream: there is no polling loop.
 */
import { type Bridge, RpcError } from '../shared/api.ts';
import { AppContext, type View } from './context.ts';
import { contributeSwitch } from './contribute.ts';
import { h, replaceChildren } from './dom.ts';
import { ElectronBridge, preloadApi } from './electron-bridge.ts';
import { applyTheme, nextTheme, storedTheme } from './theme.ts';
import { eventsView } from './views/events.ts';
import { historyView } from './views/history.ts';
import { nodesView } from './views/nodes.ts';
import { preferencesView } from './views/preferences.ts';
import { statsView } from './views/stats.ts';
import { statusView } from './views/status.ts';
import { tasksView } from './views/tasks.ts';
import { takeToken, WebBridge } from './web-bridge.ts';

/** Bound on simultaneously visible toasts. */
const MAX_TOASTS = 4;
const TOAST_MS = 6000;

function createBridge(): Bridge | null {
  const api = preloadApi();
  if (api) return new ElectronBridge(api);
  const token = takeToken();
  return token ? new WebBridge(token) : null;
}

/** First run of the desktop app: the node cannot start before the volunteer gives the network's cluster key. */
function renderSetup(root: HTMLElement, bridge: Bridge, message: string): void {
  const status = h('p', { id: 'setup-status', role: 'status' });
  const choose = h('button', { id: 'choose-cluster-key', class: 'primary' }, 'Choose cluster key file…');
  choose.addEventListener('click', async () => {
    try {
      await bridge.call('app.importClusterKey');
      replaceChildren(status, 'Key saved. meshrun restarts and joins the network…');
      choose.disabled = true;
    } catch (err) {
      replaceChildren(status, (err as Error).message);
    }
  });
  replaceChildren(
    root,
    h(
      'main',
      { class: 'setup' },
      h('h1', null, 'Welcome to meshrun'),
      h(
        'p',
        null,
        'meshrun lends spare time of this computer to a network of volunteers. You stay in control: pause any time, and choose how much it may use.',
      ),
      h('p', null, message),
      choose,
      status,
    ),
  );
}

async function main(): Promise<void> {
  applyTheme(storedTheme());
  const root = document.getElementById('app')!;
  const bridge = createBridge();
  if (!bridge) {
    replaceChildren(
      root,
      h(
        'main',
        { class: 'no-token' },
        h('h1', null, 'meshrun'),
        h(
          'p',
          null,
          'Open the dashboard with the link the node printed at start-up (it contains the access token).',
        ),
      ),
    );
    return;
  }

  if (bridge.host === 'electron') {
    try {
      await bridge.call('status');
    } catch (err) {
      if (err instanceof RpcError && err.code === 'SETUP_REQUIRED') {
        renderSetup(root, bridge, err.message);
        return;
      }
    }
  }

  const toasts = h('div', { class: 'toasts', role: 'alert' });
  const toast = (message: string, level: 'info' | 'error') => {
    const el = h('div', { class: `toast ${level}` }, message);
    toasts.append(el);
    while (toasts.children.length > MAX_TOASTS) toasts.firstElementChild?.remove();
    setTimeout(() => el.remove(), TOAST_MS);
  };
  const ctx = new AppContext(bridge, toast);

  const views: View[] = [
    statusView(ctx),
    tasksView(ctx),
    historyView(ctx),
    nodesView(ctx),
    statsView(ctx),
    eventsView(ctx),
    preferencesView(ctx),
  ];
  const nav = h('nav', { class: 'tabs', role: 'tablist' });
  const content = h('main', { id: 'content' });
  for (const view of views) {
    view.element.hidden = true;
    content.append(view.element);
    nav.append(
      h('a', { href: `#${view.id}`, role: 'tab', id: `tab-${view.id}`, 'data-view': view.id }, view.title),
    );
  }

  const showFromHash = () => {
    const id = location.hash.slice(1) || 'status';
    const active = views.find((v) => v.id === id) ?? views[0];
    for (const view of views) view.element.hidden = view !== active;
    for (const tab of nav.children)
      tab.setAttribute('aria-selected', String((tab as HTMLElement).dataset.view === active.id));
    document.title = `meshrun · ${active.title}`;
    active.show();
  };
  window.addEventListener('hashchange', showFromHash);

  const connection = h(
    'span',
    { id: 'connection', class: 'connection', title: 'live connection to the node' },
    'connecting',
  );
  let wasConnected = false;
  let everConnected = false;
  ctx.on('connection', ({ connected }) => {
    connection.className = `connection ${connected ? 'ok' : 'bad'}`;
    replaceChildren(connection, connected ? 'live' : 'reconnecting…');
    // Events sent while we were away are lost: reload the visible view once the stream is back.
    if (connected && !wasConnected && everConnected) showFromHash();
    wasConnected = connected;
    everConnected ||= connected;
  });
  ctx.on('event', (e) => {
    if (e.level === 'error') toast(e.msg, 'error');
  });

  const themeButton = h('button', {
    id: 'theme-toggle',
    class: 'ghost',
    title: 'Theme: system → dark → light',
  });
  const renderThemeButton = () =>
    replaceChildren(themeButton, `Theme: ${document.documentElement.dataset.themeChoice}`);
  themeButton.addEventListener('click', () => {
    applyTheme(
      nextTheme((document.documentElement.dataset.themeChoice as 'system' | 'dark' | 'light') ?? 'system'),
    );
    renderThemeButton();
  });
  renderThemeButton();
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => applyTheme(storedTheme()));

  replaceChildren(
    root,
    h(
      'header',
      null,
      h('h1', null, 'meshrun'),
      contributeSwitch(ctx),
      h('div', { class: 'spacer' }),
      connection,
      themeButton,
    ),
    nav,
    content,
    toasts,
  );
  bridge.subscribe((event) => ctx.dispatch(event));
  showFromHash();
}

void main();
