// Golden files: test/testdata/inject/<case>.yaml → <case>.yaml.injected (the injected Pod),
// .denied (the denial message), .skipped (why it was left alone), .warnings (AdmissionResponse
// warnings). Cases are discovered from the folder; an optional <case>.config.yaml is merged over
// webhook/injection-config.example.yaml. Stale or missing outputs fail; REFRESH_GOLDEN=1 rewrites.
// Every injected Pod must validate, be a fixpoint, and equal the input patched by the real
// webhook over HTTPS.
import t from 'tap';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import jsonpatch from 'fast-json-patch';
import { parse, stringify } from 'yaml';
import { parseInjectionConfig, type InjectionConfig } from '../../webhook/config.ts';
import { inject, type Json } from '../../webhook/inject.ts';
import { diff } from '../../webhook/patch.ts';
import { validatePod } from './pod-schema.ts';
import { patchOf, podReview, startWebhook, type StartedWebhook } from './helpers.ts';

const DIR = new URL('../testdata/inject/', import.meta.url);
const EXAMPLE = new URL('../../webhook/injection-config.example.yaml', import.meta.url);
const REFRESH = process.env.REFRESH_GOLDEN === '1';
const OUTPUTS = ['.injected', '.denied', '.skipped', '.warnings'] as const;

const files = readdirSync(DIR);
const cases = files.filter((f) => f.endsWith('.yaml') && !f.endsWith('.config.yaml')).map((f) => f.slice(0, -'.yaml'.length)).sort();

/**
 * What the API server stores for a Pod: empty strings, lists and maps are gone (the Pod API's
 * fields are `omitempty`). Stands in for the API server's decode/encode round trip.
 */
function asStored(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(asStored);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const s = asStored(v);
    const empty = s === '' || (Array.isArray(s) && s.length === 0) || (s !== null && typeof s === 'object' && !Array.isArray(s) && Object.keys(s).length === 0 && k !== 'emptyDir');
    if (!empty) out[k] = s;
  }
  return out;
}

function merge(base: unknown, overlay: unknown): unknown {
  if (overlay === null || typeof overlay !== 'object' || Array.isArray(overlay) || base === null || typeof base !== 'object' || Array.isArray(base)) return overlay;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(overlay)) out[k] = merge(out[k], v);
  return out;
}

const baseRaw: unknown = parse(readFileSync(EXAMPLE, 'utf8'));
function configFor(name: string): { config: InjectionConfig; key: string } {
  const overlayFile = new URL(`${name}.config.yaml`, DIR);
  if (!existsSync(overlayFile)) return { config: parseInjectionConfig(baseRaw), key: 'base' };
  return { config: parseInjectionConfig(merge(baseRaw, parse(readFileSync(overlayFile, 'utf8')))), key: name };
}

const root = t;
const toYaml = (v: unknown) => stringify(v, { lineWidth: 0, aliasDuplicateObjects: false });

t.test('the golden folder has cases and no stale outputs', async (t) => {
  t.ok(cases.length >= 30, `${cases.length} cases`);
  for (const f of files) {
    const owner = f.endsWith('.config.yaml') ? f.slice(0, -'.config.yaml'.length)
      : f.endsWith('.yaml') ? f.slice(0, -'.yaml'.length)
        : OUTPUTS.map((s) => (f.endsWith(`.yaml${s}`) ? f.slice(0, -`.yaml${s}`.length) : undefined)).find((x) => x !== undefined);
    t.ok(owner !== undefined && cases.includes(owner), `${f} belongs to a case`);
  }
});

const servers = new Map<string, Promise<StartedWebhook>>();

for (const name of cases) {
  t.test(name, async (t) => {
    const { config, key } = configFor(name);
    const input: unknown = parse(readFileSync(new URL(`${name}.yaml`, DIR), 'utf8'));
    const result = inject(input, config);
    const want: Partial<Record<(typeof OUTPUTS)[number], string>> = {};
    if (result.denied) want['.denied'] = `${result.message}\n`;
    else if (result.skipped) want['.skipped'] = `${result.skipped}\n`;
    else want['.injected'] = toYaml(result.pod);
    if (!result.denied && result.warnings.length > 0) want['.warnings'] = result.warnings.map((w) => `${w}\n`).join('');

    for (const suffix of OUTPUTS) {
      const file = new URL(`${name}.yaml${suffix}`, DIR);
      const expected = want[suffix];
      if (REFRESH) {
        if (expected === undefined) rmSync(file, { force: true });
        else writeFileSync(file, expected);
        continue;
      }
      if (expected === undefined) {
        t.notOk(existsSync(file), `no stale ${name}.yaml${suffix}`);
      } else {
        t.ok(existsSync(file), `${name}.yaml${suffix} exists (run with REFRESH_GOLDEN=1 to create it)`);
        if (existsSync(file)) t.equal(readFileSync(file, 'utf8'), expected, `${name}.yaml${suffix} is up to date`);
      }
    }

    if (result.denied) {
      t.ok(result.violations.length > 0);
      return;
    }
    if (result.skipped) {
      t.same(result.pod, input, 'skipped Pods are untouched');
      return;
    }
    t.same(validatePod(result.pod), [], 'the injected Pod validates');
    const again = inject(result.pod, config);
    t.notOk(again.denied, 'the injected Pod is allowed again');
    if (!again.denied) t.equal(JSON.stringify(again.pod), JSON.stringify(result.pod), 'inject is a fixpoint (byte for byte)');
    // Reinvocation (reinvocationPolicy: IfNeeded) sees the Pod as the API server decoded our patch:
    // Go's omitempty has dropped empty strings, lists and maps. Nothing may come back: a non-empty
    // patch there would review and count every Pod twice.
    const stored = asStored(result.pod);
    const reinvoked = inject(stored, config);
    t.same(reinvoked.denied ? reinvoked.message : diff(stored as Json, reinvoked.pod as Json), [], 'reinvocation is a no-op patch');

    // The real webhook over HTTPS: its patch applied to the input gives the golden.
    if (!servers.has(key)) servers.set(key, startWebhook(root, { injection: config }));
    const webhook = await servers.get(key)!;
    const review = podReview(input);
    const res = await webhook.post(review);
    t.equal(res.status, 200);
    const body = res.json();
    t.equal(body.response?.uid, review.request.uid, 'uid echoed');
    t.equal(body.response?.allowed, true);
    const patch = patchOf(body) as jsonpatch.Operation[];
    const patched = jsonpatch.applyPatch(structuredClone(input), patch, true, false).newDocument;
    t.same(patched, result.pod, 'webhook patch applied to the input equals the golden');
    t.same(body.response?.warnings ?? [], result.warnings, 'warnings');
  });
}

