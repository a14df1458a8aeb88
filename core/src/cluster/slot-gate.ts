/**
 * A node's slots: which of the runs it has been given may run now. At most `maxConcurrent` at once, within
 * the offered CPUs and memory, in the order they came. The leader assigns only within a node's offer, so its
 * assignments pass at once; tasks a node asked for ahead (prefetch, see JobsService) wait here for a slot.
 *
 * Pure bookkeeping: no I/O and no timers. The offer is read at each decision, so an owner lowering the caps
 * takes effect as runs end. It never waits while no run holds a slot, so a task bigger than an offer lowered
 * since it was placed still runs.
 */

/** What a run asks of the node while it holds a slot. */
export interface SlotClaim {
  cpus: number;
  memoryBytes: number;
  /** Set while it holds a slot. */
  admitted: boolean;
}

export interface SlotOffer {
  maxConcurrent: number;
  cpus: number;
  memoryBytes: number;
}

/** 'now': it had a slot at once; 'waited': it got one after waiting; 'aborted': stopped while waiting. */
export type Admission = 'now' | 'waited' | 'aborted';

export class SlotGate<C extends SlotClaim = SlotClaim> {
  readonly #offer: () => SlotOffer;
  readonly #waiting: { claim: C; resolve: (how: Admission) => void }[] = [];
  readonly #held = { count: 0, cpus: 0, memoryBytes: 0 };

  constructor(offer: () => SlotOffer) {
    this.#offer = offer;
  }

  /** Resolves once `claim` holds a slot, or with 'aborted' if `signal` aborts while it waits. */
  admit(claim: C, signal?: AbortSignal): Promise<Admission> {
    if (this.#waiting.length === 0 && this.#fits(claim)) {
      this.#take(claim);
      return Promise.resolve('now');
    }
    return new Promise((resolve) => {
      const entry = { claim, resolve };
      this.#waiting.push(entry);
      signal?.addEventListener(
        'abort',
        () => {
          const i = this.#waiting.indexOf(entry);
          if (i < 0) return;
          this.#waiting.splice(i, 1);
          resolve('aborted');
        },
        { once: true },
      );
    });
  }

  /** Gives the claim's slot back (once; a claim holding none is ignored) and admits waiting ones that fit. */
  release(claim: C): void {
    if (!claim.admitted) return;
    claim.admitted = false;
    const held = this.#held;
    held.count -= 1;
    held.cpus -= claim.cpus;
    held.memoryBytes -= claim.memoryBytes;
    if (held.count === 0) {
      held.cpus = 0; // no float drift left behind
      held.memoryBytes = 0;
    }
    while (this.#waiting.length > 0 && this.#fits(this.#waiting[0]!.claim)) {
      const next = this.#waiting.shift()!;
      this.#take(next.claim);
      next.resolve('waited');
    }
  }

  /** What the claims holding a slot take of the offer (read-only). */
  get held(): Readonly<{ count: number; cpus: number; memoryBytes: number }> {
    return this.#held;
  }

  /** Claims waiting for a slot. */
  get waiting(): number {
    return this.#waiting.length;
  }

  #fits(claim: C): boolean {
    const held = this.#held;
    if (held.count === 0) return true;
    const offer = this.#offer();
    return (
      held.count < offer.maxConcurrent &&
      held.cpus + claim.cpus <= offer.cpus + 1e-6 &&
      held.memoryBytes + claim.memoryBytes <= offer.memoryBytes
    );
  }

  #take(claim: C): void {
    claim.admitted = true;
    this.#held.count += 1;
    this.#held.cpus += claim.cpus;
    this.#held.memoryBytes += claim.memoryBytes;
  }
}
