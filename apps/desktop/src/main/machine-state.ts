/**
 * Samples what the rules need from the real machine. Electron's powerMonitor knows user idle time and AC
 * power; systeminformation reads battery, temperatures and processes. Every probe is optional: a missing
 * sensor yields null (never a pause), and the expensive process list is read only when the volunteer listed
 * programs, and at most every PROCESS_SAMPLE_MS.
 */
import { powerMonitor } from 'electron';
import si from 'systeminformation';
import type { MachineState } from './rules.ts';

export const PROCESS_SAMPLE_MS = 30_000;
/** GPU temperature comes from vendor tools (nvidia-smi…) that cost a process spawn: sample it less often. */
export const GPU_SAMPLE_MS = 15_000;
/** Bound on process names kept per sample. */
export const MAX_PROCESS_NAMES = 4096;

export interface Hardware {
  logicalCores: number;
  memoryBytes: number;
  gpuCount: number;
}

export class MachineSampler {
  readonly #hardware: Hardware;
  #processes: string[] = [];
  #processesAt = 0;
  #gpuTempC: number | null = null;
  #gpuTempAt = 0;
  #idleSince: number | null = null;
  #activeSince: number | null = null;

  constructor(hardware: Hardware) {
    this.#hardware = hardware;
  }

  static async create(): Promise<MachineSampler> {
    const [cpu, mem, graphics] = await Promise.all([
      si.cpu(),
      si.mem(),
      si.graphics().catch(() => ({ controllers: [] })),
    ]);
    return new MachineSampler({
      logicalCores: cpu.cores,
      memoryBytes: mem.total,
      gpuCount: graphics.controllers.filter((c) => (c.vram ?? 0) > 256).length,
    });
  }

  async sample(wantProcesses: boolean): Promise<MachineState> {
    const now = Date.now();
    const idleSeconds = powerMonitor.getSystemIdleTime();
    if (idleSeconds < 5) {
      this.#activeSince ??= now;
      this.#idleSince = null;
    } else {
      this.#idleSince ??= now - idleSeconds * 1000;
      this.#activeSince = null;
    }
    const [battery, cpuTemp, gpuTempC] = await Promise.all([
      si.battery().catch(() => null),
      si.cpuTemperature().catch(() => null),
      this.#gpuTemperature(),
    ]);
    if (wantProcesses && now - this.#processesAt >= PROCESS_SAMPLE_MS) {
      const list = await si.processes().catch(() => null);
      if (list) {
        this.#processes = list.list.slice(0, MAX_PROCESS_NAMES).map((p) => p.name);
        this.#processesAt = now;
      }
    }
    return {
      now,
      idleSeconds,
      userActiveSince: this.#activeSince,
      onBattery: powerMonitor.isOnBatteryPower(),
      batteryPercent: battery?.hasBattery ? battery.percent : null,
      cpuTempC: typeof cpuTemp?.main === 'number' && cpuTemp.main > 0 ? cpuTemp.main : null,
      gpuTempC,
      runningProcesses: wantProcesses ? this.#processes : [],
      hardware: this.#hardware,
    };
  }

  async #gpuTemperature(): Promise<number | null> {
    if (this.#hardware.gpuCount === 0) return null;
    if (Date.now() - this.#gpuTempAt < GPU_SAMPLE_MS) return this.#gpuTempC;
    this.#gpuTempAt = Date.now();
    this.#gpuTempC = await this.#readGpuTemperature();
    return this.#gpuTempC;
  }

  async #readGpuTemperature(): Promise<number | null> {
    const graphics = await si.graphics().catch(() => null);
    const temps = (graphics?.controllers ?? [])
      .map((c) => c.temperatureGpu)
      .filter((t): t is number => typeof t === 'number');
    return temps.length ? Math.max(...temps) : null;
  }
}
