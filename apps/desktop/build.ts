/**
 * Build: the renderer to dist/renderer/ (served by the daemon at `/` and loaded by Electron), and the Electron
 * main + preload to out/. Run with `node build.ts` (Node 22 type stripping) or `npm run build -w apps/desktop`.
 *
 * Main is one bundle with the node inside (our TypeScript workspaces and their pure-JS dependencies), so the
 * packaged app needs node_modules only for native modules (NATIVE_EXTERNALS), which electron-builder packs.
 * The preload is CommonJS because Electron's sandboxed preloads cannot be ES modules.
 */
import { copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = import.meta.dirname;
const rendererSrc = join(here, 'src/renderer');
const rendererOut = join(here, 'dist/renderer');
const mainOut = join(here, 'out');
const production = process.argv.includes('--production');
const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);

/** Packages with native bindings: loaded from node_modules at run time, never bundled. */
const NATIVE_EXTERNALS = ['electron', 'classic-level', 'cpu-features', 'ssh2'];
/**
 * The WASM executor starts its sandbox as a worker from a sibling file (`./wasm-worker.js`, plain JavaScript so
 * that Node needs no type stripping in each worker). The bundle is one file, so the worker is bundled as its own
 * entry under the same name next to it (out/wasm-worker.js), where the executor's reference, relative to the
 * bundle, finds it. If the reference ever changes, the build fails instead of shipping an app whose WASM tasks
 * cannot start.
 */
const WASM_WORKER_SOURCE = join(here, '../../core/src/executors/wasm-worker.js');
const WASM_WORKER_REF = "new URL('./wasm-worker.js', import.meta.url)";
const bundledWasmWorker: esbuild.Plugin = {
  name: 'bundled-wasm-worker',
  setup(build) {
    build.onLoad({ filter: /[/\\]core[/\\]src[/\\]executors[/\\]wasm\.ts$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      if (!source.includes(WASM_WORKER_REF)) {
        throw new Error(`${args.path} no longer contains ${WASM_WORKER_REF}; update build.ts`);
      }
      return { contents: source, loader: 'ts' };
    });
  },
};
/** CommonJS dependencies inside an ESM bundle still call require(); give them one. */
const REQUIRE_SHIM =
  "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);";

export async function buildRenderer(): Promise<void> {
  await rm(rendererOut, { recursive: true, force: true });
  await mkdir(rendererOut, { recursive: true });
  await esbuild.build({
    entryPoints: [join(rendererSrc, 'app.ts')],
    outfile: join(rendererOut, 'app.js'),
    bundle: true,
    // A classic script, not a module: Electron loads the renderer from file://, where module scripts hit CORS.
    format: 'iife',
    platform: 'browser',
    target: ['chrome120'],
    minify: production,
    sourcemap: production ? false : 'linked',
    legalComments: 'none',
    logLevel: 'warning',
  });
  await Promise.all(
    ['index.html', 'styles.css'].map((f) => copyFile(join(rendererSrc, f), join(rendererOut, f))),
  );
}

const nodeCommon: esbuild.BuildOptions = {
  bundle: true,
  platform: 'node',
  target: ['node22'],
  sourcemap: 'linked',
  logLevel: 'warning',
  external: NATIVE_EXTERNALS,
};

/** Bundle a Node entry (with the node inside) plus the WASM worker it may start, into one directory. */
export async function buildNodeBundle(entry: string, outDir: string, outName: string): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await Promise.all([
    esbuild.build({
      ...nodeCommon,
      entryPoints: [entry],
      outfile: join(outDir, outName),
      format: 'esm',
      banner: { js: REQUIRE_SHIM },
      plugins: [bundledWasmWorker],
    }),
    esbuild.build({
      ...nodeCommon,
      entryPoints: [WASM_WORKER_SOURCE],
      outfile: join(outDir, 'wasm-worker.js'),
      format: 'esm',
      banner: { js: REQUIRE_SHIM },
    }),
  ]);
}

export async function buildMain(): Promise<void> {
  await Promise.all([
    buildNodeBundle(join(here, 'src/main/main.ts'), mainOut, 'main.js'),
    esbuild.build({
      ...nodeCommon,
      entryPoints: [join(here, 'src/main/preload.ts')],
      outfile: join(mainOut, 'preload.cjs'),
      format: 'cjs',
      external: ['electron'],
    }),
  ]);
}

// Build when run as a script (`node build.ts`), not when a test imports the helpers.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const started = Date.now();
  if (only !== 'main') await buildRenderer();
  if (only !== 'renderer') await buildMain();
  console.log(`desktop build done in ${Date.now() - started} ms (${only ?? 'renderer + main'})`);
}
