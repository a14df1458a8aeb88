import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { Level } from 'level';
import { LastLines, type OutputItem, TaskOutputStore } from './task-output.ts';

const item = (seq: number, stream: 'stdout' | 'stderr', text: string): OutputItem => ({
  seq,
  stream,
  at: 1000 + seq,
  data: Buffer.from(text),
});
const shown = (items: OutputItem[]) => items.map((i) => `${i.stream}:${Buffer.from(i.data).toString()}`);

describe('LastLines', () => {
  it("assembles each stream's lines across its chunks and keeps the last N, a final partial line included", () => {
    const l = new LastLines(3);
    for (const e of [
      item(0, 'stdout', 'one\ntw'),
      item(1, 'stderr', 'err-a\n'),
      item(2, 'stdout', 'o\nthree\nfou'),
      item(3, 'stderr', 'err-b'),
    ])
      l.push(e);
    assert.deepEqual(shown(l.items()), ['stdout:three\n', 'stdout:fou', 'stderr:err-b']);
  });

  it('a line keeps the time and seq of the chunk it began in when it spans chunks', () => {
    const l = new LastLines(5);
    l.push(item(4, 'stdout', 'par'));
    l.push(item(7, 'stdout', 'tial\n'));
    const [only] = l.items();
    assert.equal(Buffer.from(only!.data).toString(), 'partial\n');
    assert.equal(only!.at, 1004);
    assert.equal(only!.seq, 4);
  });

  it('tail 0 gives nothing; a tail longer than the output gives all of it', () => {
    const none = new LastLines(0);
    none.push(item(0, 'stdout', 'a\nb\n'));
    assert.deepEqual(none.items(), []);
    const all = new LastLines(100);
    all.push(item(0, 'stdout', 'a\nb\n'));
    assert.deepEqual(shown(all.items()), ['stdout:a\n', 'stdout:b\n']);
  });

  it('for any chunking of one stream, the result is the last N lines of the whole text', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', 'b', '\n'), { maxLength: 60 }),
        fc.array(fc.nat(60), { maxLength: 8 }),
        fc.nat(12),
        (chars, cuts, n) => {
          const text = chars.join('');
          const bounds = [...new Set([0, ...cuts.filter((c) => c < text.length), text.length])].sort(
            (a, b) => a - b,
          );
          const l = new LastLines(n);
          for (let i = 0; i + 1 < bounds.length; i++)
            l.push(item(i, 'stdout', text.slice(bounds[i], bounds[i + 1])));
          const lines = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
          assert.deepEqual(
            l.items().map((x) => Buffer.from(x.data).toString()),
            lines.slice(Math.max(0, lines.length - n)),
          );
        },
      ),
    );
  });
});

describe('TaskOutputStore.read with tail (level on disk)', () => {
  let dir: string;
  let db: Level<string, Uint8Array>;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'meshrun-taskoutput-'));
    db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' });
    await db.open();
  });
  after(async () => {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });

  const collect = async (it: AsyncIterable<OutputItem>) => {
    const out: OutputItem[] = [];
    for await (const e of it) out.push(e);
    return out;
  };

  it('gives the last lines of stored output, and with follow then everything new until the end', async () => {
    const out = new TaskOutputStore(db);
    await out.begin('job-t/0', 1);
    for (let i = 1; i <= 5; i++) out.append('job-t/0', 'stdout', Buffer.from(`line ${i}\n`));
    // append() writes in the background: wait until all five are stored.
    for (let i = 0; i < 50 && (await collect(out.read('job-t/0'))).length < 5; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(shown(await collect(out.read('job-t/0', { tail: 2 }))), [
      'stdout:line 4\n',
      'stdout:line 5\n',
    ]);

    const followed: string[] = [];
    const following = (async () => {
      for await (const e of out.read('job-t/0', { tail: 1, follow: true }))
        followed.push(Buffer.from(e.data).toString());
    })();
    await new Promise((r) => setTimeout(r, 50));
    out.append('job-t/0', 'stdout', Buffer.from('line 6\n'));
    await new Promise((r) => setTimeout(r, 50));
    await out.end('job-t/0');
    await following;
    assert.deepEqual(followed, ['line 5\n', 'line 6\n']);
  });
});
