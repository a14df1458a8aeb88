/**
 * Reads this machine's hardware with `systeminformation`, and derives what the node offers by default.
 * Gathering is slow (hundreds of ms), so the daemon does it at start and on a slow refresh, never per request.
 */
import { statfs } from 'node:fs/promises';
import os from 'node:os';
import type { Hardware, Offered } from '@meshrun/protocol';
import si from 'systeminformation';

export interface HardwareProbeOptions {
  /** Directory whose filesystem's free space is reported (the node's data dir). */
  dataDir: string;
  /** Whether to probe the Docker engine (systeminformation talks to /var/run/docker.sock). */
  probeDocker?: boolean;
}

function vendorOf(raw: string): string {
  const v = raw.toLowerCase();
  if (v.includes('nvidia')) return 'nvidia';
  if (v.includes('amd') || v.includes('advanced micro')) return 'amd';
  if (v.includes('intel')) return 'intel';
  return v.slice(0, 64) || 'unknown';
}

export async function probeHardware(options: HardwareProbeOptions): Promise<Hardware> {
  const [cpu, mem, osInfo, graphics, docker, fsStat] = await Promise.all([
    si.cpu(),
    si.mem(),
    si.osInfo(),
    si.graphics().catch(() => ({ controllers: [] as si.Systeminformation.GraphicsControllerData[] })),
    options.probeDocker === false ? Promise.resolve(null) : si.dockerInfo().catch(() => null),
    statfs(options.dataDir).catch(() => null),
  ]);
  const gpus = graphics.controllers
    // Virtual display adapters (QEMU/Cirrus/VMware) are not compute GPUs.
    .filter((g) => g.vram !== null && g.vram !== undefined && g.vram > 0)
    .filter((g) => !/cirrus|qemu|vmware|virtio|bochs|red hat/i.test(`${g.vendor} ${g.model}`))
    .map((g) => ({
      vendor: vendorOf(g.vendor ?? ''),
      model: String(g.model ?? 'unknown').slice(0, 256),
      vramBytes: Math.round((g.vram ?? 0) * 1024 * 1024),
    }));
  const dockerVersion =
    docker && typeof docker.serverVersion === 'string' && docker.serverVersion ? docker.serverVersion : null;
  const runtimes = docker as unknown as { runtimes?: Record<string, unknown> } | null;
  return {
    cpu: {
      model: `${cpu.manufacturer} ${cpu.brand}`.trim().slice(0, 256),
      physicalCores: cpu.physicalCores,
      logicalCores: cpu.cores,
      arch: os.arch(),
    },
    memoryBytes: mem.total,
    disk: {
      path: options.dataDir,
      freeBytes: fsStat ? fsStat.bavail * fsStat.bsize : 0,
      totalBytes: fsStat ? fsStat.blocks * fsStat.bsize : 0,
    },
    gpus,
    os: {
      platform: osInfo.platform,
      distro: String(osInfo.distro ?? '').slice(0, 256),
      release: String(osInfo.release ?? '').slice(0, 256),
      kernel: String(osInfo.kernel ?? '').slice(0, 256),
    },
    docker: {
      available: dockerVersion !== null,
      version: dockerVersion,
      nvidiaRuntime: Boolean(runtimes?.runtimes && 'nvidia' in runtimes.runtimes),
    },
  };
}

export interface OfferLimits {
  cpus?: number;
  memoryBytes?: number;
  diskBytes?: number;
  gpus?: boolean;
  maxConcurrent?: number;
  executors?: ('docker' | 'wasm')[];
  network?: boolean;
  allowedSubmitters?: string[];
}

/**
 * What the node offers: by default all cores, 80% of memory (the OS and the daemon need the rest), 50% of the
 * data dir's free space, its GPUs, and WASM always (it needs no install) plus Docker when an engine answers.
 * Owner limits only ever lower these numbers.
 */
export function deriveOffered(hw: Hardware, limits: OfferLimits = {}): Offered {
  const cpus = Math.min(hw.cpu.logicalCores, limits.cpus ?? hw.cpu.logicalCores);
  const memoryBytes = Math.min(
    Math.floor(hw.memoryBytes * 0.8),
    limits.memoryBytes ?? Number.MAX_SAFE_INTEGER,
  );
  const diskBytes = Math.min(
    Math.floor(hw.disk.freeBytes * 0.5),
    limits.diskBytes ?? Number.MAX_SAFE_INTEGER,
  );
  const possible: ('docker' | 'wasm')[] = hw.docker.available ? ['docker', 'wasm'] : ['wasm'];
  const executors = limits.executors ? possible.filter((e) => limits.executors?.includes(e)) : possible;
  return {
    cpus: Math.max(0, cpus),
    memoryBytes: Math.max(0, memoryBytes),
    diskBytes: Math.max(0, diskBytes),
    gpus: limits.gpus === false ? [] : hw.gpus,
    executors,
    maxConcurrent: limits.maxConcurrent ?? Math.max(1, hw.cpu.logicalCores * 2),
    network: limits.network ?? false,
    ...(limits.allowedSubmitters ? { allowedSubmitters: [...limits.allowedSubmitters] } : {}),
  };
}
