/**
 * The connection stack of every meshrun libp2p host (daemon, CLI client, tests of the network code): TCP, the
 * cluster key's private network, Noise and Yamux with meshrun's hot-path fixes (noise-encrypter.ts,
 * yamux-muxer.ts). One definition, so that a peer and the code testing it cannot drift apart.
 */
import { tcp } from '@libp2p/tcp';
import { meshrunNoise } from './noise-encrypter.ts';
import { clusterKeyProtector } from './private-network.ts';
import { meshrunYamux } from './yamux-muxer.ts';

/** Spread into `createLibp2p({ ...meshrunStack(clusterKeyFile), … })`. */
export function meshrunStack(clusterKeyFile: Uint8Array) {
  return {
    transports: [tcp()],
    connectionProtector: clusterKeyProtector(clusterKeyFile),
    connectionEncrypters: [meshrunNoise()],
    streamMuxers: [meshrunYamux()],
  };
}
