/**
 * Build: the renderer to dist/renderer/ (served by the daemon at `/` and loaded by Electron), and the Electron
 * main + preload to out/. Run with `node build.ts` (Node 22 type stripping) or `npm run build -w apps/desktop`.
 *
 * Main is one bundle with the node inside (our TypeScript workspaces and their pure-JS dependencies), so the
 * packaged app needs node_modules only for native modules (NATIVE_EXTERNALS), which electron-builder packs.
 * The preload is CommonJS because Electron's sandboxed preloads cannot be ES modules.
 */
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as esbuild from 'esbuild';

const here = import.meta.dirname;
const rendererSrc = join(here, 'src/renderer');
const rendererOut = join(here, 'dist/renderer');
const mainOut = join(here, 'out');
const production = process.argv.includes('--production');
const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);

/** Packages with native bindings: loaded from node_modules at run time, never bundled. */
const NATIVE_EXTERNALS = ['electron', 'classic-level', 'cpu-features'];
/** CommonJS dependencies inside an ESM bundle still call require(); give them one. */
const REQUIRE_SHIM =
  "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);";

async function buildRenderer(): Promise<void> {
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

async function buildMain(): Promise<void> {
  await mkdir(mainOut, { recursive: true });
  const common: esbuild.BuildOptions = {
    bundle: true,
    platform: 'node',
    target: ['node22'],
    sourcemap: 'linked',
    logLevel: 'warning',
    external: ['electron'],
  };
  await Promise.all([
    esbuild.build({
      ...common,
      entryPoints: [join(here, 'src/main/main.ts')],
      outfile: join(mainOut, 'main.js'),
      format: 'esm',
      external: NATIVE_EXTERNALS,
      banner: { js: REQUIRE_SHIM },
    }),
    esbuild.build({
      ...common,
      entryPoints: [join(here, 'src/main/preload.ts')],
      outfile: join(mainOut, 'preload.cjs'),
      format: 'cjs',
    }),
  ]);
}

const started = Date.now();
if (only !== 'main') await buildRenderer();
if (only !== 'renderer') await buildMain();
console.log(`desktop build done in ${Date.now() - started} ms (${only ?? 'renderer + main'})`);
