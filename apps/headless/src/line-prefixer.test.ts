// LinePrefixer: lines cut across chunks and inside a UTF-8 character come out whole, each with its prefix.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LinePrefixer } from './line-prefixer.ts';

const bytes = (s: string) => new TextEncoder().encode(s);

describe('LinePrefixer', () => {
  it('prefixes every complete line and keeps the unfinished one until its newline', () => {
    const p = new LinePrefixer('[3] ');
    assert.equal(p.push(bytes('one\ntw')), '[3] one\n');
    assert.equal(p.push(bytes('o\nthree\nfo')), '[3] two\n[3] three\n');
    assert.equal(p.push(bytes('ur')), '');
    assert.equal(p.end(), '[3] four\n');
    assert.equal(p.end(), '', 'nothing twice');
  });

  it('keeps empty lines and ends without inventing one', () => {
    const p = new LinePrefixer('> ');
    assert.equal(p.push('a\n\nb\n'), '> a\n> \n> b\n');
    assert.equal(p.end(), '');
  });

  it('joins a multi-byte character split between chunks', () => {
    const p = new LinePrefixer('[0] ');
    const all = bytes('héllo ✓\n');
    const at = all.indexOf(0xe2); // first byte of ✓ (3 bytes)
    assert.equal(p.push(all.subarray(0, at + 1)), '');
    assert.equal(p.push(all.subarray(at + 1)), '[0] héllo ✓\n');
  });

  it('writes out a line that never ends in pieces, holding at most MAX_PARTIAL_CHARS', () => {
    const p = new LinePrefixer('[1] ');
    const max = LinePrefixer.MAX_PARTIAL_CHARS;
    const out = p.push('x'.repeat(max * 2 + 5));
    assert.equal(out, `[1] ${'x'.repeat(max)}\n[1] ${'x'.repeat(max)}\n`);
    assert.equal(p.end(), '[1] xxxxx\n');
  });
});
