/**
 * Durable Raft storage on a `level` database (or sublevel).
 *
 * Keys (utf8): `hs` hard state, `snap` latest snapshot, `meta` log bounds, `e<16 hex digits>` entries.
 * Every value is a record `[crc32 (4 bytes, big-endian) of body][body]`. `meta` holds the index/term of the
 * compaction point and the last index, and is written in the same atomic batch as the entries, so at open
 * the entries must exactly cover (compacted, last] with contiguous indexes and non-decreasing terms —
 * a missing entry (in the middle or at the end), a flipped byte or a truncated record is detected there
 * and reported as RaftStorageCorruptError instead of silently feeding a bad log to Raft.
 *
 * Reads are served from an in-memory mirror (MemoryStorage) loaded at open; the mirror is updated only
 * after the synced write completed, so Raft never sees state that is not durable.
 */
import { crc32 } from 'node:zlib';
import type { AbstractLevel } from 'abstract-level';
import type { InitialState, RaftStorage } from './storage.ts';
import { MemoryStorage } from './storage.ts';
import type { ConfState, Entry, HardState, Snapshot } from './types.ts';
import { emptySnapshot, sameTermAndVote } from './types.ts';

export class RaftStorageCorruptError extends Error {
  readonly key: string;
  constructor(key: string, detail: string) {
    super(`raft storage is corrupt at ${key}: ${detail}`);
    this.name = 'RaftStorageCorruptError';
    this.key = key;
  }
}

// biome-ignore lint/suspicious/noExplicitAny: accepts a Level instance or any sublevel, whatever its encodings
export type RaftLevelDb = AbstractLevel<any, any, any>;

type BatchOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string };

const ENC = { keyEncoding: 'utf8', valueEncoding: 'view' } as const;
/** `sync: true` makes classic-level fsync before the write resolves. */
const SYNC_WRITE = { ...ENC, sync: true };
const KEY_HS = 'hs';
const KEY_SNAP = 'snap';
const KEY_META = 'meta';
const ENTRY_PREFIX = 'e';
/** Upper bound for entry keys ('e' + 16 hex digits sorts below 'e~'). */
const ENTRY_END = 'e~';
const RECORD_VERSION = 1;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export function entryKey(index: number): string {
  return ENTRY_PREFIX + index.toString(16).padStart(16, '0');
}

function seal(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.byteLength);
  new DataView(out.buffer).setUint32(0, crc32(body) >>> 0);
  out.set(body, 4);
  return out;
}

function unseal(key: string, rec: Uint8Array): Uint8Array {
  if (rec.byteLength < 5)
    throw new RaftStorageCorruptError(key, `record too short (${rec.byteLength} bytes)`);
  const want = new DataView(rec.buffer, rec.byteOffset, rec.byteLength).getUint32(0);
  const body = rec.subarray(4);
  if (crc32(body) >>> 0 !== want) throw new RaftStorageCorruptError(key, 'checksum mismatch');
  if (body[0] !== RECORD_VERSION) throw new RaftStorageCorruptError(key, `unknown record version ${body[0]}`);
  return body.subarray(1);
}

function jsonRecord(v: unknown): Uint8Array {
  const json = textEncoder.encode(JSON.stringify(v));
  const body = new Uint8Array(1 + json.byteLength);
  body[0] = RECORD_VERSION;
  body.set(json, 1);
  return seal(body);
}

function parseJson(key: string, rec: Uint8Array): unknown {
  try {
    return JSON.parse(textDecoder.decode(unseal(key, rec)));
  } catch (err) {
    if (err instanceof RaftStorageCorruptError) throw err;
    throw new RaftStorageCorruptError(key, 'malformed record');
  }
}

/** Entry record body: version u8, type u8 (0 normal, 1 conf), term f64, index f64, data. */
function encodeEntry(e: Entry): Uint8Array {
  const body = new Uint8Array(1 + 1 + 8 + 8 + e.data.byteLength);
  const dv = new DataView(body.buffer);
  body[0] = RECORD_VERSION;
  body[1] = e.type === 'conf' ? 1 : 0;
  dv.setFloat64(2, e.term);
  dv.setFloat64(10, e.index);
  body.set(e.data, 18);
  return seal(body);
}

function decodeEntry(key: string, rec: Uint8Array): Entry {
  const b = unseal(key, rec);
  if (b.byteLength < 17) throw new RaftStorageCorruptError(key, 'entry record truncated');
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b[0] > 1) throw new RaftStorageCorruptError(key, `unknown entry type ${b[0]}`);
  return {
    type: b[0] === 1 ? 'conf' : 'normal',
    term: dv.getFloat64(1),
    index: dv.getFloat64(9),
    data: b.slice(17),
  };
}

/** Snapshot record body: version u8, u32 header length, JSON header {index, term, conf}, data. */
function encodeSnapshot(s: Snapshot): Uint8Array {
  const header = textEncoder.encode(JSON.stringify({ index: s.index, term: s.term, conf: s.conf }));
  const body = new Uint8Array(1 + 4 + header.byteLength + s.data.byteLength);
  body[0] = RECORD_VERSION;
  new DataView(body.buffer).setUint32(1, header.byteLength);
  body.set(header, 5);
  body.set(s.data, 5 + header.byteLength);
  return seal(body);
}

function decodeSnapshot(rec: Uint8Array): Snapshot {
  const b = unseal(KEY_SNAP, rec);
  if (b.byteLength < 4) throw new RaftStorageCorruptError(KEY_SNAP, 'snapshot record truncated');
  const len = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0);
  if (4 + len > b.byteLength) throw new RaftStorageCorruptError(KEY_SNAP, 'snapshot header truncated');
  let h: { index?: unknown; term?: unknown; conf?: { voters?: unknown; learners?: unknown } };
  try {
    h = JSON.parse(textDecoder.decode(b.subarray(4, 4 + len)));
  } catch {
    throw new RaftStorageCorruptError(KEY_SNAP, 'malformed snapshot header');
  }
  const ids = (x: unknown) => Array.isArray(x) && x.every((v) => typeof v === 'string');
  if (!isIndex(h.index) || !isIndex(h.term) || !h.conf || !ids(h.conf.voters) || !ids(h.conf.learners)) {
    throw new RaftStorageCorruptError(KEY_SNAP, 'invalid snapshot header');
  }
  const conf: ConfState = { voters: h.conf.voters as string[], learners: h.conf.learners as string[] };
  return { index: h.index, term: h.term, conf, data: b.slice(4 + len) };
}

function isIndex(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

interface Meta {
  /** Index and term of the entry before the first stored one (compaction point / snapshot). */
  compactIndex: number;
  compactTerm: number;
  lastIndex: number;
}

export class LevelRaftStorage implements RaftStorage {
  private readonly db: RaftLevelDb;
  private readonly mem: MemoryStorage;
  /** Serializes writes: each save/compact sees the mirror left by the previous one. */
  private chain: Promise<void> = Promise.resolve();

  private constructor(db: RaftLevelDb, mem: MemoryStorage) {
    this.db = db;
    this.mem = mem;
  }

  /** Loads and verifies everything. Throws RaftStorageCorruptError on any integrity problem. */
  static async open(db: RaftLevelDb): Promise<LevelRaftStorage> {
    const mem = new MemoryStorage();
    const hsRec = (await db.get(KEY_HS, ENC)) as Uint8Array | undefined;
    const snapRec = (await db.get(KEY_SNAP, ENC)) as Uint8Array | undefined;
    const metaRec = (await db.get(KEY_META, ENC)) as Uint8Array | undefined;
    const snap: Snapshot | undefined = snapRec ? decodeSnapshot(snapRec) : undefined;
    let meta: Meta = { compactIndex: 0, compactTerm: 0, lastIndex: 0 };
    if (metaRec) {
      const m = parseJson(KEY_META, metaRec) as Partial<Meta>;
      if (
        !isIndex(m.compactIndex) ||
        !isIndex(m.compactTerm) ||
        !isIndex(m.lastIndex) ||
        m.lastIndex < m.compactIndex
      ) {
        throw new RaftStorageCorruptError(KEY_META, 'invalid log bounds');
      }
      meta = m as Meta;
    }
    const snapIndex = snap?.index ?? 0;
    const ents: Entry[] = [];
    let expect = meta.compactIndex + 1;
    let prevTerm = meta.compactTerm;
    for await (const [key, value] of db.iterator({
      gte: ENTRY_PREFIX,
      lt: ENTRY_END,
      ...ENC,
    }) as AsyncIterable<[string, Uint8Array]>) {
      const e = decodeEntry(key, value);
      if (key !== entryKey(e.index)) throw new RaftStorageCorruptError(key, `record holds entry ${e.index}`);
      if (e.index <= meta.compactIndex)
        throw new RaftStorageCorruptError(key, 'entry below the compaction point');
      if (e.index !== expect)
        throw new RaftStorageCorruptError(
          entryKey(expect),
          `missing entry ${expect} (next stored is ${e.index})`,
        );
      if (e.term < prevTerm) throw new RaftStorageCorruptError(key, `term ${e.term} after term ${prevTerm}`);
      ents.push(e);
      prevTerm = e.term;
      expect++;
    }
    if (expect - 1 !== meta.lastIndex) {
      throw new RaftStorageCorruptError(
        entryKey(expect),
        `log ends at ${expect - 1} but should end at ${meta.lastIndex}`,
      );
    }
    if (meta.compactIndex > snapIndex) {
      // Entries are only dropped once a snapshot covers them.
      throw new RaftStorageCorruptError(
        KEY_SNAP,
        `log compacted to ${meta.compactIndex} but snapshot is at ${snapIndex}`,
      );
    }
    if (snapIndex > meta.lastIndex) {
      throw new RaftStorageCorruptError(
        KEY_SNAP,
        `snapshot at ${snapIndex} is beyond the log end ${meta.lastIndex}`,
      );
    }
    mem.load(snap ?? emptySnapshot(), meta.compactIndex, meta.compactTerm, ents);
    if (hsRec) {
      const hs = parseJson(KEY_HS, hsRec) as Partial<HardState>;
      if (!isIndex(hs.term) || !isIndex(hs.commit) || !(hs.vote === null || typeof hs.vote === 'string')) {
        throw new RaftStorageCorruptError(KEY_HS, 'invalid hard state');
      }
      if (hs.commit > mem.lastIndex()) {
        throw new RaftStorageCorruptError(
          KEY_HS,
          `commit ${hs.commit} is beyond the last entry ${mem.lastIndex()}`,
        );
      }
      mem.setHardState({ term: hs.term, vote: hs.vote, commit: hs.commit });
    }
    return new LevelRaftStorage(db, mem);
  }

  // ---- RaftStorage (reads from the mirror) ----

  initialState(): InitialState {
    return this.mem.initialState();
  }
  entries(lo: number, hi: number, maxSize: number): Entry[] {
    return this.mem.entries(lo, hi, maxSize);
  }
  term(index: number): number {
    return this.mem.term(index);
  }
  firstIndex(): number {
    return this.mem.firstIndex();
  }
  lastIndex(): number {
    return this.mem.lastIndex();
  }
  snapshot(): Snapshot {
    return this.mem.snapshot();
  }
  hardState(): HardState {
    return this.mem.hardStateNow();
  }

  private serialize(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn);
    this.chain = next.catch(() => {});
    return next;
  }

  private meta(): Meta {
    return {
      compactIndex: this.mem.firstIndex() - 1,
      compactTerm: this.mem.term(this.mem.firstIndex() - 1),
      lastIndex: this.mem.lastIndex(),
    };
  }

  /**
   * Durably (fsync) writes what a Ready asks to persist: snapshot (replacing the log), entries (truncating
   * any conflicting suffix), hard state. One atomic batch; the in-memory view changes only after it.
   */
  save(hardState: HardState | undefined, entries: Entry[], snapshot?: Snapshot): Promise<void> {
    return this.serialize(async () => {
      // Only the commit index moved: no fsync (etcd's mustSync). A commit index lost in a crash is learnt
      // again from the leader; term, vote, entries and snapshots are always synced.
      const prev = this.mem.hardStateNow();
      const mustSync =
        entries.length > 0 ||
        snapshot !== undefined ||
        (hardState !== undefined && !sameTermAndVote(hardState, prev));
      const ops: BatchOp[] = [];
      // Plan on a scratch copy of the bounds.
      let first = this.mem.firstIndex();
      let last = this.mem.lastIndex();
      let compactIndex = first - 1;
      let compactTerm = this.mem.term(compactIndex);
      const applySnap = snapshot !== undefined && snapshot.index > this.mem.snapshot().index;
      if (applySnap && snapshot) {
        ops.push({ type: 'put', key: KEY_SNAP, value: encodeSnapshot(snapshot) });
        for (let i = first; i <= last; i++) ops.push({ type: 'del', key: entryKey(i) });
        first = snapshot.index + 1;
        last = snapshot.index;
        compactIndex = snapshot.index;
        compactTerm = snapshot.term;
      }
      let toAppend = entries.filter((e) => e.index >= first);
      if (toAppend.length > 0) {
        const start = toAppend[0].index;
        if (start > last + 1) throw new Error(`raft storage: gap before entry ${start} (last ${last})`);
        for (let i = start; i <= last; i++)
          if (i > toAppend[toAppend.length - 1].index) ops.push({ type: 'del', key: entryKey(i) });
        for (const e of toAppend) ops.push({ type: 'put', key: entryKey(e.index), value: encodeEntry(e) });
        last = toAppend[toAppend.length - 1].index;
      } else {
        toAppend = [];
      }
      if (applySnap || toAppend.length > 0) {
        const meta: Meta = { compactIndex, compactTerm, lastIndex: last };
        ops.push({ type: 'put', key: KEY_META, value: jsonRecord(meta) });
      }
      if (hardState) ops.push({ type: 'put', key: KEY_HS, value: jsonRecord(hardState) });
      if (ops.length === 0) return;
      await this.db.batch(ops, mustSync ? SYNC_WRITE : ENC);
      if (applySnap && snapshot) this.mem.applySnapshot(snapshot);
      if (toAppend.length > 0) this.mem.append(toAppend);
      if (hardState) this.mem.setHardState(hardState);
    });
  }

  /** Records a local snapshot of the state machine at applied index `index`. */
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Promise<Snapshot> {
    let result: Snapshot = this.mem.snapshot();
    return this.serialize(async () => {
      if (index <= this.mem.snapshot().index) return;
      const term = this.mem.term(index);
      const snap: Snapshot = { index, term, conf, data };
      await this.db.batch([{ type: 'put', key: KEY_SNAP, value: encodeSnapshot(snap) }], SYNC_WRITE);
      result = this.mem.createSnapshot(index, conf, data);
    }).then(() => result);
  }

  /** Drops entries up to and including `index` (must be covered by the snapshot). */
  compact(index: number): Promise<void> {
    return this.serialize(async () => {
      const first = this.mem.firstIndex();
      if (index < first) return;
      if (index > this.mem.snapshot().index) {
        throw new Error(
          `raft storage: cannot compact to ${index} beyond the snapshot at ${this.mem.snapshot().index}`,
        );
      }
      const ops: BatchOp[] = [];
      for (let i = first; i <= index; i++) ops.push({ type: 'del', key: entryKey(i) });
      const meta: Meta = {
        compactIndex: index,
        compactTerm: this.mem.term(index),
        lastIndex: this.mem.lastIndex(),
      };
      ops.push({ type: 'put', key: KEY_META, value: jsonRecord(meta) });
      await this.db.batch(ops, SYNC_WRITE);
      this.mem.compact(index);
    });
  }

  /** Bounds of the log as stored (for tests and status). */
  bounds(): Meta {
    return this.meta();
  }
}
