/** Network nodes and their hardware, as advertised in the cluster. */
import { gpuCount, type NodeAdvertisement, nodeIsUp } from '../../shared/api.ts';
import type { AppContext, View } from '../context.ts';
import { h, replaceChildren } from '../dom.ts';
import { formatBytes, formatTime, shortId } from '../format.ts';

export function nodesView(ctx: AppContext): View {
  const element = h('section', { id: 'view-nodes', class: 'view' });
  const list = h('div', { class: 'cards', id: 'nodes-list' });
  element.append(
    h('div', { class: 'toolbar' }, h('button', { onclick: () => void load() }, 'Refresh')),
    list,
  );
  let visible = false;
  let lastPeers = -1;

  const load = async () => {
    const nodes = await ctx.attempt('Loading nodes', () => ctx.bridge.call('nodes'));
    if (nodes)
      replaceChildren(
        list,
        nodes.length ? nodes.map(nodeCard) : h('p', { class: 'empty' }, 'No nodes known yet.'),
      );
  };
  // Membership changes show up as a different peer count in the status stream: reload then, not on a timer.
  ctx.on('status', (s) => {
    if (visible && s.connectedPeers !== lastPeers) void load();
    lastPeers = s.connectedPeers;
  });

  return {
    id: 'nodes',
    title: 'Network',
    element,
    show: () => {
      visible = true;
      void load();
    },
  };
}

function nodeCard(n: NodeAdvertisement): HTMLElement {
  const hw = n.hardware;
  const up = nodeIsUp(n);
  return h(
    'div',
    { class: `card node ${up ? 'up' : 'down'}`, 'data-peer': n.peerId },
    h(
      'h3',
      null,
      n.hostname || shortId(n.peerId),
      ' ',
      h('span', { class: `badge ${up ? 'ok' : 'bad'}` }, up ? n.mode : 'down'),
      n.self ? h('span', { class: 'badge' }, 'this computer') : null,
    ),
    n.pausedReason ? h('p', { class: 'reason' }, n.pausedReason) : null,
    h('p', { class: 'mono small', title: n.peerId }, shortId(n.peerId)),
    h(
      'dl',
      null,
      h('dt', null, 'CPU'),
      h('dd', null, `${hw.cpu.model} (${hw.cpu.physicalCores}C/${hw.cpu.logicalCores}T, ${hw.cpu.arch})`),
      h('dt', null, 'Memory'),
      h('dd', null, formatBytes(hw.memoryBytes)),
      h('dt', null, 'GPUs'),
      h(
        'dd',
        null,
        hw.gpus.length
          ? hw.gpus.map((g) => `${g.vendor} ${g.model} (${formatBytes(g.vramBytes)})`).join(', ')
          : 'none',
      ),
      h('dt', null, 'OS'),
      h('dd', null, `${hw.os.distro} ${hw.os.release} (${hw.os.platform})`),
      h('dt', null, 'Docker'),
      h('dd', null, hw.docker.available ? `yes ${hw.docker.version ?? ''}` : 'no'),
      h('dt', null, 'Offers'),
      h(
        'dd',
        { class: 'offered' },
        `${n.offered.cpus} CPUs · ${formatBytes(n.offered.memoryBytes)} · ${gpuCount(n.offered)} GPUs · ${n.offered.executors.join(', ') || '—'}`,
      ),
      h('dt', null, 'Last seen'),
      h('dd', null, formatTime(n.lastSeen)),
    ),
    Object.keys(n.labels ?? {}).length
      ? h(
          'p',
          { class: 'labels' },
          Object.entries(n.labels).map(([k, v]) => h('span', { class: 'badge' }, `${k}=${v}`)),
        )
      : null,
  );
}
