/**
 * Protocol identifiers spoken on a meshrun node's libp2p host. The version is part of the ID: a change to a
 * message schema that an old node cannot read gets a new version, and both are served while nodes migrate.
 */
export const PROTOCOLS = {
  /**
   * CLI or peer → node: one request, one response (or a stream of items) per libp2p stream. Workers also
   * heartbeat to the leader here (`work.heartbeat`, on a stream the worker dials, so NAT'd workers work).
   */
  control: '/meshrun/control/1.0.0',
  /**
   * CLI or peer → node: many unary calls on one long-lived stream, each request tagged with an id that its
   * response carries back (answers come in completion order). Saves opening a stream per call; streaming
   * methods (log follow) stay on `control`.
   */
  controlSession: '/meshrun/control-session/1.0.0',
  /** Node → node: pushes the sender's hardware advertisement; the receiver stores it in its table. */
  advert: '/meshrun/advert/1.0.0',
  /** Node → node: Raft consensus messages, one long-lived outbound stream per peer. */
  raft: '/meshrun/raft/1.0.0',
} as const;

export type ProtocolId = (typeof PROTOCOLS)[keyof typeof PROTOCOLS];
