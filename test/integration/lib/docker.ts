// Docker prerequisites for integration tests: in CI a missing engine or test image is a failure, never a skip.
import { execFileSync } from 'node:child_process';

export const TEST_IMAGE = 'meshrun-test/busybox:1';

export function requireDocker(): string | undefined {
  try {
    execFileSync('docker', ['image', 'inspect', TEST_IMAGE], { stdio: 'ignore', timeout: 10_000 });
    return undefined;
  } catch {
    const why = `Docker engine or image ${TEST_IMAGE} unavailable (run scripts/setup-test-env.sh)`;
    if (process.env.CI === 'true') throw new Error(why);
    return why;
  }
}
