/** Running tasks on this node: who sent them, what image, how long, how much CPU/memory, and live logs. */
import type { LocalTask, TaskRecord } from '../../shared/api.ts';
import type { AppContext, View } from '../context.ts';
import { h, replaceChildren } from '../dom.ts';
import { formatBytes, formatDuration, formatPercent, shortId } from '../format.ts';

/** Bound on log lines kept in the DOM for the selected task. */
export const MAX_LOG_LINES = 2000;

export function tasksView(ctx: AppContext): View {
  const element = h('section', { id: 'view-tasks', class: 'view' });
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty' }, 'No tasks are running on this computer.');
  const logTitle = h('h3', null, 'Logs');
  const logBox = h('pre', { id: 'log-output', class: 'logs', 'aria-live': 'polite' });
  element.append(
    h(
      'table',
      { id: 'tasks-table' },
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          ['Task', 'Job', 'Submitter', 'Image', 'Elapsed', 'CPU', 'Memory'].map((t) => h('th', null, t)),
        ),
      ),
      tbody,
    ),
    empty,
    h('div', { class: 'panel' }, logTitle, logBox),
  );

  const tasks = new Map<string, LocalTask>();
  let selected: string | null = null;
  let logLines = 0;
  let loading: Promise<void> | null = null;

  const render = () => {
    empty.hidden = tasks.size > 0;
    replaceChildren(
      tbody,
      [...tasks.values()].map((t) =>
        h(
          'tr',
          {
            class: t.taskId === selected ? 'selected' : '',
            'data-task': t.taskId,
            onclick: () => void select(t.taskId),
          },
          h('td', { title: t.taskId }, t.name || shortId(t.taskId)),
          h('td', { class: 'mono', title: t.jobId }, shortId(t.jobId)),
          h('td', { class: 'mono', title: t.submitter }, shortId(t.submitter)),
          h('td', { class: 'mono' }, t.image),
          h(
            'td',
            { class: 'elapsed', 'data-started': t.startedAt },
            formatDuration(Date.now() - t.startedAt),
          ),
          h('td', null, formatPercent(t.usage?.cpuPercent ?? Number.NaN)),
          h('td', null, formatBytes(t.usage?.memoryBytes ?? Number.NaN)),
        ),
      ),
    );
  };

  const load = async () => {
    const list = await ctx.attempt('Loading tasks', () => ctx.bridge.call('tasks.local'));
    if (!list) return;
    tasks.clear();
    for (const t of list) tasks.set(t.taskId, t);
    render();
    // Show some logs right away: select the first task unless the selected one is still running.
    if ((selected === null || !tasks.has(selected)) && list.length > 0) void select(list[0].taskId);
  };

  const appendLog = (stream: string, text: string) => {
    const line = h(
      'span',
      { class: `log-${stream === 'stderr' ? 'stderr' : 'stdout'}` },
      text.endsWith('\n') ? text : `${text}\n`,
    );
    logBox.append(line);
    logLines++;
    while (logLines > MAX_LOG_LINES && logBox.firstChild) {
      logBox.firstChild.remove();
      logLines--;
    }
    logBox.scrollTop = logBox.scrollHeight;
  };

  const select = async (taskId: string) => {
    selected = taskId;
    render();
    replaceChildren(logTitle, `Logs of ${tasks.get(taskId)?.name || shortId(taskId)}`);
    logBox.replaceChildren();
    logLines = 0;
    const backlog = await ctx.attempt('Loading logs', () => ctx.bridge.call('logs', { taskId }));
    if (!backlog || selected !== taskId) return;
    for (const line of backlog.lines.slice(-MAX_LOG_LINES)) appendLog(line.stream, line.text);
    if (backlog.ended) appendLog('stdout', '— task ended —');
  };

  ctx.on('log', (log) => {
    if (log.taskId === selected) appendLog(log.stream, log.text);
  });
  ctx.on('task', (record: TaskRecord) => {
    // A task event either updates a running task or tells us one started/finished: reload the list once.
    const known = tasks.get(record.taskId);
    const running = record.state === undefined || record.state === 'running';
    if (known && running) {
      tasks.set(record.taskId, { ...known, ...(record as Partial<LocalTask>) });
      render();
    } else if (!loading) {
      loading = load().finally(() => {
        loading = null;
      });
    }
  });
  // A display clock for the "elapsed" column, not a data poll: nothing is fetched here.
  setInterval(() => {
    for (const cell of tbody.querySelectorAll<HTMLElement>('td.elapsed')) {
      cell.textContent = formatDuration(Date.now() - Number(cell.dataset.started));
    }
  }, 1000);

  return { id: 'tasks', title: 'Running tasks', element, show: () => void load() };
}
