// One rule table (webhook/rules.ts), two readers: every rule `inject` can deny a Pod for has a
// counterpart in the guard (its own CEL, or a named rule that covers it), and every guard rule is
// in the policy built for a config. The CEL itself is evaluated in test/manifests/guard.test.ts.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { DEFAULT_INJECTION_CONFIG } from '../../webhook/config.ts';
import { buildGuard } from '../../webhook/guard.ts';
import { COVERED_RULES, GUARD_RULES } from '../../webhook/rules.ts';

const sources = ['inject.ts', 'rules.ts'].map((f) => readFileSync(new URL(`../../webhook/${f}`, import.meta.url), 'utf8')).join('\n');

/** Rule ids in `deny(field, '<id>', ...)` calls, as written in the source. */
const denied = new Set([...sources.matchAll(/\.deny\(\s*[^,]+,\s*'([a-z-]+)'/g)].map((m) => m[1]!));

t.test('the source denies by rule id, and finds the calls', async (t) => {
  t.ok(denied.size >= 15, `${denied.size} rule ids: ${[...denied].join(', ')}`);
});

t.test('every rule inject denies has a guard counterpart', async (t) => {
  for (const id of denied) {
    const guard = Object.hasOwn(GUARD_RULES, id);
    const covered = (COVERED_RULES as Record<string, { coveredBy: string }>)[id];
    t.ok(guard || covered !== undefined, `${id} is a guard rule or names the rule that covers it`);
    if (covered) t.ok(Object.hasOwn(GUARD_RULES, covered.coveredBy), `${id} is covered by the guard rule ${covered.coveredBy}`);
  }
});

t.test('every covered rule is one inject denies (no stale entries)', async (t) => {
  for (const id of Object.keys(COVERED_RULES)) t.ok(denied.has(id), `${id} is denied somewhere`);
});

t.test('the built policy carries every guard rule once, with a message naming a field', async (t) => {
  const { policy } = buildGuard(DEFAULT_INJECTION_CONFIG) as unknown as { policy: { spec: { validations: { message: string }[] } } };
  const ids = policy.spec.validations.map((v) => /\(rule ([a-z-]+)\)$/.exec(v.message)?.[1]);
  t.same(ids, Object.keys(GUARD_RULES));
  for (const v of policy.spec.validations) t.match(v.message, /spec\.|securityContext|env|volumeMounts|ports/);
  t.notOk(policy.spec.validations.some((v) => /privileged/.test(v.message)), 'no privileged rule: the API server refuses privileged with allowPrivilegeEscalation false');
});

t.test('no guard without a RuntimeClass', async (t) => {
  t.throws(() => buildGuard({ ...DEFAULT_INJECTION_CONFIG, runtime: { runtimeClassName: null, allowedFallbacks: [] } }), /requires a RuntimeClass/);
});
