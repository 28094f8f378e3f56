// The workspace ServiceAccount (the Pod Identity association's subject): with
// `workspaceServiceAccount` set, as in the EKS overlays, the webhook refuses a Pod created under
// any other, and the guard refuses one that got past the webhook. Without it nothing is checked.
import t from 'tap';
import { SERVICE_ACCOUNT_WORKSPACE } from '../../lib/constants.ts';
import { DEFAULT_INJECTION_CONFIG } from '../../webhook/config.ts';
import { buildGuard } from '../../webhook/guard.ts';
import { inject } from '../../webhook/inject.ts';
import { evaluateGuard, type Policy } from './guard.ts';

const config = { ...DEFAULT_INJECTION_CONFIG, workspaceServiceAccount: SERVICE_ACCOUNT_WORKSPACE };
const pod = (serviceAccountName?: string) => ({
  apiVersion: 'v1', kind: 'Pod', metadata: { name: 'w', namespace: 'sandboxes' },
  spec: { ...(serviceAccountName ? { serviceAccountName } : {}), containers: [{ name: 'workspace', image: 'python:3.12-slim' }] },
});

t.test('the webhook refuses a workspace Pod under another ServiceAccount, naming the field', async (t) => {
  for (const sa of [undefined, 'default', 'other-with-more-rights']) {
    const r = inject(pod(sa), config);
    t.ok(r.denied, `serviceAccountName ${sa ?? '(none)'} refused`);
    if (r.denied) t.match(r.violations, [{ field: 'spec.serviceAccountName', rule: 'service-account' }]);
  }
  const ok = inject(pod(SERVICE_ACCOUNT_WORKSPACE), config);
  t.notOk(ok.denied, 'the configured ServiceAccount is admitted');
  t.notOk(inject(pod(), DEFAULT_INJECTION_CONFIG).denied, 'not checked when the config names none');
});

t.test('the guard refuses a Pod that got past the webhook under another ServiceAccount', async (t) => {
  const policy = buildGuard(config).policy as unknown as Policy;
  const injected = inject(pod(SERVICE_ACCOUNT_WORKSPACE), config);
  if (injected.denied) throw new Error(injected.message);
  t.same(evaluateGuard(policy, injected.pod).failures, [], 'the injected Pod is admitted');
  for (const sa of [undefined, 'default']) {
    const tampered = structuredClone(injected.pod) as { spec: { serviceAccountName?: string } };
    if (sa === undefined) delete tampered.spec.serviceAccountName;
    else tampered.spec.serviceAccountName = sa;
    const failures = evaluateGuard(policy, tampered).failures;
    t.equal(failures.length, 1, `serviceAccountName ${sa ?? '(none)'}: one failure`);
    t.match(failures[0]?.message, /spec\.serviceAccountName must be workspace-sandbox-workspace.*\(rule service-account\)/);
  }
});
