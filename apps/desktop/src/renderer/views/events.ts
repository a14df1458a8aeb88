/** The node's event log with level filters and search; new events stream in live. */
import type { NodeEvent } from '../../shared/api.ts';
import type { AppContext, View } from '../context.ts';
import { h, replaceChildren } from '../dom.ts';
import { eventMatches, formatTime } from '../format.ts';

/** Bound on events kept in the view. */
export const MAX_EVENTS = 500;
const LEVELS = ['debug', 'info', 'warn', 'error'] as const;

export function eventsView(ctx: AppContext): View {
  const element = h('section', { id: 'view-events', class: 'view' });
  const levels = new Set<string>(['info', 'warn', 'error']);
  const search = h('input', { id: 'events-search', type: 'search', placeholder: 'Search events…' });
  const list = h('ol', { id: 'events-list', class: 'events' });
  const filters = LEVELS.map((level) => {
    const box = h('input', { type: 'checkbox', name: `level-${level}`, checked: levels.has(level) });
    box.addEventListener('change', () => {
      if (box.checked) levels.add(level);
      else levels.delete(level);
      void load();
    });
    return h('label', { class: `level level-${level}` }, box, level);
  });
  element.append(h('div', { class: 'toolbar' }, filters, search), list);

  let debounce: ReturnType<typeof setTimeout> | undefined;
  search.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => void load(), 250);
  });

  const item = (e: NodeEvent) =>
    h(
      'li',
      { class: `event level-${e.level}` },
      h('time', null, formatTime(e.at)),
      h('span', { class: 'lvl' }, e.level),
      h('span', { class: 'msg' }, e.msg),
    );

  const load = async () => {
    const q = search.value.trim();
    // Filtering happens here (levels are a set, not a minimum), so the node is only asked for the newest events.
    const events = await ctx.attempt('Loading events', () =>
      ctx.bridge.call('events.recent', { limit: MAX_EVENTS }),
    );
    if (!events) return;
    const shown = events.filter((e) => eventMatches(e, levels, q)).sort((a, b) => b.at - a.at);
    replaceChildren(
      list,
      shown.length ? shown.map(item) : h('li', { class: 'empty' }, 'No matching events.'),
    );
  };

  ctx.on('event', (e) => {
    if (!eventMatches(e, levels, search.value)) return;
    list.querySelector('li.empty')?.remove();
    list.prepend(item(e));
    while (list.children.length > MAX_EVENTS) list.lastElementChild?.remove();
  });

  return { id: 'events', title: 'Events', element, show: () => void load() };
}
