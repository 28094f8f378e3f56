import t from 'tap';
import fc from 'fast-check';
import { FrameEncoder, HeadTailBuffer, utf8CompletePrefix } from '../../agent/output.ts';

/** Splits `buf` at the given cut points. */
function chunked(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

t.test('utf8CompletePrefix holds back exactly an incomplete final character', async (t) => {
  const euro = Buffer.from('€'); // e2 82 ac
  const grin = Buffer.from('😀'); // f0 9f 98 80
  t.equal(utf8CompletePrefix(Buffer.from('abc')), 3);
  t.equal(utf8CompletePrefix(euro), 3);
  t.equal(utf8CompletePrefix(euro.subarray(0, 2)), 0);
  t.equal(utf8CompletePrefix(Buffer.concat([Buffer.from('a'), euro.subarray(0, 1)])), 1);
  t.equal(utf8CompletePrefix(grin), 4);
  t.equal(utf8CompletePrefix(grin.subarray(0, 3)), 0);
  t.equal(utf8CompletePrefix(Buffer.alloc(0)), 0);
});

t.test('HeadTailBuffer keeps exactly the head and the tail, whatever the chunking', async () => {
  fc.assert(fc.property(
    fc.uint8Array({ maxLength: 3000 }), fc.array(fc.nat(), { maxLength: 30 }), fc.nat({ max: 2000 }),
    (bytes, cuts, cap) => {
      const data = Buffer.from(bytes);
      const b = new HeadTailBuffer(cap);
      for (const c of chunked(data, cuts)) b.push(c);
      const { data: kept, truncatedBytes } = b.result(false);
      if (data.length <= cap) return kept.equals(data) && truncatedBytes === 0;
      const head = Math.floor(cap / 2);
      const expected = Buffer.concat([data.subarray(0, head), data.subarray(data.length - (cap - head))]);
      return kept.equals(expected) && truncatedBytes === data.length - cap && b.totalBytes === data.length;
    },
  ), { numRuns: 300 });
});

t.test('HeadTailBuffer in UTF-8 mode never cuts a character and accounts for every byte', async () => {
  fc.assert(fc.property(
    // U+FFFD in the input would show up in the output without any cut: not what is checked here.
    fc.string({ unit: 'grapheme', maxLength: 400 }).filter((s) => !s.includes('\uFFFD')), fc.array(fc.nat(), { maxLength: 20 }), fc.nat({ max: 600 }),
    (text, cuts, cap) => {
      const data = Buffer.from(text, 'utf8');
      const b = new HeadTailBuffer(cap);
      for (const c of chunked(data, cuts)) b.push(c);
      const { data: kept, truncatedBytes } = b.result(true);
      const decoded = kept.toString('utf8');
      return !decoded.includes('\uFFFD') && kept.length + truncatedBytes === data.length && kept.length <= Math.max(cap, data.length <= cap ? data.length : 0);
    },
  ), { numRuns: 300 });
});

t.test('FrameEncoder: frames re-assemble the text exactly, with contiguous byte offsets', async () => {
  fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 300 }), fc.array(fc.nat(), { maxLength: 40 }), (text, cuts) => {
    const data = Buffer.from(text, 'utf8');
    const enc = new FrameEncoder('stdout', 'utf8');
    const lines = chunked(data, cuts).map((c) => enc.encode(c)).filter((l) => l !== undefined);
    const last = enc.flush();
    if (last) lines.push(last);
    let offset = 0;
    let joined = '';
    for (const line of lines) {
      const f = JSON.parse(line) as { type: string; data: string; offset: number };
      // A character split across frames would show up as U+FFFD and break `joined === text`.
      if (f.type !== 'stdout' || f.offset !== offset) return false;
      offset += Buffer.byteLength(f.data);
      joined += f.data;
    }
    return joined === text && offset === data.length;
  }), { numRuns: 300 });
});

t.test('FrameEncoder base64: every byte once, offsets in bytes', async () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 20 }), (bytes, cuts) => {
    const data = Buffer.from(bytes);
    const enc = new FrameEncoder('stderr', 'base64');
    const parts = chunked(data, cuts).map((c) => enc.encode(c)).filter((l) => l !== undefined).map((l) => JSON.parse(l) as { type: string; data: string; offset: number });
    let offset = 0;
    for (const p of parts) {
      if (p.type !== 'stderr' || p.offset !== offset) return false;
      offset += Buffer.from(p.data, 'base64').length;
    }
    return Buffer.concat(parts.map((p) => Buffer.from(p.data, 'base64'))).equals(data) && enc.flush() === undefined;
  }), { numRuns: 200 });
});
