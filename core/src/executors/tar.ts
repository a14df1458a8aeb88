/**
 * Minimal ustar writer/reader for moving task inputs/outputs through the engine's archive API.
 * Only regular files and directories; reading is bounded so a hostile container cannot blow up our memory.
 */

const BLOCK = 512;

export interface TarEntry {
  path: string;
  content: Uint8Array;
}

function writeString(buf: Uint8Array, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > length) throw new Error(`tar field too long: ${value.slice(0, 40)}`);
  buf.set(bytes, offset);
}

function writeOctal(buf: Uint8Array, offset: number, length: number, value: number): void {
  writeString(buf, offset, length, value.toString(8).padStart(length - 1, '0'));
}

function header(
  path: string,
  size: number,
  type: '0' | '5',
  mode: number,
  uid: number,
  gid: number,
): Uint8Array {
  const h = new Uint8Array(BLOCK);
  let name = path;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    // ustar splits long paths at a '/' into prefix (155) + name (100).
    const cut = path.lastIndexOf('/', 155);
    if (cut <= 0 || Buffer.byteLength(path.slice(cut + 1)) > 100)
      throw new Error(`path too long for tar: ${path}`);
    prefix = path.slice(0, cut);
    name = path.slice(cut + 1);
  }
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, mode);
  writeOctal(h, 108, 8, uid);
  writeOctal(h, 116, 8, gid);
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, Math.floor(Date.now() / 1000));
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  writeString(h, 156, 1, type);
  writeString(h, 257, 6, 'ustar');
  writeString(h, 263, 2, '00');
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const b of h) sum += b;
  writeString(h, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

/** Builds a tar of `files` (parent directories added), owned by uid:gid. */
export function createTar(files: TarEntry[], owner = { uid: 0, gid: 0 }, fileMode = 0o644): Uint8Array {
  const chunks: Uint8Array[] = [];
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      chunks.push(header(`${dir}/`, 0, '5', 0o755, owner.uid, owner.gid));
    }
    chunks.push(header(f.path, f.content.byteLength, '0', fileMode, owner.uid, owner.gid));
    chunks.push(f.content);
    const pad = (BLOCK - (f.content.byteLength % BLOCK)) % BLOCK;
    if (pad) chunks.push(new Uint8Array(pad));
  }
  chunks.push(new Uint8Array(BLOCK * 2));
  return Buffer.concat(chunks);
}

function readString(buf: Uint8Array, offset: number, length: number): string {
  const slice = buf.subarray(offset, offset + length);
  const end = slice.indexOf(0);
  return Buffer.from(end === -1 ? slice : slice.subarray(0, end)).toString('utf8');
}

function readOctal(buf: Uint8Array, offset: number, length: number): number {
  const s = readString(buf, offset, length).trim();
  return s ? Number.parseInt(s, 8) : 0;
}

/**
 * Parses regular files out of a tar. Skips everything else (links, devices). Throws when the total file bytes
 * would exceed maxBytes, so callers can refuse oversized outputs.
 */
export function parseTar(tar: Uint8Array, maxBytes: number): TarEntry[] {
  const out: TarEntry[] = [];
  let total = 0;
  let offset = 0;
  let longName: string | null = null;
  while (offset + BLOCK <= tar.length) {
    const h = tar.subarray(offset, offset + BLOCK);
    if (h.every((b) => b === 0)) break;
    const size = readOctal(h, 124, 12);
    const type = String.fromCharCode(h[156] || 0x30);
    const prefix = readString(h, 345, 155);
    const name = readString(h, 0, 100);
    const dataStart = offset + BLOCK;
    const data = tar.subarray(dataStart, dataStart + size);
    offset = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    if (type === 'L') {
      // GNU long name: the next header's name is in this entry's data.
      longName = readString(data, 0, data.length);
      continue;
    }
    if (type === 'x' || type === 'g') continue; // pax headers: no fields we need
    const path = longName ?? (prefix ? `${prefix}/${name}` : name);
    longName = null;
    if (type !== '0' && type !== '\0' && type !== '7') continue;
    total += size;
    if (total > maxBytes) throw new Error(`archive exceeds ${maxBytes} bytes`);
    out.push({ path, content: Uint8Array.from(data) });
  }
  return out;
}
