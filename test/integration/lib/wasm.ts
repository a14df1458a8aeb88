// WASI test modules built from WAT at test time (wabt), and the CLI arguments that submit one as a job.
import wabtInit from 'wabt';

/** A WASI module that does nothing and exits 0. */
export const NOOP_WAT = '(module (memory (export "memory") 1) (func (export "_start")))';

/** A WASI module that sleeps `seconds` (poll_oneoff on a relative monotonic clock), then exits 0. */
export function sleepWat(seconds: number): string {
  return `(module
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "_start")
      (i32.store (i32.const 16) (i32.const 1))
      (i64.store (i32.const 24) (i64.const ${seconds * 1_000_000_000}))
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))`;
}

export async function wasmOf(wat: string): Promise<Uint8Array> {
  const wabt = await wabtInit();
  return new Uint8Array(wabt.parseWat('test.wat', wat).toBinary({}).buffer);
}

/** `meshrun run --detach` arguments for `count` tasks of the module at `file`, each asking for `cpus`. */
export function detachedWasmRun(file: string, count: number, cpus: number): string[] {
  return [
    'run',
    '--detach',
    '--count',
    String(count),
    '--cpus',
    String(cpus),
    '--memory',
    '16M',
    '--wasm',
    file,
  ];
}
