/**
 * Wires a daemon's node to consensus and the job layer: the Raft transport and driver, the self-forming cluster
 * service, the job state machine, the executors (WASM always; Docker when an engine answers), task output
 * storage and the jobs service. Kept apart from daemon.ts so the foundation (identity, discovery, adverts,
 * API) reads on its own.
 */
import { ClusterService, JobLogStateMachine } from '@meshrun/core/cluster/cluster-service.ts';
import { JobsService } from '@meshrun/core/cluster/jobs-service.ts';
import { LevelOutboxStore } from '@meshrun/core/cluster/outbox-store.ts';
import { openConsensusDriver } from '@meshrun/core/cluster/raft-driver.ts';
import { TaskOutputStore } from '@meshrun/core/cluster/task-output.ts';
import { DockerExecutor } from '@meshrun/core/executors/docker.ts';
import type { Executor, NodePolicy } from '@meshrun/core/executors/types.ts';
import { WasmExecutor } from '@meshrun/core/executors/wasm.ts';
import { JobStateMachine } from '@meshrun/core/jobs/state-machine.ts';
import { registerClusterMetrics } from './cluster-metrics.ts';
import type { Daemon } from './daemon.ts';

/** Scratch space each task gets (tmpfs for Docker, quota'd dir for WASM). */
export const TASK_SCRATCH_BYTES = 256 * 1024 * 1024;
/** Processes/threads a task may create. */
export const TASK_MAX_PIDS = 256;

export interface NodeServices {
  cluster: ClusterService;
  jobs: JobsService;
  stop(): Promise<void>;
}

/** Raft's clock: heartbeats every 2 ticks (100 ms), elections after `liveness.electionMs`. */
const RAFT_TICK_MS = 50;

export async function startNodeServices(daemon: Daemon): Promise<NodeServices> {
  const { node, db, log, config } = daemon;
  const machine = new JobStateMachine();
  const stateMachine = new JobLogStateMachine(machine);
  const driver = await openConsensusDriver({
    libp2p: node.libp2p,
    id: node.peerId,
    db,
    stateMachine,
    log: log.child({ mod: 'raft' }),
    tickMs: RAFT_TICK_MS,
    electionTick: Math.max(4, Math.round(config.liveness.electionMs / RAFT_TICK_MS)),
    heartbeatTick: 2,
    snapshotEvery: config.raftLog.snapshotEntries,
    keepEntries: config.raftLog.catchUpEntries,
    maxInflight: config.raftLog.maxInflight,
  });

  const wasm = new WasmExecutor();
  await wasm.cleanupLeftovers().catch(() => 0);
  const executors: Partial<Record<'docker' | 'wasm', Executor>> = { wasm };
  if (daemon.hardware().docker.available) {
    const nvidia = daemon.hardware().gpus.filter((g) => g.vendor === 'nvidia').length;
    const docker = new DockerExecutor({ nodeId: node.peerId, gpus: nvidia > 0 ? { nvidia } : {} });
    // Containers of ours left by a crash of this node are gone before we take new work.
    const removed = await docker.cleanupLeftovers().catch((err: Error) => {
      log.warn({ err: err.message }, 'could not clean up leftover containers');
      return 0;
    });
    if (removed > 0) log.info({ removed }, 'removed containers left by a previous run');
    executors.docker = docker;
  }

  const cluster = new ClusterService({
    node,
    db,
    log: log.child({ mod: 'cluster' }),
    driver,
    machine,
    stateMachine,
    targetVoters: config.voters,
    deadVoterAfterMs: config.liveness.deadVoterMs,
    onChange: () => daemon.refreshAdvertisement(),
  });
  daemon.setClusterView(() => cluster.view());

  const policy = (): NodePolicy => {
    const offered = node.ownAdvertisement().offered;
    return {
      allowNetwork: offered.network,
      allowGpu: offered.gpus.length > 0,
      allowedExecutors: offered.executors,
      maxMemoryBytes: offered.memoryBytes,
      maxCpus: offered.cpus,
      maxPids: TASK_MAX_PIDS,
      scratchBytes: TASK_SCRATCH_BYTES,
    };
  };
  const jobs = new JobsService({
    node,
    log: log.child({ mod: 'jobs' }),
    machine,
    commands: cluster,
    applied: stateMachine.applied,
    executors,
    policy,
    output: new TaskOutputStore(db),
    outboxStore: new LevelOutboxStore(db),
    heartbeatMs: config.liveness.heartbeatMs,
    nodeTtlMs: config.liveness.nodeTtlMs,
    nodeGraceMs: config.liveness.nodeGraceMs,
  });
  jobs.start();
  await cluster.start();
  registerClusterMetrics(daemon.metrics, { cluster, machine, jobs });

  // Runs this node had when it stopped are gone: once the log is replayed and a leader is known, say so.
  let recovered = false;
  const recovery = setInterval(() => {
    if (recovered || !cluster.leaderId()) return;
    recovered = true;
    clearInterval(recovery);
    void jobs.recoverAfterRestart();
  }, 500);
  recovery.unref();

  return {
    cluster,
    jobs,
    async stop() {
      clearInterval(recovery);
      await jobs.stop();
      await cluster.stop();
      await wasm.close();
    },
  };
}
