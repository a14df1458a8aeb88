#!/usr/bin/env node
// Entry point of the `meshrun` CLI and daemon. Plain JS on purpose: it must run on any Node to be able to
// say clearly that meshrun needs Node >= 22.18 (libp2p 3 uses Promise.withResolvers; the sources are
// TypeScript run through Node's type stripping), instead of failing deep inside a connection.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `meshrun: Node ${process.versions.node} is too old; meshrun needs Node >= 22.18.\n` +
      'Run it through npm (`npx meshrun ...` from the repository root) so the Node 22 that `npm ci` installs ' +
      'in node_modules/.bin is used, or put that directory first on PATH.\n',
  );
  process.exit(125);
}
const { main } = await import('../src/cli.ts');
await main(process.argv.slice(2));
