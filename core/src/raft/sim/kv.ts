/**
 * The simulation's state machine: a string key-value map whose commands carry a unique id, applied at most
 * once (the network may duplicate a forwarded proposal, and Raft itself does not deduplicate).
 */
export interface KvCommand {
  id: string;
  key: string;
  value: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeKvCommand(c: KvCommand): Uint8Array {
  return enc.encode(JSON.stringify([c.id, c.key, c.value]));
}

export function decodeKvCommand(data: Uint8Array): KvCommand {
  const [id, key, value] = JSON.parse(dec.decode(data)) as [string, string, string];
  return { id, key, value };
}

export class KvStateMachine {
  data = new Map<string, string>();
  /** Ids of applied commands (for deduplication and the "every acknowledged write is applied" check). */
  applied = new Set<string>();

  /** Returns true if the command took effect (false for a duplicate). */
  apply(c: KvCommand): boolean {
    if (this.applied.has(c.id)) return false;
    this.applied.add(c.id);
    this.data.set(c.key, c.value);
    return true;
  }

  get(key: string): string | null {
    return this.data.get(key) ?? null;
  }

  snapshot(): Uint8Array {
    return enc.encode(JSON.stringify({ d: [...this.data], a: [...this.applied] }));
  }

  restore(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) {
      this.data = new Map();
      this.applied = new Set();
      return;
    }
    const s = JSON.parse(dec.decode(bytes)) as { d: [string, string][]; a: string[] };
    this.data = new Map(s.d);
    this.applied = new Set(s.a);
  }

  fingerprint(): string {
    return JSON.stringify([...this.data].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
  }
}
