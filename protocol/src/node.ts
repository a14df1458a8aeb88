/**
 * A node's advertisement: what hardware it has, what of it the owner offers, and its labels. Every node
 * pushes its own to its peers (protocol `advert`) and keeps a table of everyone's; `meshrun nodes --json`
 * prints that table (shape documented in protocol/README.md).
 */
import { z } from 'zod';
import { bytesSchema } from './codec.ts';
import { NodeModeSchema } from './job.ts';

/** Bounds so a hostile peer cannot grow our node table's memory. */
export const ADVERT_LIMITS = {
  maxLabels: 64,
  maxLabelKeyLength: 63,
  maxLabelValueLength: 256,
  maxGpus: 32,
  maxDisks: 32,
  maxStringLength: 256,
  maxAddrs: 32,
  maxNodesInTable: 10_000,
} as const;

const str = z.string().max(ADVERT_LIMITS.maxStringLength);
const nonNegInt = z.number().int().nonnegative();
export const LABEL_KEY_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9._/-]*$/;

export const LabelsSchema = z
  .record(
    z.string().max(ADVERT_LIMITS.maxLabelKeyLength).regex(LABEL_KEY_PATTERN),
    z.string().max(ADVERT_LIMITS.maxLabelValueLength),
  )
  .refine(
    (l) => Object.keys(l).length <= ADVERT_LIMITS.maxLabels,
    `at most ${ADVERT_LIMITS.maxLabels} labels`,
  );

export const GpuSchema = z.object({
  vendor: str,
  model: str,
  vramBytes: nonNegInt,
});

export const HardwareSchema = z.object({
  cpu: z.object({
    model: str,
    physicalCores: nonNegInt,
    logicalCores: nonNegInt,
    arch: str,
  }),
  memoryBytes: nonNegInt,
  disk: z.object({ path: str.max(4096), freeBytes: nonNegInt, totalBytes: nonNegInt }),
  gpus: z.array(GpuSchema).max(ADVERT_LIMITS.maxGpus),
  os: z.object({ platform: str, distro: str, release: str, kernel: str }),
  docker: z.object({ available: z.boolean(), version: str.nullable(), nvidiaRuntime: z.boolean() }),
});
export type Hardware = z.infer<typeof HardwareSchema>;

export const ExecutorKindSchema = z.enum(['docker', 'wasm']);
export type ExecutorKind = z.infer<typeof ExecutorKindSchema>;

/** What the owner is willing to give; the scheduler never places more than this on the node. */
export const OfferedSchema = z.object({
  cpus: z.number().nonnegative().max(4096),
  memoryBytes: nonNegInt,
  diskBytes: nonNegInt,
  gpus: z.array(GpuSchema).max(ADVERT_LIMITS.maxGpus),
  executors: z.array(ExecutorKindSchema).max(2),
  maxConcurrent: z.number().int().min(0).max(10_000),
  network: z.boolean(),
  /** The owner runs only jobs of these submitters (key names or IDs); absent = anyone the cluster trusts. */
  allowedSubmitters: z.array(z.string().min(1).max(256)).max(256).optional(),
});
export type Offered = z.infer<typeof OfferedSchema>;

export const AdvertisementSchema = z.object({
  peerId: z.string().min(1).max(128),
  /** Monotonic per node: a receiver ignores an advertisement older than the one it holds. */
  seq: nonNegInt,
  hostname: str,
  addrs: z.array(z.string().max(512)).max(ADVERT_LIMITS.maxAddrs),
  labels: LabelsSchema,
  hardware: HardwareSchema,
  offered: OfferedSchema,
  mode: NodeModeSchema,
  pausedReason: z.string().max(512).nullable(),
  version: str,
  startedAt: nonNegInt,
  /** The node's view of the Raft cluster: lets undecided nodes join an existing cluster instead of forming one. */
  cluster: z
    .object({
      id: z.string().max(64).nullable(),
      leader: z.string().max(128).nullable(),
      role: z.enum(['leader', 'follower', 'learner', 'candidate', 'none']),
      term: nonNegInt,
    })
    .optional(),
});
export type Advertisement = z.infer<typeof AdvertisementSchema>;

/** One row of `meshrun nodes --json`: the advertisement plus what the viewing node knows of it. */
export type NodeRow = Advertisement & {
  /** True for the node answering the query. */
  self: boolean;
  /** Connected right now (from the answering node's point of view). */
  connected: boolean;
  /** When the answering node last received this advertisement (ms since epoch). */
  lastSeen: number;
};

/**
 * Advertisements travel signed by the node they describe (Ed25519, the node's libp2p identity key), so any node
 * can relay everyone's advertisements (the table converges even when not every pair is connected yet) while no
 * node can forge another's hardware, offer or mode.
 */
export const SignedAdvertSchema = z.object({
  payload: bytesSchema(64 * 1024, 'advertisement'),
  signature: bytesSchema(1024, 'signature'),
});
export type SignedAdvert = z.infer<typeof SignedAdvertSchema>;

/** One push on the advert protocol: a batch of signed advertisements (the sender's own and relayed ones). */
export const AdvertPushSchema = z.object({
  adverts: z.array(SignedAdvertSchema).max(256),
});
export const ADVERT_DOMAIN = new TextEncoder().encode('meshrun-advert-v1:');
