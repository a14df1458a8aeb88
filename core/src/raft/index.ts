export * from './formation.ts';
export * from './log.ts';
export * from './progress.ts';
export * from './quorum.ts';
export * from './raft.ts';
export * from './rawnode.ts';
export * from './storage.ts';
export * from './types.ts';
