import t from 'tap';
import fc from 'fast-check';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readTar, type TarEntry, type TarLimits } from '../../agent/tar.ts';
import { gnuTar, pythonTar } from './tar-fixtures.ts';
import { tempDir } from './harness.ts';

const LIMITS: TarLimits = { maxEntryBytes: 1 << 30, maxTotalBytes: 1 << 30, maxEntries: 10_000 };

async function* chunks(buf: Buffer, size: number) {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

interface Read { path: string; type: TarEntry['type']; size: number; mode: number; linkpath: string; data: Buffer; mtime?: number }

async function readAll(input: AsyncIterable<Buffer>, limits = LIMITS, consume = true): Promise<Read[]> {
  const out: Read[] = [];
  for await (const e of readTar(input, limits)) {
    const parts: Buffer[] = [];
    if (consume) for await (const c of e.body) parts.push(c);
    out.push({ path: e.path, type: e.type, size: e.size, mode: e.mode, linkpath: e.linkpath, data: Buffer.concat(parts), mtime: e.mtime?.getTime() });
  }
  return out;
}

function fixtureTree(): string {
  const src = tempDir('ws-tar-');
  mkdirSync(join(src, 'a', 'b'.repeat(110)), { recursive: true });
  writeFileSync(join(src, 'a', 'b'.repeat(110), 'c'.repeat(120)), 'long');
  writeFileSync(join(src, 'a/empty'), '');
  writeFileSync(join(src, 'a/x.sh'), '#!/bin/sh\n', { mode: 0o750 });
  writeFileSync(join(src, 'a/block'), Buffer.alloc(512, 7)); // exactly one block: no padding
  symlinkSync('b'.repeat(110) + '/' + 'c'.repeat(120), join(src, 'a/long-link'));
  return src;
}

t.test('reads GNU and pax archives from GNU tar: long names, long link targets, modes, empty files', async (t) => {
  const src = fixtureTree();
  for (const format of ['gnu', 'pax'] as const) {
    const entries = await readAll(chunks(gnuTar(src, format), 10240));
    const byPath = new Map(entries.map((e) => [e.path.replace(/^\.\//, ''), e]));
    const long = byPath.get(`a/${'b'.repeat(110)}/${'c'.repeat(120)}`);
    t.ok(long, `${format}: long name joined`);
    t.equal(long?.data.toString(), 'long');
    t.equal(byPath.get('a/empty')?.size, 0, `${format}: empty file`);
    t.equal(byPath.get('a/x.sh')?.mode, 0o750, `${format}: mode`);
    t.same(byPath.get('a/block')?.data, Buffer.alloc(512, 7), `${format}: block-sized file`);
    t.match(byPath.get('a/long-link'), { type: 'symlink', linkpath: `${'b'.repeat(110)}/${'c'.repeat(120)}` }, `${format}: long link target`);
    t.equal(byPath.get(`a/${'b'.repeat(110)}`)?.type, 'directory');
  }
});

t.test('any chunking of the input yields the same entries (stream parsing)', async (t) => {
  const tar = pythonTar([
    { name: 'one.txt', data: 'x'.repeat(1000) },
    { name: 'dir', type: 'dir', mode: 0o755 },
    { name: `dir/${'n'.repeat(200)}`, data: Buffer.alloc(3000, 1) },
    { name: 'link', type: 'symlink', linkname: 'one.txt' },
  ], 'pax');
  const reference = await readAll(chunks(tar, tar.length));
  t.equal(reference.length, 4);
  await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 2000 }), async (size) => {
    const got = await readAll(chunks(tar, size));
    return JSON.stringify(got) === JSON.stringify(reference);
  }), { numRuns: 40 });
});

t.test('an entry whose body is not read is skipped correctly', async (t) => {
  const tar = pythonTar([{ name: 'a', data: 'A'.repeat(700) }, { name: 'b', data: 'B' }]);
  const paths = (await readAll(chunks(tar, 100), LIMITS, false)).map((e) => e.path);
  t.same(paths, ['a', 'b']);
});

t.test('pax mtime and size overrides are honoured', async (t) => {
  const tar = pythonTar([{ name: 'f', data: 'abc', mtime: 1234567890.5 }], 'pax');
  const [e] = await readAll(chunks(tar, 512));
  t.equal(e!.mtime, 1234567890500);
});

t.test('malformed archives are refused with WS_ERR_INVALID_TAR, never a hang or a crash', async (t) => {
  const good = pythonTar([{ name: 'a.txt', data: 'hello world' }]);
  const bad = (mutate: (b: Buffer) => Buffer) => mutate(Buffer.from(good));
  const cases: [string, Buffer][] = [
    ['empty input', Buffer.alloc(0)],
    ['not a tar', Buffer.from('hello, this is plain text\n'.repeat(50))],
    ['checksum mismatch', bad((b) => { b[10] = 0x41; return b; })],
    ['truncated header', good.subarray(0, 300)],
    ['truncated body', good.subarray(0, 512 + 5)],
    ['no end marker', good.subarray(0, 1024)],
    ['bad size digits', bad((b) => { b.write('99999999999', 124, 'latin1'); return fixChecksum(b); })],
    ['v7 header (no ustar magic)', bad((b) => { b.fill(0, 257, 265); return fixChecksum(b); })],
  ];
  for (const [name, buf] of cases) {
    await t.rejects(readAll(chunks(buf, 512)), { code: 'WS_ERR_INVALID_TAR' }, name);
  }
});

t.test('limits: entry size from the header, total bytes, entry count', async (t) => {
  const tar = pythonTar([{ name: 'a', data: Buffer.alloc(5000) }, { name: 'b', data: 'x' }]);
  await t.rejects(readAll(chunks(tar, 512), { ...LIMITS, maxEntryBytes: 4999 }), { code: 'WS_ERR_PAYLOAD_TOO_LARGE' });
  await t.rejects(readAll(chunks(tar, 512), { ...LIMITS, maxTotalBytes: 4000 }), { code: 'WS_ERR_PAYLOAD_TOO_LARGE' });
  await t.rejects(readAll(chunks(tar, 512), { ...LIMITS, maxEntries: 1 }), { code: 'WS_ERR_INVALID_TAR' });
  await t.rejects(readAll(chunks(pythonTar([{ name: 'p'.repeat(3000), data: 'x' }], 'pax'), 512), { ...LIMITS, maxMetaBytes: 1000 }), { code: 'WS_ERR_INVALID_TAR' }, 'oversized pax header');
  t.equal((await readAll(chunks(tar, 512), { ...LIMITS, maxEntryBytes: 5000, maxEntries: 2 })).length, 2, 'at the limits: fine');
});

t.test('pax headers cannot make the reader parse more than maxMetaBytes at once, whatever keys they hold', async (t) => {
  // Many short records of keys the reader does not use: refused by size before any is parsed.
  const records = Object.fromEntries(Array.from({ length: 30_000 }, (_, i) => [`k${i}`, 'v']));
  await t.rejects(readAll(chunks(pythonTar([{ name: 'a', data: 'x', pax: records }]), 4096), { ...LIMITS, maxMetaBytes: 64 * 1024 }),
    { code: 'WS_ERR_INVALID_TAR', message: /pax header/ }, 'a local header over the limit');
  await t.rejects(readAll(chunks(pythonTar([{ name: 'a', data: 'x' }], 'pax', records), 4096), { ...LIMITS, maxMetaBytes: 64 * 1024 }),
    { code: 'WS_ERR_INVALID_TAR', message: /pax header/ }, 'a global header over the limit');
  // A global header is never merged into the entries that follow: each entry's own records apply.
  const global = { comment: 'g'.repeat(1000), path: 'from-global' };
  const many = pythonTar(Array.from({ length: 200 }, (_, i) => ({ name: `f${i}`, data: `${i}`, pax: { comment: 'local' } })), 'pax', global);
  const read = await readAll(chunks(many, 4096));
  t.same(read.map((e) => e.path), Array.from({ length: 200 }, (_, i) => `f${i}`));
});

function fixChecksum(b: Buffer): Buffer {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}
