// webhook/patch.ts must produce exactly what fast-json-patch `compare` produces.
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import jsonpatch from 'fast-json-patch';
import { parse } from 'yaml';
import { readConfigFile } from '../../lib/config.ts';
import { parseInjectionConfig } from '../../webhook/config.ts';
import { inject } from '../../webhook/inject.ts';
import { diff } from '../../webhook/patch.ts';
import { podArb } from './arbitraries.ts';

const DIR = new URL('../testdata/inject/', import.meta.url);
const config = parseInjectionConfig(readConfigFile(new URL('../../webhook/injection-config.example.yaml', import.meta.url).pathname));
const same = (a: object, b: object) => JSON.stringify(diff(a, b)) === JSON.stringify(jsonpatch.compare(a, b));

t.test('equal to compare on every golden input/output pair', async (t) => {
  const goldens = readdirSync(DIR).filter((f) => f.endsWith('.yaml.injected'));
  t.ok(goldens.length > 15);
  for (const f of goldens) {
    const input = parse(readFileSync(new URL(f.replace(/\.injected$/, ''), DIR), 'utf8')) as object;
    const output = parse(readFileSync(new URL(f, DIR), 'utf8')) as object;
    t.ok(same(input, output), f);
  }
});

t.test('equal to compare on generated Pods and on arbitrary JSON', async (t) => {
  fc.assert(fc.property(podArb, (pod) => {
    const r = inject(pod, config);
    if (!r.denied && !same(pod, r.pod)) throw new Error('differs from compare');
  }), { numRuns: 1500 });
  const json = fc.jsonValue({ maxDepth: 4 }).filter((v) => v !== null && typeof v === 'object') as fc.Arbitrary<object>;
  fc.assert(fc.property(json, json, (a, b) => same(a, b)), { numRuns: 3000 });
  t.pass();
});

t.test('keys with / and ~ are escaped (RFC 6901)', async (t) => {
  t.same(diff({ a: { 'x/y~z': 1 } }, { a: { 'x/y~z': 2, 'n~1': 3 } }), [
    { op: 'replace', path: '/a/x~1y~0z', value: 2 },
    { op: 'add', path: '/a/n~01', value: 3 },
  ]);
  t.same(diff([1, 2, 3], [1]), [{ op: 'remove', path: '/2' }, { op: 'remove', path: '/1' }]);
  t.same(diff({ a: [1] }, { a: { 0: 1 } }), [{ op: 'replace', path: '/a', value: { 0: 1 } }]);
});
