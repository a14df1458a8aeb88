// The replicated trust list and the apply-time checks: every node re-verifies signed job requests from the log
// alone, so a peer that proposes entries directly (bypassing any front door) still cannot submit or cancel in
// someone else's name.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { encode, validateJobSpec } from '@meshrun/protocol';
import { JobStateMachine } from '../jobs/state-machine.ts';
import { JobLogStateMachine } from './cluster-service.ts';
import {
  canonicalParams,
  readSubmitterKey,
  type SubmitterKey,
  signRequest,
  writeNewSubmitterKey,
} from './submitter-keys.ts';

const dir = mkdtempSync(join(tmpdir(), 'meshrun-trust-'));
async function newKey(name: string): Promise<SubmitterKey> {
  await writeNewSubmitterKey(join(dir, name));
  return readSubmitterKey(join(dir, name));
}
const spec = {
  name: 'x',
  executor: 'docker',
  image: 'busybox',
  command: ['true'],
  resources: { cpus: 1, memoryBytes: 1_000_000 },
};
let seq = 0;
const jobId = () => `j0000000001-${(++seq).toString(16).padStart(16, '0')}`;

async function signed(key: SubmitterKey, method: string, params: unknown) {
  const p = canonicalParams(params);
  return { method, params: p, auth: await signRequest(key, method, p) };
}

describe('trust list and signed job entries', () => {
  it('open until a key is trusted; then only trusted, unrevoked, correctly signed submitters get in', async () => {
    const admin = await newKey('admin');
    const alice = await newKey('alice');
    const mallory = await newKey('mallory');
    const sm = new JobLogStateMachine(new JobStateMachine());
    const now = Date.now();
    const submit = (id: string, submitter: string) => ({
      type: 'submitJob',
      jobId: id,
      spec: validateJobSpec(spec),
      submitter,
      at: now,
    });

    // Open cluster: an unsigned submission is fine.
    assert.equal(sm.apply(encode(submit(jobId(), 'peer:x'))).ok, true);
    // Genesis: the local owner adds the first admin; the admin (signed) adds alice.
    assert.equal(
      sm.apply(encode({ trust: 'add', key: admin.id, role: 'admin', name: 'admin', at: now, local: 'node1' }))
        .ok,
      true,
    );
    const addAlice = await signed(admin, 'keys.add', { key: alice.id, role: 'submit', name: 'alice' });
    assert.equal(
      sm.apply(
        encode({ trust: 'add', key: alice.id, role: 'submit', name: 'alice', at: now, signed: addAlice }),
      ).ok,
      true,
    );
    assert.equal(sm.secured, true);

    // Unsigned submissions are now refused.
    const plain = sm.apply(encode(submit(jobId(), 'peer:x')));
    assert.equal(plain.ok, false);
    // Alice, correctly signed.
    const ok = await signed(alice, 'jobs.submit', { spec });
    const aliceJob = jobId();
    assert.equal(sm.apply(encode({ cmd: submit(aliceJob, `key:alice:${alice.id}`), signed: ok })).ok, true);
    // Mallory pretends to be alice: her signature does not verify for alice's key.
    const forged = await signed(mallory, 'jobs.submit', { spec });
    forged.auth.key = alice.id;
    const f = sm.apply(encode({ cmd: submit(jobId(), `key:alice:${alice.id}`), signed: forged }));
    assert.ok(!f.ok && /bad signature/.test(f.error));
    // Mallory signs as herself: unknown key.
    const unknown = await signed(mallory, 'jobs.submit', { spec });
    const u = sm.apply(encode({ cmd: submit(jobId(), `key:?:${mallory.id}`), signed: unknown }));
    assert.ok(!u.ok && /unknown key/.test(u.error));
    // A valid signature on another job than the one in the entry.
    const other = await signed(alice, 'jobs.submit', { spec: { ...spec, command: ['rm', '-rf', '/'] } });
    const swapped = sm.apply(encode({ cmd: submit(jobId(), `key:alice:${alice.id}`), signed: other }));
    assert.ok(!swapped.ok && /not the one that was signed/.test(swapped.error));
    // Mallory cannot add herself (not an admin), nor can alice.
    const selfAdd = await signed(alice, 'keys.add', { key: mallory.id, role: 'admin', name: 'm' });
    assert.equal(
      sm.apply(encode({ trust: 'add', key: mallory.id, role: 'admin', name: 'm', at: now, signed: selfAdd }))
        .ok,
      false,
    );
    // A submit key may not cancel someone else's job; the admin may.
    const adminJob = jobId();
    assert.equal(
      sm.apply(
        encode({
          cmd: submit(adminJob, `key:admin:${admin.id}`),
          signed: await signed(admin, 'jobs.submit', { spec }),
        }),
      ).ok,
      true,
    );
    const cancelByAlice = sm.apply(
      encode({
        cmd: { type: 'cancelJob', jobId: adminJob, by: 'alice', at: now },
        signed: await signed(alice, 'jobs.cancel', { jobId: adminJob }),
      }),
    );
    assert.ok(!cancelByAlice.ok && /only cancel its own/.test(cancelByAlice.error));
    assert.equal(sm.machine.job(adminJob)?.state, 'queued', 'nothing changed');
    assert.equal(
      sm.apply(
        encode({
          cmd: { type: 'cancelJob', jobId: aliceJob, by: 'alice', at: now },
          signed: await signed(alice, 'jobs.cancel', { jobId: aliceJob }),
        }),
      ).ok,
      true,
    );
    // Revocation takes effect at once.
    const revoke = await signed(admin, 'keys.revoke', { key: alice.id });
    assert.equal(sm.apply(encode({ trust: 'revoke', key: alice.id, at: now, signed: revoke })).ok, true);
    const after = sm.apply(
      encode({
        cmd: submit(jobId(), `key:alice:${alice.id}`),
        signed: await signed(alice, 'jobs.submit', { spec }),
      }),
    );
    assert.ok(!after.ok && /revoked/.test(after.error));
    // The trust list survives a snapshot round trip.
    const copy = new JobLogStateMachine(new JobStateMachine());
    copy.restore(sm.snapshot());
    assert.deepEqual([...copy.trust.entries()], [...sm.trust.entries()]);
  });
});
