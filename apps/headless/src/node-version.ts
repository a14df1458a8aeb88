/** Fails fast, with a clear message, when a meshrun process starts on a Node that cannot run libp2p 3. */
export function assertSupportedNode(): void {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 18)) {
    throw new Error(
      `meshrun needs Node >= 22.18 (this is ${process.versions.node}); use node_modules/.bin/node`,
    );
  }
}
