/**
 * The "holder" image: a few hundred bytes holding one static binary that only waits (like Kubernetes' pause
 * container). A holder container keeps a task's tmpfs scratch volume mounted while we copy inputs in before the
 * task starts and outputs out after it exits (the engine's archive API cannot reach a container's own tmpfs, and
 * an unmounted tmpfs volume loses its contents). We generate the binary here so no image has to be pulled.
 */
import { createTar } from './tar.ts';

const BASE = 0x400000;

/** Machine code for "forever: wait for a signal" per engine architecture. */
const CODE: Record<string, { machine: number; align: number; code: number[] }> = {
  // loop: mov eax, 34 (pause); syscall; jmp loop
  x86_64: { machine: 62, align: 0x1000, code: [0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7] },
  // loop: x0..x3 = 0; x8 = 73 (ppoll); svc #0; b loop   -- aarch64 has no pause(2). Not exercised by tests here.
  aarch64: {
    machine: 183,
    align: 0x10000,
    code: [0xd2800000, 0xd2800001, 0xd2800002, 0xd2800003, 0xd2800928, 0xd4000001, 0x17fffffa].flatMap(
      (w) => [w & 0xff, (w >>> 8) & 0xff, (w >>> 16) & 0xff, (w >>> 24) & 0xff],
    ),
  },
};

export function holderArchSupported(arch: string): boolean {
  return normalizeArch(arch) in CODE;
}

function normalizeArch(arch: string): string {
  if (arch === 'amd64' || arch === 'x64') return 'x86_64';
  if (arch === 'arm64') return 'aarch64';
  return arch;
}

/** A minimal static ELF64 executable: one PT_LOAD segment with the code right after the headers. */
export function pauseElf(arch: string): Uint8Array {
  const spec = CODE[normalizeArch(arch)];
  if (!spec) throw new Error(`no holder binary for architecture ${arch}`);
  const headerSize = 64 + 56;
  const size = headerSize + spec.code.length;
  const b = Buffer.alloc(size);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0); // ELF, 64-bit, little endian, version 1, SysV
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(spec.machine, 18);
  b.writeUInt32LE(1, 20);
  b.writeBigUInt64LE(BigInt(BASE + headerSize), 24); // entry
  b.writeBigUInt64LE(64n, 32); // program headers right after the ELF header
  b.writeUInt16LE(64, 52); // ehsize
  b.writeUInt16LE(56, 54); // phentsize
  b.writeUInt16LE(1, 56); // phnum
  const ph = 64;
  b.writeUInt32LE(1, ph); // PT_LOAD
  b.writeUInt32LE(5, ph + 4); // R+X
  b.writeBigUInt64LE(0n, ph + 8);
  b.writeBigUInt64LE(BigInt(BASE), ph + 16);
  b.writeBigUInt64LE(BigInt(BASE), ph + 24);
  b.writeBigUInt64LE(BigInt(size), ph + 32);
  b.writeBigUInt64LE(BigInt(size), ph + 40);
  b.writeBigUInt64LE(BigInt(spec.align), ph + 48);
  b.set(spec.code, headerSize);
  return b;
}

/** Root filesystem tar for `docker import`: /pause plus an empty /scratch mount point. */
export function holderRootfsTar(arch: string): Uint8Array {
  return createTar([{ path: 'pause', content: pauseElf(arch) }], { uid: 0, gid: 0 }, 0o755);
}
