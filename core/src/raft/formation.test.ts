import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { DiscoveredPeer, PeerHealth } from './formation.ts';
import { autopilot, clusterIdOf, decideFormation } from './formation.ts';

const peer = (id: string, clusterId: string | null = null, leader: string | null = null): DiscoveredPeer => ({
  id,
  clusterId,
  leader,
});

describe('decideFormation', () => {
  it('waits until expectVoters nodes are known', () => {
    assert.deepEqual(decideFormation({ self: 'b', expectVoters: 3, discovered: [peer('a')] }), {
      action: 'wait',
    });
  });

  it('the expectVoters smallest ids bootstrap with exactly those voters; others wait', () => {
    const discovered = [peer('d'), peer('a'), peer('c')];
    assert.deepEqual(decideFormation({ self: 'b', expectVoters: 3, discovered }), {
      action: 'bootstrap',
      voters: ['a', 'b', 'c'],
    });
    assert.deepEqual(
      decideFormation({ self: 'd', expectVoters: 3, discovered: [peer('a'), peer('b'), peer('c')] }),
      {
        action: 'wait',
      },
    );
  });

  it('joins an existing cluster instead of bootstrapping, via its leader when known', () => {
    assert.deepEqual(
      decideFormation({
        self: 'a',
        expectVoters: 3,
        discovered: [peer('b'), peer('c'), peer('z', 'X', 'y')],
      }),
      {
        action: 'join',
        via: 'y',
      },
    );
    assert.deepEqual(decideFormation({ self: 'a', expectVoters: 1, discovered: [peer('q', 'X')] }), {
      action: 'join',
      via: 'q',
    });
  });

  it('clusterIdOf depends on the voter set only', () => {
    assert.equal(clusterIdOf(['b', 'a', 'c']), clusterIdOf(['c', 'b', 'a']));
    assert.notEqual(clusterIdOf(['a', 'b', 'c']), clusterIdOf(['a', 'b', 'd']));
  });

  it('expectVoters = 1: a lone node bootstraps a single-node cluster', () => {
    assert.deepEqual(decideFormation({ self: 'solo', expectVoters: 1, discovered: [] }), {
      action: 'bootstrap',
      voters: ['solo'],
    });
  });

  it('nodes that see the same peer set never bootstrap two different clusters (property)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 8 }),
        fc.nat(7),
        (ids, k) => {
          const expect = 1 + (k % ids.length);
          const votersSets = new Set<string>();
          for (const self of ids) {
            const d = decideFormation({ self, expectVoters: expect, discovered: ids.map((id) => peer(id)) });
            if (d.action === 'bootstrap') {
              assert.ok(d.voters.includes(self));
              votersSets.add(JSON.stringify(d.voters));
            }
          }
          assert.equal(votersSets.size, 1);
        },
      ),
    );
  });
});

describe('autopilot', () => {
  const h = (alive: boolean, matchIndex = 100, lastContactTicks = 0): PeerHealth => ({
    alive,
    matchIndex,
    lastContactTicks,
  });

  it('promotes a caught-up healthy learner while below the target', () => {
    const health = new Map([
      ['a', h(true)],
      ['b', h(true)],
      ['c', h(true)],
    ]);
    assert.deepEqual(
      autopilot({ conf: { voters: ['a', 'b'], learners: ['c'] }, targetVoters: 3, health, lastIndex: 100 }),
      {
        type: 'addVoter',
        node: 'c',
      },
    );
  });

  it('does not promote a lagging or silent learner, nor beyond the target', () => {
    const lagging = new Map([
      ['a', h(true)],
      ['c', h(true, 10)],
    ]);
    assert.equal(
      autopilot({
        conf: { voters: ['a'], learners: ['c'] },
        targetVoters: 3,
        health: lagging,
        lastIndex: 100,
      }),
      null,
    );
    const silent = new Map([
      ['a', h(true)],
      ['c', h(true, 100, 50)],
    ]);
    assert.equal(
      autopilot({
        conf: { voters: ['a'], learners: ['c'] },
        targetVoters: 3,
        health: silent,
        lastIndex: 100,
      }),
      null,
    );
    const full = new Map([
      ['a', h(true)],
      ['b', h(true)],
      ['c', h(true)],
    ]);
    assert.equal(
      autopilot({
        conf: { voters: ['a', 'b'], learners: ['c'] },
        targetVoters: 2,
        health: full,
        lastIndex: 100,
      }),
      null,
    );
  });

  it('replaces a dead voter only when a healthy learner exists', () => {
    const health = new Map([
      ['a', h(true)],
      ['b', h(true)],
      ['c', h(false)],
    ]);
    const conf = { voters: ['a', 'b', 'c'], learners: [] as string[] };
    assert.equal(autopilot({ conf, targetVoters: 3, health, lastIndex: 100 }), null);
    health.set('d', h(true));
    assert.deepEqual(
      autopilot({ conf: { ...conf, learners: ['d'] }, targetVoters: 3, health, lastIndex: 100 }),
      {
        type: 'removeNode',
        node: 'c',
      },
    );
  });

  it('never proposes a change that leaves fewer live voters than a quorum (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.boolean(), { minLength: 1, maxLength: 7 }),
        fc.array(fc.boolean(), { maxLength: 3 }),
        fc.integer({ min: 1, max: 7 }),
        (voterAlive, learnerAlive, target) => {
          const voters = voterAlive.map((_, i) => `v${i}`);
          const learners = learnerAlive.map((_, i) => `l${i}`);
          const health = new Map<string, PeerHealth>();
          for (const [i, alive] of voterAlive.entries()) health.set(`v${i}`, h(alive));
          for (const [i, alive] of learnerAlive.entries()) health.set(`l${i}`, h(alive));
          const cc = autopilot({ conf: { voters, learners }, targetVoters: target, health, lastIndex: 100 });
          if (!cc) return;
          let next = voters;
          if (cc.type === 'removeNode') next = voters.filter((v) => v !== cc.node);
          if (cc.type === 'addVoter') next = [...voters, cc.node];
          const live = next.filter((id) => health.get(id)?.alive).length;
          assert.ok(next.length >= 1);
          assert.ok(
            live >= Math.floor(next.length / 2) + 1,
            `${JSON.stringify(cc)} leaves ${live}/${next.length} live`,
          );
        },
      ),
    );
  });
});
