/**
 * Opens the Raft driver (core/src/raft/driver.ts) of a node over its libp2p host: the driver's storage lives in
 * a sublevel of the node's data dir; its messages travel on the Raft protocol, validated by protocol/'s schema.
 */
import type { Libp2p } from '@libp2p/interface';
import { RaftMessageSchema } from '@meshrun/protocol';
import type { Level } from 'level';
import type { Logger } from 'pino';
import { RaftDriver } from '../raft/driver.ts';
import type { ConfChange, ConfState, Message, NodeId } from '../raft/types.ts';
import type { ConsensusDriver, JobLogStateMachine } from './cluster-service.ts';
import { Libp2pRaftTransport } from './raft-transport.ts';

export interface OpenConsensusOptions {
  libp2p: Libp2p;
  id: string;
  db: Level<string, Uint8Array>;
  stateMachine: JobLogStateMachine;
  log: Logger;
  /** Raft timing; defaults: 100 ms ticks, election after 10-20 ticks (1-2 s), a heartbeat every tick (Nomad: 1 s). */
  tickMs?: number;
  electionTick?: number;
  heartbeatTick?: number;
  /** Snapshot every this many applied entries, keeping `keepEntries` behind it (RaftDriver's options). */
  snapshotEvery?: number;
  keepEntries?: number;
  /** Append messages in flight to one follower (RaftDriver's option; etcd's MaxInflightMsgs). */
  maxInflight?: number;
}

export async function openConsensusDriver(o: OpenConsensusOptions): Promise<ConsensusDriver> {
  const wire = new Libp2pRaftTransport<Message>(o.libp2p, RaftMessageSchema as never, o.log);
  await wire.start();
  const driver = await RaftDriver.open({
    id: o.id,
    db: o.db.sublevel<string, Uint8Array>('raft', { valueEncoding: 'view' }),
    transport: {
      send: (_to: NodeId, msg: Message) => wire.send(msg),
      onMessage: (handler) => wire.onMessage((msg) => handler(msg.from, msg)),
    },
    stateMachine: o.stateMachine,
    tickMs: o.tickMs ?? 100,
    electionTick: o.electionTick ?? 10,
    heartbeatTick: o.heartbeatTick ?? 1,
    ...(o.snapshotEvery === undefined ? {} : { snapshotEvery: o.snapshotEvery }),
    ...(o.keepEntries === undefined ? {} : { keepEntries: o.keepEntries }),
    ...(o.maxInflight === undefined ? {} : { maxInflight: o.maxInflight }),
    onFatal: (err) => o.log.fatal({ err: err.message }, 'raft stopped: unrecoverable error'),
  });
  return {
    hasState: () => !driver.isEmpty(),
    bootstrap: async (conf: ConfState) => driver.bootstrap(conf),
    propose: (data, opts) => driver.propose(data, opts),
    proposeConfChange: async (cc: ConfChange, opts) => {
      await driver.changeMembership(cc, opts);
    },
    read: (opts) => driver.read(opts),
    status: () => driver.status(),
    heardWithin: (ms) => driver.heardWithin(ms),
    transferLeadership: (to) => void driver.transferLeadership(to).catch(() => {}),
    stop: async () => {
      await driver.stop();
      await wire.stop();
    },
  };
}
