/** Module hook: resolve `electron` to the fake (see fake-electron.ts). Registered by main-process.test.ts. */
let fakeUrl = '';

export function initialize(data: { fakeUrl: string }): void {
  fakeUrl = data.fakeUrl;
}

export async function resolve(
  specifier: string,
  context: unknown,
  next: (specifier: string, context: unknown) => Promise<unknown>,
): Promise<unknown> {
  if (specifier === 'electron') return { url: fakeUrl, shortCircuit: true };
  return next(specifier, context);
}
