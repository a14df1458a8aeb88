/**
 * Job files for `meshrun submit -f FILE`: one job spec, a list of them, or `{ jobs: [...] }`, in YAML or JSON.
 * Each is the wire spec (protocol/src/job.ts, validated by the node) with the shorthands a person writing one
 * expects from `meshrun run`, resolved here before anything is sent:
 *
 * - `executor` may be left out: `image` means docker, `wasm` means wasm; `name` defaults to the image or the
 *   module's file name.
 * - `wasm: path/to/module.wasm` reads the module (relative to the job file); the wire form `{ bytes }` cannot
 *   be written in YAML.
 * - `resources` defaults to `run`'s (1 CPU, 256 MiB); `memory`, `disk` and `gpus.minVram` take sizes
 *   (`512M`, `2G`) for `memoryBytes`, `diskBytes` and `gpus.minVramBytes`.
 * - `timeout: 10m` for `timeoutMs`, `retries: N` for `retry.maxAttempts: N + 1`.
 *
 * A shorthand given together with its wire field, or a module that cannot be read, is an error naming the job:
 * the whole file is refused before any job is submitted.
 */
import { basename, dirname, resolve } from 'node:path';
import YAML from 'yaml';
import { CliError } from './client.ts';
import { parseBytes, parseDuration } from './format.ts';

/** What `meshrun run` asks for when its flags do not say. */
export const DEFAULT_RESOURCES = { cpus: 1, memoryBytes: 256 * 1024 ** 2 } as const;

type Obj = Record<string, unknown>;

const isObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The jobs in a file's text, each resolved to a wire spec. `readModule` reads a `wasm:` path. */
export async function specsFromJobFile(
  text: string,
  file: string,
  readModule: (path: string) => Promise<Uint8Array>,
): Promise<unknown[]> {
  const json = file.endsWith('.json');
  let parsed: unknown;
  try {
    parsed = json ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new CliError(`${file} is not valid ${json ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  const entries = Array.isArray(parsed)
    ? parsed
    : isObject(parsed) && Array.isArray(parsed.jobs)
      ? parsed.jobs
      : [parsed];
  const baseDir = dirname(resolve(file));
  const specs: unknown[] = [];
  for (const [i, entry] of entries.entries()) {
    const name = isObject(entry) && typeof entry.name === 'string' ? ` (${entry.name})` : '';
    try {
      specs.push(await resolveShorthands(entry, baseDir, readModule));
    } catch (err) {
      throw new CliError(`${file}: job ${i + 1}${name}: ${(err as Error).message}`);
    }
  }
  return specs;
}

/** One entry with its shorthands replaced by wire fields; what is not an object is left for the node to refuse. */
export async function resolveShorthands(
  entry: unknown,
  baseDir: string,
  readModule: (path: string) => Promise<Uint8Array>,
): Promise<unknown> {
  if (!isObject(entry)) return entry;
  const spec: Obj = { ...entry };
  if (typeof spec.wasm === 'string') {
    const path = resolve(baseDir, spec.wasm);
    try {
      spec.wasm = { bytes: await readModule(path) };
    } catch (err) {
      throw new Error(`cannot read the wasm module ${path}: ${(err as Error).message}`);
    }
    spec.name ??= basename(path);
  }
  if (spec.executor === undefined) {
    if (spec.image !== undefined && spec.wasm === undefined) spec.executor = 'docker';
    else if (spec.wasm !== undefined && spec.image === undefined) spec.executor = 'wasm';
  }
  if (spec.name === undefined && typeof spec.image === 'string') spec.name = spec.image;
  if (spec.resources === undefined) spec.resources = { ...DEFAULT_RESOURCES };
  else if (isObject(spec.resources)) {
    const r: Obj = { ...spec.resources };
    size(r, 'memory', 'memoryBytes');
    size(r, 'disk', 'diskBytes');
    if (isObject(r.gpus)) {
      r.gpus = { ...r.gpus };
      size(r.gpus as Obj, 'minVram', 'minVramBytes');
    }
    spec.resources = r;
  }
  if (spec.timeout !== undefined) {
    only(spec, 'timeout', 'timeoutMs');
    if (typeof spec.timeout !== 'string') throw new Error('timeout takes a duration such as 30s or 10m');
    spec.timeoutMs = parseDuration(spec.timeout);
    delete spec.timeout;
  }
  if (spec.retries !== undefined) {
    const retries = spec.retries;
    if (!Number.isInteger(retries) || (retries as number) < 0)
      throw new Error('retries takes a whole number of extra attempts (0 or more)');
    const retry = isObject(spec.retry) ? spec.retry : {};
    if (retry.maxAttempts !== undefined) throw new Error('give retries or retry.maxAttempts, not both');
    spec.retry = { ...retry, maxAttempts: (retries as number) + 1 };
    delete spec.retries;
  }
  return spec;
}

/** `obj[short]` (a size such as 512M, or a number of bytes) becomes `obj[wire]`. */
function size(obj: Obj, short: string, wire: string): void {
  if (obj[short] === undefined) return;
  only(obj, short, wire);
  const v = obj[short];
  if (typeof v === 'number') obj[wire] = v;
  else if (typeof v === 'string') obj[wire] = parseBytes(v);
  else throw new Error(`${short} takes a size such as 512M or 2G`);
  delete obj[short];
}

function only(obj: Obj, short: string, wire: string): void {
  if (obj[wire] !== undefined) throw new Error(`give ${short} or ${wire}, not both`);
}
