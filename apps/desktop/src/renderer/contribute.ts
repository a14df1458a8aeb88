/**
 * The one contribute/pause switch. Pausing always asks how: finish the running tasks first, or stop them now,
 * and for how long (snooze, default 1 h) — so the volunteer is never surprised by what happens to tasks.
 */
import { DEFAULT_SNOOZE_MS } from '../shared/constants.ts';
import type { AppContext } from './context.ts';
import { h, replaceChildren } from './dom.ts';

const SNOOZE_CHOICES: [label: string, ms: number | null][] = [
  ['15 minutes', 15 * 60_000],
  ['1 hour', DEFAULT_SNOOZE_MS],
  ['3 hours', 3 * 3600_000],
  ['8 hours', 8 * 3600_000],
  ['until I resume', null],
];

export function contributeSwitch(ctx: AppContext): HTMLElement {
  const button = h('button', {
    id: 'contribute-switch',
    class: 'switch',
    role: 'switch',
    'aria-checked': 'false',
  });
  const label = h('span', { class: 'switch-label' });
  const dialog = pauseDialog(ctx);

  const render = () => {
    const s = ctx.status;
    const on = s?.contributing === true || s?.mode === 'active';
    const draining = s?.mode === 'draining';
    button.setAttribute('aria-checked', String(on && !draining));
    button.dataset.state = draining ? 'draining' : on ? 'on' : 'off';
    button.disabled = s === null;
    replaceChildren(
      label,
      s === null ? 'Connecting…' : draining ? 'Finishing tasks…' : on ? 'Contributing' : 'Paused',
    );
  };
  ctx.on('status', render);
  ctx.on('connection', render);
  render();

  button.addEventListener('click', async () => {
    const s = ctx.status;
    if (!s) return;
    if (s.mode === 'active') {
      dialog.showModal();
    } else {
      await ctx.attempt('Resume', () => ctx.bridge.call('node.resume'));
    }
  });
  return h('div', { class: 'contribute' }, button, label, dialog);
}

function pauseDialog(ctx: AppContext): HTMLDialogElement {
  const snooze = h(
    'select',
    { id: 'snooze', name: 'snooze' },
    SNOOZE_CHOICES.map(([text, ms]) =>
      h('option', { value: ms === null ? '' : String(ms), selected: ms === DEFAULT_SNOOZE_MS }, text),
    ),
  );
  const dialog = h('dialog', { id: 'pause-dialog' }) as HTMLDialogElement;
  const pause = async (mode: 'finish' | 'now') => {
    dialog.close();
    const snoozeMs = snooze.value === '' ? undefined : Number(snooze.value);
    await ctx.attempt('Pause', () => ctx.bridge.call('node.pause', snoozeMs ? { mode, snoozeMs } : { mode }));
  };
  replaceChildren(
    dialog,
    h('h2', null, 'Pause contributing'),
    h('p', null, 'Tasks from the network may be running on this computer. How should they stop?'),
    h('label', null, 'Pause for ', snooze),
    h(
      'div',
      { class: 'dialog-actions' },
      h(
        'button',
        { id: 'pause-finish', class: 'primary', onclick: () => void pause('finish') },
        'Finish current tasks, then stop',
      ),
      h('button', { id: 'pause-now', class: 'danger', onclick: () => void pause('now') }, 'Stop now'),
      h('button', { id: 'pause-cancel', onclick: () => dialog.close() }, 'Cancel'),
    ),
  );
  return dialog;
}
