/**
 * The cluster membership key: a libp2p private-network pre-shared key (the 95-byte "swarm.key" format).
 * Every connection between nodes, and from the CLI to a node, is wrapped in it before Noise even starts,
 * so a process without the key cannot complete a handshake with any member.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { generateKey } from '@libp2p/pnet';

export class ClusterKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClusterKeyError';
  }
}

const HEADER = '/key/swarm/psk/1.0.0/';

/** Writes a new random cluster key to `file` (mode 0600; refuses to overwrite). */
export async function writeNewClusterKey(file: string): Promise<void> {
  const key = new Uint8Array(95);
  generateKey(key);
  await writeFile(file, key, { mode: 0o600, flag: 'wx' });
}

/** Reads and checks a cluster key file; returns the raw file bytes (what the private-network protector takes). */
export async function readClusterKey(file: string): Promise<Uint8Array> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new ClusterKeyError(`cannot read cluster key file ${file}: ${(err as Error).message}`);
  }
  const text = bytes.toString('utf8');
  const lines = text.trim().split(/\r?\n/);
  if (
    lines.length !== 3 ||
    `${lines[0]}\n` !== `${HEADER}\n` ||
    lines[1] !== '/base16/' ||
    !/^[0-9a-f]{64}$/i.test(lines[2] ?? '')
  ) {
    throw new ClusterKeyError(
      `${file} is not a meshrun cluster key (expected the 3-line swarm.key format made by \`meshrun keygen\`)`,
    );
  }
  return new Uint8Array(bytes);
}

/**
 * A short public fingerprint of the key: used as the mDNS service tag so nodes of other clusters on the same
 * LAN are not even discovered (they could not connect anyway). Reveals nothing usable about the key.
 */
export function clusterFingerprint(key: Uint8Array): string {
  return createHash('sha256').update('meshrun-cluster-fingerprint').update(key).digest('hex').slice(0, 12);
}
