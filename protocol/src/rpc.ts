/**
 * The control protocol: one request per stream, answered by one response, or by a sequence of `item`
 * frames closed by an `end` frame for streaming methods (log follow). Used by the CLI over libp2p
 * (`--peer`) and over the local HTTP API, and by nodes to ask each other (e.g. fetch logs from the node
 * that ran a task). Methods and their params are validated by the handler registry in core/.
 */
import { z } from 'zod';

export const MAX_METHOD_LENGTH = 64;

export const RpcRequestSchema = z.object({
  method: z
    .string()
    .min(1)
    .max(MAX_METHOD_LENGTH)
    .regex(/^[a-z][a-zA-Z0-9.]*$/),
  params: z.unknown().optional(),
  /** Optional bearer credential (submitter signature envelope etc.); validated by the method. */
  auth: z.unknown().optional(),
});
export type RpcRequest = z.infer<typeof RpcRequestSchema>;

export const RpcErrorSchema = z.object({
  code: z.string().max(64),
  message: z.string().max(8192),
});
export type RpcError = z.infer<typeof RpcErrorSchema>;

export const RpcResponseSchema = z.union([
  z.object({ ok: z.literal(true), result: z.unknown() }),
  z.object({ ok: z.literal(false), error: RpcErrorSchema }),
  z.object({ item: z.unknown() }),
  z.object({ end: z.literal(true) }),
]);
export type RpcResponse = z.infer<typeof RpcResponseSchema>;

/** Stable error codes for RPC failures. */
export const RPC_ERRORS = {
  badRequest: 'BAD_REQUEST',
  unknownMethod: 'UNKNOWN_METHOD',
  notFound: 'NOT_FOUND',
  forbidden: 'FORBIDDEN',
  unavailable: 'UNAVAILABLE',
  internal: 'INTERNAL',
  refused: 'REFUSED',
} as const;

/** Request ids on a control session: the client's counter, echoed in the response. */
const sessionId = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** A request on a control session (`PROTOCOLS.controlSession`): a control request plus its id. */
export const SessionRequestSchema = RpcRequestSchema.extend({ id: sessionId });
export type SessionRequest = z.infer<typeof SessionRequestSchema>;

/** A response on a control session; unary only, so no `item`/`end` frames. */
export const SessionResponseSchema = z.union([
  z.object({ id: sessionId, ok: z.literal(true), result: z.unknown() }),
  z.object({ id: sessionId, ok: z.literal(false), error: RpcErrorSchema }),
]);
export type SessionResponse = z.infer<typeof SessionResponseSchema>;
