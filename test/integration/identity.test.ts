// Submitter identity and roles on real daemons (loopback): keys are made with the CLI, trusted by an admin, and
// enforced by every peer. An unknown key, a revoked key, a forged signature and a `submit` key cancelling
// someone else's job are refused with clear messages, and nothing is committed for them.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readSubmitterKey, signRequest } from '@meshrun/core/cluster/submitter-keys.ts';
import { P2pClient } from '@meshrun/headless/client.ts';
import { type LoopbackCluster, newLoopbackCluster, runCli } from '@meshrun/headless/local-cluster.ts';
import { waitFor } from '../src/proc.ts';

describe('submitter keys and roles', () => {
  let c: LoopbackCluster;
  const keys: Record<string, { file: string; id: string }> = {};
  const peer = (i: number, key?: string) => [
    '--peer',
    c.nodes[i]!.addr,
    '--cluster-key',
    c.clusterKey,
    ...(key ? ['--key', keys[key]!.file] : []),
  ];
  const wasmRun = ['run', '--detach', '--memory', '16M', 'meshrun-test/busybox:1', '--', 'sleep', '30'];
  const jobCount = async () =>
    JSON.parse((await c.nodes[0]!.cli(['jobs', '--json', '--limit', '10000'])).stdout).length as number;

  before(async () => {
    c = await newLoopbackCluster({ prefix: 'meshrun-keys-' });
    for (const i of [0, 1, 2]) await c.start(i);
    await waitFor(
      async () => {
        const r = await c.nodes[0]!.cli(['cluster', '--json']);
        return r.code === 0 && JSON.parse(r.stdout).voters.length === 3 && JSON.parse(r.stdout).leader;
      },
      { timeoutMs: 90_000, intervalMs: 300, description: 'a cluster' },
    );
    for (const name of ['admin', 'alice', 'bob', 'mallory']) {
      const file = `${c.dir}/${name}.key`;
      const r = await runCli(['keys', 'new', file]);
      assert.equal(r.code, 0, r.stderr);
      keys[name] = { file, id: r.stdout.trim() };
      assert.match(keys[name].id, /^12D3KooW/);
    }
  });
  after(async () => c?.destroy());

  it('the local owner trusts the first admin; the admin, from any peer, trusts a submitter', async () => {
    const a = await c.nodes[0]!.cli(['keys', 'add', keys.admin!.id, '--role', 'admin', '--name', 'admin']);
    assert.equal(a.code, 0, a.stderr);
    const b = await runCli([
      ...peer(1, 'admin'),
      'keys',
      'add',
      keys.alice!.id,
      '--role',
      'submit',
      '--name',
      'alice',
    ]);
    assert.equal(b.code, 0, b.stderr);
    const list = JSON.parse((await runCli([...peer(2), 'keys', 'list', '--json'])).stdout) as {
      key: string;
      role: string;
    }[];
    assert.deepEqual(list.map((k) => k.role).sort(), ['admin', 'submit']);
  });

  it('a trusted key submits from any peer; the job records who submitted it', async () => {
    const r = await runCli([...peer(2, 'alice'), ...wasmRun]);
    assert.equal(r.code, 0, r.stderr);
    const st = JSON.parse((await c.nodes[0]!.cli(['status', r.stdout.trim(), '--json'])).stdout);
    assert.equal(st.submitter, `key:alice:${keys.alice!.id}`);
  });

  it('no key, an unknown key and a revoked key are refused; nothing is committed', async () => {
    const before = await jobCount();
    const none = await runCli([...peer(1), ...wasmRun]);
    assert.equal(none.code, 125);
    assert.match(none.stderr, /requires a submitter key/);
    const unknown = await runCli([...peer(1, 'bob'), ...wasmRun]);
    assert.equal(unknown.code, 125);
    assert.match(unknown.stderr, /unknown key/);
    assert.equal(
      (await runCli([...peer(0, 'admin'), 'keys', 'add', keys.bob!.id, '--role', 'submit', '--name', 'bob']))
        .code,
      0,
    );
    assert.equal((await runCli([...peer(0, 'admin'), 'keys', 'revoke', keys.bob!.id])).code, 0);
    const revoked = await runCli([...peer(2, 'bob'), ...wasmRun]);
    assert.equal(revoked.code, 125);
    assert.match(revoked.stderr, /revoked/);
    const notAdmin = await runCli([
      ...peer(2, 'alice'),
      'keys',
      'add',
      keys.mallory!.id,
      '--role',
      'admin',
      '--name',
      'm',
    ]);
    assert.notEqual(notAdmin.code, 0);
    assert.match(notAdmin.stderr, /role submit/);
    assert.equal(await jobCount(), before, 'nothing committed');
  });

  it('a forged signature is refused', async () => {
    const before = await jobCount();
    const mallory = await readSubmitterKey(keys.mallory!.file);
    const client = await P2pClient.create(c.nodes[1]!.addr, c.clusterKey);
    try {
      const params = {
        spec: {
          name: 'forged',
          executor: 'docker',
          image: 'meshrun-test/busybox:1',
          command: ['true'],
          resources: { cpus: 1, memoryBytes: 16e6 },
        },
      };
      const auth = await signRequest(mallory, 'jobs.submit', params);
      auth.key = keys.alice!.id; // claims to be alice, signed by mallory
      await assert.rejects(client.call('jobs.submit', params, { auth }), /bad signature/);
    } finally {
      await client.close();
    }
    assert.equal(await jobCount(), before);
  });

  it("a submit key cannot cancel someone else's job; its own, yes; an admin, any", async () => {
    const adminJob = (await runCli([...peer(0, 'admin'), ...wasmRun])).stdout.trim();
    const aliceJob = (await runCli([...peer(0, 'alice'), ...wasmRun])).stdout.trim();
    const denied = await runCli([...peer(1, 'alice'), 'cancel', adminJob]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /only cancel your own jobs/);
    const st = JSON.parse((await c.nodes[0]!.cli(['status', adminJob, '--json'])).stdout);
    assert.notEqual(st.state, 'cancelled', 'nothing committed');
    assert.equal((await runCli([...peer(1, 'alice'), 'cancel', aliceJob])).code, 0);
    assert.equal((await runCli([...peer(2, 'admin'), 'cancel', adminJob])).code, 0);
  });
  it('a node owner can restrict the machine to named submitters', async () => {
    await c.start(3, ['--allow-submitter', 'alice', '--label', 'owner=strict']);
    await waitFor(
      async () => {
        const rows = JSON.parse((await c.nodes[0]!.cli(['nodes', '--json'])).stdout) as {
          labels: Record<string, string>;
          connected: boolean;
        }[];
        return rows.some((r) => r.labels.owner === 'strict' && r.connected);
      },
      { timeoutMs: 20_000, description: 'the restricted node to join' },
    );
    const pinned = [
      'run',
      '--detach',
      '--label-constraint',
      'owner=strict',
      '--memory',
      '16M',
      'meshrun-test/busybox:1',
      '--',
      'echo',
      'ok',
    ];
    const byAdmin = (await runCli([...peer(0, 'admin'), ...pinned])).stdout.trim();
    const byAlice = (await runCli([...peer(0, 'alice'), ...pinned])).stdout.trim();
    await waitFor(
      async () =>
        JSON.parse((await c.nodes[0]!.cli(['status', byAlice, '--json'])).stdout).state === 'succeeded',
      { timeoutMs: 30_000, description: "alice's job to run on the restricted node" },
    );
    const st = await waitFor(
      async () => {
        const s = JSON.parse((await c.nodes[1]!.cli(['status', byAdmin, '--json'])).stdout);
        return s.tasks[0].unplacedReason ? s : null;
      },
      { timeoutMs: 15_000, description: "a reason for the admin's job" },
    );
    assert.equal(st.state, 'queued');
    assert.match(st.tasks[0].unplacedReason, /no node accepts jobs from key:admin/);
  });
});
