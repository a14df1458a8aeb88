export * from './codec.ts';
export * from './framing.ts';
export * from './ids.ts';
export * from './job.ts';
export * from './json.ts';
export * from './node.ts';
export * from './raft.ts';
export * from './rpc.ts';
