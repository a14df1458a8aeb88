/**
 * Prometheus metrics of the consensus and job layers, next to the foundation's (daemon.ts) on `/metrics`.
 * This node's task slots and undelivered reports, and what an operator alerts on, as etcd and Nomad expose
 * it: whether this node sees a leader and is one, the
 * Raft term (a rising term means elections), how far its applied index trails the commit index, the size of
 * the membership; how much work the cluster holds (from the replicated job state, so every node reports the
 * same figures as of what it has applied); and how the runs on this node ended.
 *
 * Read at scrape time (gauges' collect) from what the services already keep: nothing here runs per task,
 * except one counter increment when a run on this node ends.
 */
import type { ClusterService } from '@meshrun/core/cluster/cluster-service.ts';
import type { JobsService } from '@meshrun/core/cluster/jobs-service.ts';
import type { JobStateMachine } from '@meshrun/core/jobs/state-machine.ts';
import { TaskOutcomeSchema } from '@meshrun/protocol';
import { Counter, Gauge, type Registry } from 'prom-client';

/** The fields of ClusterService.status() read here. */
interface RaftStatus {
  leader: string | null;
  term: number;
  commit: number;
  applied: number;
  role: string;
  voters: unknown[];
  learners: unknown[];
}

export function registerClusterMetrics(
  registry: Registry,
  o: { cluster: ClusterService; machine: JobStateMachine; jobs: JobsService },
): void {
  const raft = () => o.cluster.status() as unknown as RaftStatus;
  const gauges: [string, string, () => number][] = [
    [
      'meshrun_tasks_running',
      'Tasks running on this node (holding one of its slots)',
      () => o.jobs.runningCount(),
    ],
    [
      'meshrun_tasks_held_ready',
      'Tasks assigned to this node and waiting for a free slot (prefetched after short tasks)',
      () => o.jobs.heldReadyCount(),
    ],
    [
      'meshrun_reports_undelivered',
      'Reports of ended tasks the log has not taken yet (no leader reachable); offered again every heartbeat',
      () => o.jobs.undeliveredReportCount(),
    ],
    ['meshrun_raft_has_leader', '1 when this node knows a Raft leader', () => (raft().leader ? 1 : 0)],
    [
      'meshrun_raft_is_leader',
      '1 when this node is the Raft leader',
      () => (raft().role === 'leader' ? 1 : 0),
    ],
    ['meshrun_raft_term', 'Raft term this node is in (each election raises it)', () => raft().term],
    ['meshrun_raft_commit_index', 'Highest log index this node knows to be committed', () => raft().commit],
    ['meshrun_raft_applied_index', 'Highest log index applied to the job state here', () => raft().applied],
    ['meshrun_raft_voters', 'Voting members of the cluster', () => raft().voters.length],
    ['meshrun_raft_learners', 'Non-voting members catching up or standing by', () => raft().learners.length],
    [
      'meshrun_cluster_jobs_unfinished',
      'Jobs in the replicated state that have not ended (as applied on this node)',
      () => o.machine.stats().activeJobs,
    ],
    [
      'meshrun_cluster_tasks_unfinished',
      'Tasks of the cluster that have not ended: queued, assigned or running',
      () => o.machine.stats().activeTasks,
    ],
    [
      'meshrun_cluster_tasks_queued',
      'Tasks of the cluster waiting for a node (the scheduler has not placed them)',
      () => o.machine.stats().queued,
    ],
    [
      'meshrun_cluster_tasks_live',
      'Tasks of the cluster assigned to a node or running there',
      () => o.machine.stats().live,
    ],
  ];
  for (const [name, help, read] of gauges) {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  }

  const runs = new Counter({
    name: 'meshrun_task_runs_total',
    help: 'Runs this node finished and reported since it started, by outcome (cancelled runs are not counted)',
    labelNames: ['outcome'],
    registers: [registry],
  });
  // Every outcome has a series from the start, so a rate over it is defined before the first failure.
  for (const outcome of TaskOutcomeSchema.options) runs.inc({ outcome }, 0);
  o.jobs.events.on('finished', (e: { outcome: string }) => runs.inc({ outcome: e.outcome }));
}
