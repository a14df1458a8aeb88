/** History: tasks that finished on this node. */
import type { TaskRecord } from '../../shared/api.ts';
import type { AppContext, View } from '../context.ts';
import { h, replaceChildren } from '../dom.ts';
import { formatDuration, formatTime, shortId } from '../format.ts';

export const HISTORY_LIMIT = 200;

export function historyView(ctx: AppContext): View {
  const element = h('section', { id: 'view-history', class: 'view' });
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty' }, 'No finished tasks yet.');
  element.append(
    h(
      'table',
      { id: 'history-table' },
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          ['Finished', 'Task', 'Job', 'Submitter', 'Image', 'State', 'Exit', 'Duration'].map((t) =>
            h('th', null, t),
          ),
        ),
      ),
      tbody,
    ),
    empty,
  );
  let visible = false;

  const load = async () => {
    const list = await ctx.attempt('Loading history', () =>
      ctx.bridge.call('tasks.history', { limit: HISTORY_LIMIT }),
    );
    if (!list) return;
    empty.hidden = list.length > 0;
    replaceChildren(tbody, list.map(row));
  };

  ctx.on('task', (t) => {
    if (visible && t.state !== undefined && t.state !== 'running') void load();
  });

  return {
    id: 'history',
    title: 'History',
    element,
    show: () => {
      visible = true;
      void load();
    },
  };
}

function row(t: TaskRecord): HTMLElement {
  const duration = t.startedAt && t.finishedAt ? formatDuration(t.finishedAt - t.startedAt) : '—';
  return h(
    'tr',
    null,
    h('td', null, formatTime(t.finishedAt)),
    h('td', { title: t.taskId }, t.name || shortId(t.taskId)),
    h('td', { class: 'mono', title: t.jobId }, shortId(t.jobId)),
    h('td', { class: 'mono' }, shortId(t.submitter)),
    h('td', { class: 'mono' }, t.image ?? '—'),
    h('td', { class: `state state-${t.state ?? 'unknown'}` }, t.state ?? '—'),
    h('td', null, t.exitCode ?? '—'),
    h('td', null, duration),
  );
}
