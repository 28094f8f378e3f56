// docs/configuration.md is generated from the zod schemas (scripts/gen-config-docs.ts): it must be
// current, list every field of every schema, and the generator must refuse undocumented fields.
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import t from 'tap';
import { z } from 'zod';
import { VERSION } from '../../lib/version.ts';
import { fieldsOf, OUTPUT, renderConfigurationDocs, sections } from '../../scripts/gen-config-docs.ts';

t.test('docs/configuration.md is up to date (npm run docs:config regenerates it)', async (t) => {
  const expected = renderConfigurationDocs();
  const actual = readFileSync(OUTPUT, 'utf8');
  if (actual !== expected) {
    const a = actual.split('\n');
    const e = expected.split('\n');
    const i = e.findIndex((line, n) => line !== a[n]);
    t.fail(`docs/configuration.md is stale: first difference at line ${i + 1}:\n  file:      ${a[i]}\n  generated: ${e[i]}\nRun npm run docs:config.`);
  } else {
    t.pass('generated and committed docs are identical');
  }
});

t.test('every field of every schema is documented, with a description', async (t) => {
  const doc = renderConfigurationDocs();
  for (const section of sections()) {
    const schema = z.toJSONSchema(section.schema, { io: 'input', unrepresentable: 'any' }) as { properties: Record<string, unknown> };
    const fields = fieldsOf(section);
    t.ok(fields.length >= Object.keys(schema.properties).length, `${section.id}: at least one row per top-level field`);
    for (const key of Object.keys(schema.properties)) {
      t.ok(fields.some((f) => f.name === key || f.name.startsWith(`${key}.`)), `${section.id}: ${key} listed`);
    }
    for (const f of fields) {
      t.ok(f.description.length > 3, `${section.id}: ${f.name} has a description`);
      t.match(doc, `| \`${f.name}\` |`, `${section.id}: ${f.name} in the document`);
    }
  }
  // The document is stable across machines: no temporary directory or release version in it.
  t.notOk(doc.includes(`${tmpdir()}/`), 'no temporary directory');
  t.notOk(doc.includes(`:${VERSION}`), 'no release version');
});

t.test('the generator refuses a field without a description, and takes .describe() text', async (t) => {
  const base = { id: 'probe', title: 'Probe', intro: '', help: {}, nested: false };
  t.throws(() => fieldsOf({ ...base, schema: z.object({ UNDOCUMENTED_SETTING: z.string().optional() }) }), /UNDOCUMENTED_SETTING/);
  const [field] = fieldsOf({ ...base, schema: z.object({ DOCUMENTED: z.coerce.number().int().min(1).max(9).default(3).describe('how many probes to send') }) });
  t.match(field, { name: 'DOCUMENTED', type: 'integer', defaultText: '3', constraints: ['1–9'], description: 'how many probes to send' });
  const [help] = fieldsOf({ ...base, help: { FROM_HELP: 'described by the --help table' }, schema: z.object({ FROM_HELP: z.string().default('x') }) });
  t.equal(help!.description, 'described by the --help table');
});
