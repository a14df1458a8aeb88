/** The preferences form: everything the volunteer can decide about their machine, saved to the node. */
import type { Preferences } from '../../shared/api.ts';
import { withPreferenceDefaults } from '../../shared/constants.ts';
import type { AppContext, View } from '../context.ts';
import { h, replaceChildren } from '../dom.ts';
import { formatTime } from '../format.ts';
import { formatSchedule, parseSchedule } from '../schedule-text.ts';
import { applyTheme } from '../theme.ts';

type Field =
  | { kind: 'number'; path: string; label: string; min: number; max: number; step?: number; unit?: string }
  | { kind: 'checkbox'; path: string; label: string; desktopOnly?: boolean }
  | { kind: 'select'; path: string; label: string; options: string[] };

const SECTIONS: [title: string, fields: Field[]][] = [
  [
    'How much of this computer',
    [
      {
        kind: 'number',
        path: 'cpu.inUsePercent',
        label: 'CPU while I use the computer',
        min: 0,
        max: 100,
        unit: '%',
      },
      { kind: 'number', path: 'cpu.idlePercent', label: 'CPU while it is idle', min: 0, max: 100, unit: '%' },
      {
        kind: 'number',
        path: 'memory.inUsePercent',
        label: 'Memory while I use the computer',
        min: 0,
        max: 100,
        unit: '%',
      },
      {
        kind: 'number',
        path: 'memory.idlePercent',
        label: 'Memory while it is idle',
        min: 0,
        max: 100,
        unit: '%',
      },
      { kind: 'checkbox', path: 'gpu.enabled', label: 'Share the GPU' },
      { kind: 'checkbox', path: 'gpu.onlyWhenIdle', label: 'Share the GPU only while idle' },
    ],
  ],
  [
    'When',
    [
      { kind: 'checkbox', path: 'idle.onlyWhenIdle', label: 'Only while I am away from the computer' },
      { kind: 'number', path: 'idle.idleMinutes', label: 'Idle after', min: 1, max: 240, unit: 'min' },
      {
        kind: 'number',
        path: 'resumeGraceSeconds',
        label: 'Wait before resuming',
        min: 0,
        max: 3600,
        unit: 's',
      },
      { kind: 'checkbox', path: 'power.requireAC', label: 'Only on AC power' },
      {
        kind: 'number',
        path: 'power.minBatteryPercent',
        label: 'On battery, stop below',
        min: 0,
        max: 100,
        unit: '%',
      },
      {
        kind: 'number',
        path: 'temperature.maxCpuC',
        label: 'Pause above CPU temperature',
        min: 40,
        max: 110,
        unit: '°C',
      },
      {
        kind: 'number',
        path: 'temperature.maxGpuC',
        label: 'Stop GPU work above',
        min: 40,
        max: 110,
        unit: '°C',
      },
      { kind: 'checkbox', path: 'schedule.enabled', label: 'Only inside my weekly schedule' },
    ],
  ],
  [
    'What tasks may do',
    [
      { kind: 'checkbox', path: 'executors.docker', label: 'Run Docker container tasks' },
      { kind: 'checkbox', path: 'executors.wasm', label: 'Run WebAssembly tasks' },
      { kind: 'checkbox', path: 'taskNetworkAccess', label: 'Let tasks access the network' },
    ],
  ],
  [
    'App',
    [
      { kind: 'checkbox', path: 'startAtLogin', label: 'Start when I log in', desktopOnly: true },
      {
        kind: 'checkbox',
        path: 'keepRunningOnClose',
        label: 'Keep contributing when the window is closed',
        desktopOnly: true,
      },
      {
        kind: 'checkbox',
        path: 'askOnClose',
        label: 'Ask what to do when I close the window',
        desktopOnly: true,
      },
      { kind: 'select', path: 'theme', label: 'Theme', options: ['system', 'dark', 'light'] },
    ],
  ],
];

function getPath(obj: unknown, path: string): unknown {
  return path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  const last = keys.pop()!;
  let target = obj;
  for (const k of keys) target = target[k] as Record<string, unknown>;
  target[last] = value;
}

export function preferencesView(ctx: AppContext): View {
  const element = h('section', { id: 'view-preferences', class: 'view' });
  const form = h('form', { id: 'preferences-form', novalidate: true });
  const message = h('p', { id: 'preferences-message', role: 'status' });
  element.append(form, message);
  let current: Preferences | null = null;

  const inputs = new Map<string, HTMLInputElement | HTMLSelectElement>();
  const programs = h('textarea', {
    name: 'pauseWhilePrograms',
    rows: 3,
    placeholder: 'one program per line, e.g. steam',
  });
  const schedule = h('textarea', { name: 'schedule.windows', rows: 3, placeholder: 'mon-fri 18:00-08:00' });
  const snoozeNote = h('p', { class: 'hint', id: 'snooze-note' });

  for (const [title, fields] of SECTIONS) {
    const fieldset = h('fieldset', null, h('legend', null, title));
    for (const f of fields) {
      let input: HTMLInputElement | HTMLSelectElement;
      if (f.kind === 'number') {
        input = h('input', {
          type: 'number',
          name: f.path,
          min: f.min,
          max: f.max,
          step: f.step ?? 1,
          required: true,
        });
        fieldset.append(
          h('label', { class: 'row' }, h('span', null, f.label), h('span', null, input, ' ', f.unit ?? '')),
        );
      } else if (f.kind === 'checkbox') {
        // Window and login settings mean nothing in a browser tab; their values are kept as they are.
        if (f.desktopOnly && ctx.bridge.host !== 'electron') continue;
        input = h('input', { type: 'checkbox', name: f.path });
        fieldset.append(h('label', { class: 'row check' }, input, h('span', null, f.label)));
      } else {
        input = h(
          'select',
          { name: f.path },
          f.options.map((o) => h('option', { value: o }, o)),
        );
        fieldset.append(h('label', { class: 'row' }, h('span', null, f.label), input));
      }
      inputs.set(f.path, input);
    }
    if (title === 'When') {
      fieldset.append(
        h(
          'label',
          { class: 'block' },
          h('span', null, 'Weekly schedule (one window per line, local time)'),
          schedule,
        ),
        h('label', { class: 'block' }, h('span', null, 'Pause while these programs run'), programs),
        snoozeNote,
      );
    }
    form.append(fieldset);
  }
  form.append(
    h(
      'div',
      { class: 'form-actions' },
      h('button', { type: 'submit', class: 'primary', id: 'preferences-save' }, 'Save'),
      h(
        'button',
        { type: 'button', id: 'preferences-reset', onclick: () => current && fill(current) },
        'Undo changes',
      ),
    ),
  );

  const fill = (prefs: Preferences) => {
    current = prefs;
    for (const [path, input] of inputs) {
      const value = getPath(prefs, path);
      if (input instanceof HTMLInputElement && input.type === 'checkbox') input.checked = value === true;
      else input.value = String(value ?? '');
    }
    programs.value = prefs.pauseWhilePrograms.join('\n');
    schedule.value = formatSchedule(prefs.schedule.windows);
    replaceChildren(
      snoozeNote,
      prefs.snoozeUntil && prefs.snoozeUntil > Date.now()
        ? `Snoozed until ${formatTime(prefs.snoozeUntil)}.`
        : '',
    );
    replaceChildren(message, '');
  };

  const collect = (): Preferences => {
    if (!current) throw new Error('preferences not loaded yet');
    const next = structuredClone(current) as unknown as Record<string, unknown>;
    for (const [path, input] of inputs) {
      let value: unknown;
      if (input instanceof HTMLInputElement && input.type === 'checkbox') value = input.checked;
      else if (input instanceof HTMLInputElement && input.type === 'number') {
        value = Number(input.value);
        if (input.value === '' || !input.checkValidity())
          throw new Error(`${path}: must be between ${input.min} and ${input.max}`);
      } else value = input.value;
      setPath(next, path, value);
    }
    setPath(
      next,
      'pauseWhilePrograms',
      programs.value
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean),
    );
    setPath(next, 'schedule.windows', parseSchedule(schedule.value));
    return next as unknown as Preferences;
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    let prefs: Preferences;
    try {
      prefs = collect();
    } catch (err) {
      message.className = 'error';
      replaceChildren(message, (err as Error).message);
      return;
    }
    try {
      await ctx.bridge.call('preferences.set', { prefs });
      current = prefs;
      applyTheme(prefs.theme);
      message.className = 'ok';
      replaceChildren(message, 'Saved. The node now offers what you chose.');
    } catch (err) {
      message.className = 'error';
      replaceChildren(message, `Not saved: ${(err as Error).message}`);
    }
  });

  return {
    id: 'preferences',
    title: 'Preferences',
    element,
    show: async () => {
      const prefs = await ctx.attempt('Loading preferences', () => ctx.bridge.call('preferences.get'));
      if (prefs !== undefined) fill(withPreferenceDefaults(prefs));
    },
  };
}
