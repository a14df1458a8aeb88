/**
 * Build: the renderer to dist/renderer/ (served by the daemon at `/` and loaded by Electron), and the Electron
 * main + preload to out/. Run with `node build.ts` (Node 22 type stripping) or `npm run build -w apps/desktop`.
 *
 * Main bundles our own workspace code (@meshrun/*, TypeScript sources) but keeps third-party packages external
 * so native modules (level's binding) load from node_modules as electron-builder packs them.
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

const externalThirdParty: esbuild.Plugin = {
  name: 'external-third-party',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.path.startsWith('@meshrun/') || args.path.startsWith('node:')) return undefined;
      return { path: args.path, external: true };
    });
  },
};

async function buildRenderer(): Promise<void> {
  await rm(rendererOut, { recursive: true, force: true });
  await mkdir(rendererOut, { recursive: true });
  await esbuild.build({
    entryPoints: [join(rendererSrc, 'app.ts')],
    outfile: join(rendererOut, 'app.js'),
    bundle: true,
    format: 'esm',
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
      plugins: [externalThirdParty],
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
