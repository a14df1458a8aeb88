/**
 * The node's identity: an Ed25519 key created on first start and kept in the node's data dir (level), so the
 * peer ID survives restarts.
 */
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import type { Level } from 'level';

const IDENTITY_KEY = 'identity/private-key';

export async function loadOrCreateIdentity(
  db: Level<string, Uint8Array>,
): Promise<{ key: PrivateKey; created: boolean }> {
  const existing = await db.get(IDENTITY_KEY);
  if (existing !== undefined) {
    return { key: privateKeyFromProtobuf(existing), created: false };
  }
  const key = await generateKeyPair('Ed25519');
  await db.put(IDENTITY_KEY, privateKeyToProtobuf(key), { sync: true });
  return { key, created: true };
}
