/** Contribution over time: CPU-hours and tasks per day. */

import { barChart } from '../charts.ts';
import type { AppContext, View } from '../context.ts';
import { h, replaceChildren } from '../dom.ts';

export const STATS_DAYS = 30;

export function statsView(ctx: AppContext): View {
  const element = h('section', { id: 'view-stats', class: 'view' });
  const totals = h('p', { id: 'stats-totals' });
  const cpu = h('div', { class: 'panel' });
  const tasks = h('div', { class: 'panel' });
  element.append(totals, cpu, tasks);
  let visible = false;

  const load = async () => {
    const days = await ctx.attempt('Loading statistics', () =>
      ctx.bridge.call('stats.contribution', { days: STATS_DAYS }),
    );
    if (!days) return;
    const cpuHours = days.reduce((sum, d) => sum + d.cpuHours, 0);
    const taskCount = days.reduce((sum, d) => sum + d.tasks, 0);
    replaceChildren(
      totals,
      `Last ${STATS_DAYS} days: ${cpuHours.toFixed(2)} CPU-hours, ${taskCount} tasks. Thank you!`,
    );
    replaceChildren(
      cpu,
      h('h3', null, 'CPU-hours contributed per day'),
      barChart(
        days.map((d) => ({ label: d.day, value: d.cpuHours })),
        { title: 'CPU-hours per day', format: (v) => v.toFixed(v < 10 ? 1 : 0) },
      ),
    );
    replaceChildren(
      tasks,
      h('h3', null, 'Tasks run per day'),
      barChart(
        days.map((d) => ({ label: d.day, value: d.tasks })),
        { title: 'Tasks per day', format: (v) => String(Math.round(v)) },
      ),
    );
  };
  ctx.on('task', (t) => {
    if (visible && t.state !== undefined && t.state !== 'running') void load();
  });

  return {
    id: 'stats',
    title: 'Contribution',
    element,
    show: () => {
      visible = true;
      void load();
    },
  };
}
