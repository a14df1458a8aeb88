/**
 * Reads and rewrites a WebAssembly module's memory limits. A worker's resourceLimits bound the JS heap, not
 * wasm linear memory, so the memory cap is enforced in the module itself: every defined memory gets
 * max = min(declared max, cap). memory.grow past the cap then returns -1 inside the module.
 */

export const WASM_PAGE = 65536;

/** The slice of the WebAssembly JS API we use (the project's lib settings carry no WebAssembly types). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
export interface WasmInstance {
  readonly exports: Record<string, unknown>;
}
export interface WasmApi {
  compile(bytes: Uint8Array): Promise<object>;
  instantiate(module: object, imports: object): Promise<WasmInstance>;
}
export const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

function readU32(b: Uint8Array, pos: number): [value: number, next: number] {
  let result = 0;
  let shift = 0;
  for (let i = 0; i < 5; i++) {
    if (pos >= b.length) throw new Error('truncated LEB128');
    const byte = b[pos++];
    result += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return [result, pos];
    shift += 7;
  }
  throw new Error('LEB128 too long');
}

function writeU32(n: number): number[] {
  const out: number[] = [];
  let v = n;
  do {
    let byte = v & 0x7f;
    v = Math.floor(v / 128);
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

function skipName(b: Uint8Array, pos: number): number {
  const [len, p] = readU32(b, pos);
  return p + len;
}

function readLimits(
  b: Uint8Array,
  pos: number,
): { flags: number; min: number; max: number | null; next: number } {
  const flags = b[pos];
  if (flags === undefined) throw new Error('truncated limits');
  if (flags > 0x03) throw new Error('64-bit memories are not supported');
  const [min, p1] = readU32(b, pos + 1);
  if (flags & 1) {
    const [max, p2] = readU32(b, p1);
    return { flags, min, max, next: p2 };
  }
  return { flags, min, max: null, next: p1 };
}

export interface MemoryInfo {
  /** Declared memories (initial/max in pages). */
  memories: { min: number; max: number | null }[];
  importsMemory: boolean;
}

/** Validates the header and walks the sections; throws on anything malformed. */
function walk(
  bytes: Uint8Array,
  onSection: (id: number, start: number, end: number, headerStart: number) => void,
) {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d)
    throw new Error('not a WebAssembly module');
  if (bytes[4] !== 1 || bytes[5] !== 0 || bytes[6] !== 0 || bytes[7] !== 0)
    throw new Error('unsupported wasm version');
  let pos = 8;
  while (pos < bytes.length) {
    const headerStart = pos;
    const id = bytes[pos];
    const [size, start] = readU32(bytes, pos + 1);
    const end = start + size;
    if (end > bytes.length) throw new Error('section runs past the end of the module');
    onSection(id, start, end, headerStart);
    pos = end;
  }
}

export function memoryInfo(bytes: Uint8Array): MemoryInfo {
  const info: MemoryInfo = { memories: [], importsMemory: false };
  walk(bytes, (id, start) => {
    if (id === 2) {
      let [count, p] = readU32(bytes, start);
      for (let i = 0; i < count; i++) {
        p = skipName(bytes, p);
        p = skipName(bytes, p);
        const kind = bytes[p++];
        if (kind === 0) [, p] = readU32(bytes, p);
        else if (kind === 1) p = readLimits(bytes, p + 1).next;
        else if (kind === 2) {
          info.importsMemory = true;
          p = readLimits(bytes, p).next;
        } else if (kind === 3) p += 2;
        else if (kind === 4)
          [, p] = readU32(bytes, p + 1); // exception tag
        else throw new Error(`unknown import kind ${kind}`);
      }
    } else if (id === 5) {
      let [count, p] = readU32(bytes, start);
      for (let i = 0; i < count; i++) {
        const l = readLimits(bytes, p);
        info.memories.push({ min: l.min, max: l.max });
        p = l.next;
      }
    }
  });
  return info;
}

/**
 * Returns a copy of the module whose memories may not grow past capPages. Throws (with a reason fit for a
 * refusal) when a memory's initial size is already over the cap or the memory is imported.
 */
export function capMemory(bytes: Uint8Array, capPages: number): Uint8Array {
  const info = memoryInfo(bytes);
  if (info.importsMemory) throw new Error('modules that import their memory are not supported');
  for (const m of info.memories)
    if (m.min > capPages)
      throw new Error(
        `module needs ${m.min * WASM_PAGE} bytes of memory at start, cap is ${capPages * WASM_PAGE}`,
      );
  let patched: Uint8Array = bytes;
  walk(bytes, (id, start, end, headerStart) => {
    if (id !== 5) return;
    let [count, p] = readU32(bytes, start);
    const body: number[] = [...writeU32(count)];
    for (let i = 0; i < count; i++) {
      const l = readLimits(bytes, p);
      const max = l.max === null ? capPages : Math.min(l.max, capPages);
      body.push(l.flags | 1, ...writeU32(l.min), ...writeU32(max));
      p = l.next;
    }
    const section = [5, ...writeU32(body.length), ...body];
    const out = new Uint8Array(bytes.length - (end - headerStart) + section.length);
    out.set(bytes.subarray(0, headerStart), 0);
    out.set(section, headerStart);
    out.set(bytes.subarray(end), headerStart + section.length);
    patched = out;
  });
  return patched;
}
