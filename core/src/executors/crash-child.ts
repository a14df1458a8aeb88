/**
 * Child process for the crash-recovery test: runs one long Docker task and one long WASM task for node
 * `argv[2]`, prints "running" once both have started, and waits to be killed with SIGKILL.
 */

import { DockerExecutor } from './docker.ts';
import { basePolicy, buildWat, dockerSpec } from './test-support.ts';
import { WasmExecutor } from './wasm.ts';

const nodeId = process.argv[2];
const tmpRoot = process.argv[3];
if (!nodeId || !tmpRoot) throw new Error('usage: crash-child.ts <nodeId> <tmpRoot>');
const docker = new DockerExecutor({ nodeId });
const wasm = new WasmExecutor({ tmpRoot });
let started = 0;
const onStarted = (e: { type: string }) => {
  if (e.type === 'started' && ++started === 2) process.stdout.write('running\n');
};
void docker.run(
  dockerSpec({
    command: ['sleep', '120'],
    inputs: [{ path: 'in.txt', content: Buffer.from('x') }],
    outputs: ['in.txt'],
    timeoutMs: 120_000,
  }),
  { policy: basePolicy, onEvent: onStarted },
);
void wasm.run(
  {
    taskId: 'crash-wasm',
    jobId: 'j',
    attempt: 0,
    executor: 'wasm',
    wasm: { module: buildWat('loop') },
    resources: { cpus: 1, memoryBytes: 1 << 24 },
    timeoutMs: 120_000,
  },
  { policy: basePolicy, onEvent: onStarted },
);
