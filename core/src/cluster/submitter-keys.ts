/**
 * Submitter identity: a submitter is an Ed25519 key pair. Its public ID is the libp2p peer-ID form of the key
 * (`12D3KooW…`), which is self-certifying: anyone can check a signature against the ID alone. The CLI signs
 * every request it sends with `--key FILE`; the signed envelope travels into the Raft log with the job, so every
 * node re-checks it when it applies the entry (a compromised peer cannot submit in someone else's name).
 */
import { createPublicKey, randomBytes, verify as verifySignature } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { bytesSchema, encode, fromJsonText, toJsonText } from '@meshrun/protocol';
import { z } from 'zod';

/** How far a request's timestamp may be from the receiver's clock. */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;
const DOMAIN = new TextEncoder().encode('meshrun-request-v1:');

const KeyFileSchema = z.object({
  type: z.literal('meshrun-submitter-key'),
  privateKey: z.string().max(4096),
});

export const RequestAuthSchema = z.object({
  key: z.string().min(1).max(128),
  at: z.number().int().nonnegative(),
  nonce: z.string().regex(/^[0-9a-f]{32}$/),
  sig: bytesSchema(1024, 'signature'),
});
export type RequestAuth = z.infer<typeof RequestAuthSchema>;

export interface SubmitterKey {
  id: string;
  privateKey: PrivateKey;
}

export async function writeNewSubmitterKey(file: string): Promise<string> {
  const key = await generateKeyPair('Ed25519');
  const body = {
    type: 'meshrun-submitter-key',
    privateKey: Buffer.from(privateKeyToProtobuf(key)).toString('base64'),
  };
  await writeFile(file, `${JSON.stringify(body)}\n`, { mode: 0o600, flag: 'wx' });
  return peerIdFromPrivateKey(key).toString();
}

export async function readSubmitterKey(file: string): Promise<SubmitterKey> {
  let parsed: z.infer<typeof KeyFileSchema>;
  try {
    parsed = KeyFileSchema.parse(JSON.parse(await readFile(file, 'utf8')));
  } catch (err) {
    throw new Error(
      `${file} is not a meshrun submitter key (make one with \`meshrun keys new FILE\`): ${(err as Error).message}`,
    );
  }
  const privateKey = privateKeyFromProtobuf(Buffer.from(parsed.privateKey, 'base64'));
  return { id: peerIdFromPrivateKey(privateKey).toString(), privateKey };
}

/** What is signed: the method and its params exactly as sent, with a timestamp and a nonce against replay. */
function signedBytes(method: string, params: unknown, at: number, nonce: string): Uint8Array {
  const body = encode({ method, params: params ?? {}, at, nonce });
  const out = new Uint8Array(DOMAIN.byteLength + body.byteLength);
  out.set(DOMAIN, 0);
  out.set(body, DOMAIN.byteLength);
  return out;
}

export async function signRequest(
  key: SubmitterKey,
  method: string,
  params: unknown,
  now = Date.now(),
): Promise<RequestAuth> {
  const nonce = randomBytes(16).toString('hex');
  const sig = await key.privateKey.sign(signedBytes(method, params, now, nonce));
  return { key: key.id, at: now, nonce, sig };
}

/** SPKI DER prefix of an Ed25519 public key: lets node:crypto verify synchronously (log apply is synchronous). */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/**
 * Checks a request signature (not trust or role), synchronously so the log's apply step can run it. Returns an
 * error message, or null when valid. `now` is the checker's clock (for a log entry: the entry's own time).
 */
export function verifyRequest(
  auth: RequestAuth,
  method: string,
  params: unknown,
  now: number,
): string | null {
  if (Math.abs(now - auth.at) > MAX_CLOCK_SKEW_MS)
    return `request timestamp is more than ${MAX_CLOCK_SKEW_MS / 60_000} min off (check the clock)`;
  let raw: Uint8Array | undefined;
  try {
    const pub = peerIdFromString(auth.key).publicKey;
    if (pub?.type === 'Ed25519') raw = pub.raw;
  } catch {}
  if (!raw) return `"${auth.key}" is not a submitter key ID`;
  const key = createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, raw]),
    format: 'der',
    type: 'spki',
  });
  const ok = verifySignature(null, signedBytes(method, params, auth.at, auth.nonce), key, auth.sig);
  return ok ? null : `bad signature for key ${auth.key}`;
}

/** Round-trips params through JSON (what the HTTP API does) so signer and verifier see the same value on every path. */
export function canonicalParams(params: unknown): unknown {
  return fromJsonText(toJsonText(params ?? {}));
}
