/** Status: is this node contributing (and if not, why), its role in the cluster, peers and what it offers. */
import { type ClusterInfo, gpuCount, type NodeStatus } from '../../shared/api.ts';
import type { AppContext, View } from '../context.ts';
import { h, replaceChildren } from '../dom.ts';
import { formatBytes, shortId } from '../format.ts';

export function statusView(ctx: AppContext): View {
  const element = h('section', { id: 'view-status', class: 'view' });
  const summary = h('div', { class: 'cards' });
  const cluster = h('div', { class: 'panel' });
  element.append(summary, cluster);
  let lastClusterKey = '';

  const renderStatus = (s: NodeStatus) => {
    const state =
      s.mode === 'draining' ? 'Finishing current tasks' : s.contributing ? 'Contributing' : 'Paused';
    replaceChildren(
      summary,
      card(
        'This computer',
        state,
        s.pausedReason ? h('p', { id: 'paused-reason', class: 'reason' }, s.pausedReason) : null,
      ),
      card('Role', s.role, h('p', null, `term ${s.term}`)),
      card(
        'Leader',
        shortId(s.leader),
        h('p', { class: 'mono small', title: s.leader ?? '' }, s.leader ?? 'no leader yet'),
      ),
      card('Connected peers', String(s.connectedPeers)),
      card(
        'Offered',
        `${s.offered.cpus} CPUs · ${formatBytes(s.offered.memoryBytes)}`,
        h(
          'p',
          { id: 'offered-detail' },
          `${gpuCount(s.offered)} GPUs · ${s.offered.executors.join(', ') || 'no executors'} · up to ${s.offered.maxConcurrent} tasks`,
        ),
      ),
      card(
        'Peer id',
        shortId(s.peerId),
        h('p', { class: 'mono small' }, s.peerId),
        h(
          'ul',
          { class: 'mono small' },
          s.addrs.map((a) => h('li', null, a)),
        ),
      ),
    );
    const key = `${s.leader}/${s.term}`;
    if (key !== lastClusterKey) {
      lastClusterKey = key;
      void loadCluster();
    }
  };

  const loadCluster = async () => {
    const info = await ctx.attempt('Loading cluster', () => ctx.bridge.call('cluster'));
    if (info) renderCluster(info);
  };

  const renderCluster = (c: ClusterInfo) => {
    replaceChildren(
      cluster,
      h('h3', null, 'Cluster'),
      h(
        'p',
        null,
        `leader ${shortId(c.leader)} · term ${c.term} · commit ${c.commit} · applied ${c.applied}`,
      ),
      h(
        'table',
        null,
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            h('th', null, 'Member'),
            h('th', null, 'Kind'),
            h('th', null, 'Match'),
            h('th', null, 'Reachable'),
          ),
        ),
        h(
          'tbody',
          null,
          c.voters.map((v) =>
            h(
              'tr',
              null,
              h('td', { class: 'mono', title: v.id }, shortId(v.id)),
              h('td', null, v.id === c.leader ? 'voter (leader)' : 'voter'),
              h('td', null, v.match),
              h('td', null, v.reachable ? 'yes' : 'no'),
            ),
          ),
          c.learners.map((l) =>
            h(
              'tr',
              null,
              h('td', { class: 'mono', title: l.id }, shortId(l.id)),
              h('td', null, 'learner'),
              h('td', null, l.match ?? '—'),
              h('td', null, l.reachable === false ? 'no' : 'yes'),
            ),
          ),
        ),
      ),
    );
  };

  ctx.on('status', renderStatus);
  return {
    id: 'status',
    title: 'Status',
    element,
    show: async () => {
      const s = await ctx.attempt('Loading status', () => ctx.bridge.call('status'));
      if (s) ctx.dispatch({ type: 'status', data: s });
      void loadCluster();
    },
  };
}

function card(title: string, value: string, ...extra: (HTMLElement | null)[]): HTMLElement {
  return h('div', { class: 'card' }, h('h3', null, title), h('div', { class: 'value' }, value), extra);
}
