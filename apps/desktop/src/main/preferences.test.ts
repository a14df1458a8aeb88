import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  DEFAULT_PREFERENCES,
  defaultPreferences,
  loadPreferences,
  MAX_PAUSE_PROGRAMS,
  mergePreferences,
  PREFERENCES_FILE,
  parsePreferences,
  parsePreferencesLenient,
  savePreferences,
} from './preferences.ts';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'meshrun-prefs-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('preferences schema', () => {
  it('defaults are valid and modest', () => {
    const p = parsePreferences(defaultPreferences());
    assert.equal(p.contribute, true);
    assert.ok(p.cpu.inUsePercent < p.cpu.idlePercent);
    assert.equal(p.gpu.enabled, false);
    assert.equal(p.taskNetworkAccess, false);
    assert.equal(p.startAtLogin, false, 'start at login is opt-in');
  });

  it('defaultPreferences returns an independent copy', () => {
    const a = defaultPreferences();
    a.cpu.idlePercent = 1;
    assert.equal(DEFAULT_PREFERENCES.cpu.idlePercent, 75);
    assert.equal(defaultPreferences().cpu.idlePercent, 75);
  });

  it('rejects out-of-range and malformed values', () => {
    const bad = (patch: Record<string, unknown>) => () =>
      parsePreferences({ ...defaultPreferences(), ...patch });
    assert.throws(bad({ cpu: { inUsePercent: 101, idlePercent: 50 } }), /invalid preferences/);
    assert.throws(bad({ idle: { onlyWhenIdle: true, idleMinutes: 0 } }), /invalid preferences/);
    assert.throws(
      bad({ schedule: { enabled: true, windows: [{ days: [1], start: '25:00', end: '07:00' }] } }),
      /HH:MM/,
    );
    assert.throws(bad({ pauseWhilePrograms: Array.from({ length: MAX_PAUSE_PROGRAMS + 1 }, () => 'x') }));
    assert.throws(bad({ theme: 'pink' }));
    assert.throws(() => parsePreferences(null));
  });

  it('lenient parse keeps valid fields and reports the invalid ones', () => {
    const { prefs, problems } = parsePreferencesLenient({
      cpu: { inUsePercent: 10, idlePercent: 90 },
      theme: 'pink',
      unknownKey: 1,
    });
    assert.deepEqual(prefs.cpu, { inUsePercent: 10, idlePercent: 90 });
    assert.equal(prefs.theme, 'system');
    assert.deepEqual(problems, ['theme']);
    assert.deepEqual(parsePreferencesLenient([1]).problems, ['not an object']);
  });

  it('merge applies a nested partial update and validates the result', () => {
    const merged = mergePreferences(defaultPreferences(), { cpu: { idlePercent: 10 }, contribute: false });
    assert.equal(merged.cpu.idlePercent, 10);
    assert.equal(merged.cpu.inUsePercent, 25, 'sibling field kept');
    assert.equal(merged.contribute, false);
    assert.throws(() => mergePreferences(defaultPreferences(), { cpu: { idlePercent: -1 } }));
    assert.throws(() => mergePreferences(defaultPreferences(), 'x'));
  });
});

describe('preferences persistence', () => {
  it('first load returns defaults and marks the file as new', async () => {
    const dir = await tempDir();
    const r = await loadPreferences(dir);
    assert.equal(r.created, true);
    assert.deepEqual(r.prefs, defaultPreferences());
  });

  it('save then load round-trips, creating the directory', async () => {
    const dir = join(await tempDir(), 'nested', 'app');
    const p = defaultPreferences();
    p.pauseWhilePrograms = ['steam'];
    p.snoozeUntil = 1_800_000_000_000;
    await savePreferences(dir, p);
    const r = await loadPreferences(dir);
    assert.equal(r.created, false);
    assert.deepEqual(r.problems, []);
    assert.deepEqual(r.prefs, p);
  });

  it('refuses to save invalid preferences and leaves the old file intact', async () => {
    const dir = await tempDir();
    await savePreferences(dir, defaultPreferences());
    const before = await readFile(join(dir, PREFERENCES_FILE), 'utf8');
    const bad = { ...defaultPreferences(), theme: 'pink' } as unknown as ReturnType<
      typeof defaultPreferences
    >;
    await assert.rejects(savePreferences(dir, bad), /invalid preferences/);
    assert.equal(await readFile(join(dir, PREFERENCES_FILE), 'utf8'), before);
  });

  it('a corrupt file loads as defaults with a problem instead of crashing the app', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, PREFERENCES_FILE), '{not json');
    const r = await loadPreferences(dir);
    assert.deepEqual(r.prefs, defaultPreferences());
    assert.deepEqual(r.problems, ['not valid JSON']);
  });
});
