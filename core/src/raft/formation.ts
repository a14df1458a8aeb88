/**
 * Cluster formation and autopilot as pure decision functions (see README.md, "Cluster formation").
 */
import { createHash } from 'node:crypto';
import type { ConfChange, ConfState, NodeId } from './types.ts';

export interface DiscoveredPeer {
  id: NodeId;
  /** The cluster the peer is a member of, or null if it has not joined/bootstrapped one. */
  clusterId: string | null;
  /** The leader the peer knows of, or null. */
  leader: NodeId | null;
}

export interface FormationInput {
  self: NodeId;
  expectVoters: number;
  /** Peers found by discovery (self may or may not be included; it is treated as a discovered peer without a cluster). */
  discovered: DiscoveredPeer[];
}

export type FormationDecision =
  | { action: 'wait' }
  | { action: 'bootstrap'; voters: NodeId[] }
  | { action: 'join'; via: NodeId };

/** Deterministic string order (code-unit order, as Array.prototype.sort does). */
function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Consul `bootstrap_expect` style formation:
 * - if any discovered peer reports a cluster, join it (via its known leader if it reports one, else via the
 *   peer itself; the smallest such id so all nodes pick the same);
 * - else, once at least `expectVoters` nodes (self included) are known, the `expectVoters` smallest ids
 *   bootstrap a cluster with exactly those voters; everyone else waits until that cluster is reported;
 * - else wait.
 */
export function decideFormation(input: FormationInput): FormationDecision {
  const { self, expectVoters } = input;
  if (!Number.isInteger(expectVoters) || expectVoters < 1)
    throw new RangeError('expectVoters must be a positive integer');
  const peers = new Map<NodeId, DiscoveredPeer>();
  for (const p of input.discovered) if (p.id !== self) peers.set(p.id, p);

  const inCluster = [...peers.values()]
    .filter((p) => p.clusterId !== null)
    .sort((a, b) => compareIds(a.id, b.id));
  if (inCluster.length > 0) {
    const withLeader = inCluster.find((p) => p.leader !== null && p.leader !== self);
    const via = withLeader?.leader ?? inCluster[0].id;
    return { action: 'join', via };
  }
  const all = [self, ...peers.keys()].sort(compareIds);
  if (all.length < expectVoters) return { action: 'wait' };
  const voters = all.slice(0, expectVoters);
  if (!voters.includes(self)) return { action: 'wait' };
  return { action: 'bootstrap', voters };
}

/**
 * Identity of a cluster formed by bootstrapping `voters`: the same for every node that bootstraps the same
 * set. Advertise it in discovery (`clusterId`) and require it in the Raft transport handshake so that nodes of
 * two different bootstraps never exchange Raft messages (see README, residual risk).
 */
export function clusterIdOf(voters: readonly NodeId[]): string {
  const sorted = [...new Set(voters)].sort(compareIds);
  return createHash('sha256').update(JSON.stringify(sorted)).digest('hex').slice(0, 32);
}

export interface PeerHealth {
  alive: boolean;
  /** Ticks since the leader last heard from the peer. */
  lastContactTicks: number;
  matchIndex: number;
}

export interface AutopilotInput {
  conf: ConfState;
  targetVoters: number;
  health: Map<NodeId, PeerHealth>;
  /** Leader's last log index (to judge whether a learner has caught up). */
  lastIndex: number;
  /** A peer is healthy when alive and heard from within this many ticks (default 10). */
  maxContactTicks?: number;
  /** A learner is caught up when lastIndex - matchIndex <= this (default 32). */
  maxLagEntries?: number;
}

function isHealthy(h: PeerHealth | undefined, maxContactTicks: number): boolean {
  return h?.alive === true && h.lastContactTicks <= maxContactTicks;
}

/**
 * The next single membership change to propose, or null. Rules, in priority order:
 * 1. never leave fewer live voters than a quorum of the resulting configuration;
 * 2. replace a dead voter only when a healthy caught-up learner exists: remove the dead voter first if the
 *    remaining live voters still form a quorum of the smaller configuration (otherwise promote first);
 * 3. promote caught-up healthy learners while voters < targetVoters;
 * 4. otherwise do nothing.
 */
export function autopilot(input: AutopilotInput): ConfChange | null {
  const maxContact = input.maxContactTicks ?? 10;
  const maxLag = input.maxLagEntries ?? 32;
  const voters = [...input.conf.voters].sort(compareIds);
  const learners = [...input.conf.learners].sort(compareIds);
  const healthy = (id: NodeId) => isHealthy(input.health.get(id), maxContact);
  const caughtUp = (id: NodeId) => {
    const h = input.health.get(id);
    return h !== undefined && input.lastIndex - h.matchIndex <= maxLag;
  };
  const readyLearners = learners.filter((l) => healthy(l) && caughtUp(l));
  const deadVoters = voters.filter((v) => !healthy(v));
  const liveVoters = voters.filter(healthy);
  const quorum = (n: number) => Math.floor(n / 2) + 1;

  if (deadVoters.length > 0 && readyLearners.length > 0) {
    // Removing shrinks the config: safe only if live voters remain a quorum of the smaller config.
    if (voters.length - 1 >= 1 && liveVoters.length >= quorum(voters.length - 1)) {
      return { type: 'removeNode', node: deadVoters[0] };
    }
    // Otherwise grow first: promoting a live learner raises the live count faster than the quorum.
    if (liveVoters.length + 1 >= quorum(voters.length + 1))
      return { type: 'addVoter', node: readyLearners[0] };
    return null;
  }
  if (voters.length < input.targetVoters && readyLearners.length > 0) {
    if (liveVoters.length + 1 >= quorum(voters.length + 1))
      return { type: 'addVoter', node: readyLearners[0] };
  }
  return null;
}
