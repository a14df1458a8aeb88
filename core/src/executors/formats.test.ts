/** Unit tests for the byte formats the executors produce and parse: tar, the holder ELF, wasm memory limits. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pauseElf } from './holder-image.ts';
import { createTar, parseTar } from './tar.ts';
import { capMemory, memoryInfo } from './wasm-module.ts';

describe('tar', () => {
  it('round-trips files, including nested and long paths, and the system tar agrees', () => {
    const long = `${'d'.repeat(80)}/${'e'.repeat(60)}/file.txt`;
    const files = [
      { path: 'a.txt', content: Buffer.from('hello') },
      { path: 'dir/b.bin', content: new Uint8Array(1000).fill(7) },
      { path: long, content: Buffer.from('deep') },
    ];
    const tar = createTar(files, { uid: 65534, gid: 65534 });
    const back = parseTar(tar, 1 << 20);
    assert.deepEqual(
      back.map((f) => [f.path, Buffer.from(f.content).toString('hex')]),
      files.map((f) => [f.path, Buffer.from(f.content).toString('hex')]),
    );
    const dir = mkdtempSync(join(tmpdir(), 'meshrun-tar-'));
    try {
      writeFileSync(join(dir, 'x.tar'), tar);
      execFileSync('tar', ['-xf', 'x.tar'], { cwd: dir });
      assert.equal(readFileSync(join(dir, long), 'utf8'), 'deep');
      assert.equal(readFileSync(join(dir, 'a.txt'), 'utf8'), 'hello');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('refuses archives over the byte budget', () => {
    const tar = createTar([{ path: 'big', content: new Uint8Array(5000) }]);
    assert.throws(() => parseTar(tar, 4999), /exceeds/);
  });
});

describe('holder ELF', () => {
  it('is a 64-bit little-endian executable for the asked architecture', () => {
    const x = pauseElf('x86_64');
    assert.deepEqual([...x.subarray(0, 6)], [0x7f, 0x45, 0x4c, 0x46, 2, 1]);
    assert.equal(Buffer.from(x).readUInt16LE(18), 62);
    assert.equal(Buffer.from(pauseElf('arm64')).readUInt16LE(18), 183);
    assert.throws(() => pauseElf('mips'), /no holder binary/);
  });
});

// (module (memory 1) ...) hand-assembled variants
const header = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0];
const memSection = (limits: number[]) => [5, limits.length + 1, 1, ...limits];
const typeSection = [1, 4, 1, 0x60, 0, 0]; // one type: () -> ()

describe('wasm memory limits', () => {
  it('adds a max to an unbounded memory and lowers a too-high max', async () => {
    const unbounded = new Uint8Array([...header, ...typeSection, ...memSection([0, 1])]);
    const capped = capMemory(unbounded, 16);
    assert.deepEqual(memoryInfo(capped).memories, [{ min: 1, max: 16 }]);
    const high = new Uint8Array([...header, ...memSection([1, 2, 0xc8, 0x01])]); // max 200
    assert.deepEqual(memoryInfo(capMemory(high, 16)).memories, [{ min: 2, max: 16 }]);
    const low = new Uint8Array([...header, ...memSection([1, 2, 4])]);
    assert.deepEqual(memoryInfo(capMemory(low, 16)).memories, [{ min: 2, max: 4 }]);
    // The patched module is still valid WebAssembly.
    await (
      globalThis as unknown as { WebAssembly: { compile(b: Uint8Array): Promise<unknown> } }
    ).WebAssembly.compile(capped);
  });
  it('refuses modules that need more than the cap at start, imported memories, and garbage', () => {
    assert.throws(() => capMemory(new Uint8Array([...header, ...memSection([0, 20])]), 16), /at start/);
    // import "e" "m" (memory 1)
    const imp = [2, 8, 1, 1, 0x65, 1, 0x6d, 2, 0, 1];
    assert.throws(() => capMemory(new Uint8Array([...header, ...imp]), 16), /import their memory/);
    assert.throws(() => capMemory(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), 16), /not a WebAssembly module/);
    assert.throws(() => capMemory(new Uint8Array([...header, 5, 40, 1]), 16), /past the end/);
  });
});
