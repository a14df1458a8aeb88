/**
 * Turns a rules decision into actions on the node: pause (now or after the running tasks), resume, new offer
 * limits. Pure, so the "never fight the owner" logic is unit-tested: the app resumes only a pause that it
 * made itself; a pause made from the CLI or the dashboard stays until someone resumes it.
 */
import type { Decision, ReasonCode } from './rules.ts';

export type NodeAction =
  | { kind: 'pause'; mode: 'now' | 'finish'; reason: string }
  | { kind: 'resume' }
  | { kind: 'limits'; limits: OfferLimits };

/** The shape of the daemon's `setOfferLimits` (core/node/hardware.ts OfferLimits). */
export interface OfferLimits {
  cpus?: number;
  memoryBytes?: number;
  gpus?: boolean;
  executors?: ('docker' | 'wasm')[];
  network?: boolean;
}

export interface ControlState {
  /** The node's current mode as it reports it. */
  nodeMode: 'active' | 'paused' | 'draining';
  /** True when the current pause was made by this controller (so the controller may lift it). */
  pausedByRules: boolean;
  /** The limits last applied, to avoid re-advertising identical offers. */
  appliedLimits: OfferLimits | null;
}

/**
 * Reasons that must free the machine at once (the user is back, it is hot, the battery is going): running
 * tasks are stopped and rescheduled elsewhere. Others (schedule ended, settings) let running tasks finish.
 */
const STOP_NOW: ReadonlySet<ReasonCode> = new Set([
  'user-active',
  'too-hot',
  'battery-low',
  'on-battery',
  'program-running',
]);

export function offerLimitsOf(decision: Decision): OfferLimits {
  return {
    cpus: decision.offered.cpus,
    memoryBytes: decision.offered.memoryBytes,
    gpus: decision.offered.gpu,
    executors: [...decision.executors],
    network: decision.network !== 'none',
  };
}

function sameLimits(a: OfferLimits | null, b: OfferLimits): boolean {
  return a !== null && JSON.stringify(a) === JSON.stringify(b);
}

export function planNodeActions(decision: Decision, state: ControlState): NodeAction[] {
  const actions: NodeAction[] = [];
  if (!decision.contribute) {
    if (state.nodeMode === 'active') {
      actions.push({
        kind: 'pause',
        mode: STOP_NOW.has(decision.reasonCode) ? 'now' : 'finish',
        reason: decision.reason,
      });
    } else if (state.nodeMode === 'draining' && STOP_NOW.has(decision.reasonCode)) {
      // Already finishing tasks, but now something urgent came up: stop them.
      actions.push({ kind: 'pause', mode: 'now', reason: decision.reason });
    }
    return actions;
  }
  const limits = offerLimitsOf(decision);
  if (!sameLimits(state.appliedLimits, limits)) actions.push({ kind: 'limits', limits });
  if (state.nodeMode !== 'active' && state.pausedByRules) actions.push({ kind: 'resume' });
  return actions;
}
