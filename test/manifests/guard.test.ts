// The guard agrees with the injector: the ValidatingAdmissionPolicy's CEL admits every pod the
// webhook produces (its golden outputs, discovered from test/testdata/inject/) and denies, with
// the policy's own message, uninjected pods and injected pods tampered with one rule at a time.
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ANNOTATION_STATUS, CONTAINER_PROXY, CONTAINER_WORKSPACE, LABEL_INJECTION, LABEL_INJECTION_ENABLED } from '../../lib/constants.ts';
import { parseInjectionConfig, type InjectionConfig } from '../../webhook/config.ts';
import { evaluateGuard, type Policy } from './guard.ts';
import { REPO_ROOT, find, kubectlSkipReason, renderOverlay, type K8sObject } from './render.ts';

const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED: ${skip}`);

const GOLDEN_DIR = join(REPO_ROOT, 'test', 'testdata', 'inject');
const FIXTURE = join(import.meta.dirname, 'fixtures', 'injected-workspace.yaml');
// The webhook's goldens are made with this config, and a case's <case>.config.yaml merged over it.
const GOLDEN_BASE_CONFIG = join(REPO_ROOT, 'webhook', 'injection-config.example.yaml');

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function pods(file: string): Json[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS() as Json).filter((o) => o?.kind === 'Pod');
}

function goldenFiles(suffix: string): string[] {
  if (!existsSync(GOLDEN_DIR)) return [];
  return readdirSync(GOLDEN_DIR).filter((f) => f.endsWith(suffix)).sort().map((f) => join(GOLDEN_DIR, f));
}

/** The webhook golden test's merge: objects merge key by key, anything else replaces. */
function merge(base: unknown, overlay: unknown): unknown {
  if (overlay === null || typeof overlay !== 'object' || Array.isArray(overlay) || base === null || typeof base !== 'object' || Array.isArray(base)) return overlay;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(overlay)) out[k] = merge(out[k], v);
  return out;
}

/** The config a golden was injected with, or undefined for our own fixture (made to the base config). */
function goldenConfig(injectedFile: string): InjectionConfig | undefined {
  if (!existsSync(GOLDEN_BASE_CONFIG)) return undefined;
  const base: unknown = parseAllDocuments(readFileSync(GOLDEN_BASE_CONFIG, 'utf8'))[0]!.toJS();
  const caseConfig = injectedFile.replace(/\.yaml\.injected$/, '.config.yaml');
  const raw = existsSync(caseConfig) ? merge(base, parseAllDocuments(readFileSync(caseConfig, 'utf8'))[0]!.toJS()) : base;
  return parseInjectionConfig(raw, caseConfig);
}

interface Injected { name: string; pod: Json; config?: InjectionConfig }

/** Every injected pod to check: the webhook's goldens, plus our fixture built to the webhook's spec. */
function injectedPods(): Injected[] {
  const out: Injected[] = [{ name: 'fixture injected-workspace.yaml', pod: pods(FIXTURE)[0]! }];
  for (const file of goldenFiles('.yaml.injected')) {
    const config = goldenConfig(file);
    for (const [i, pod] of pods(file).entries()) out.push({ name: `golden ${file.slice(GOLDEN_DIR.length + 1)}#${i}`, pod, config });
  }
  return out;
}

/**
 * The guard as it would be deployed next to a webhook running `config`: its allowed runtimes and
 * capabilities are the config's (cross-check.test.ts shows every overlay's policy is built so).
 * undefined when no guard can go with the config: one that sets no RuntimeClass (our overlays
 * never do; local uses runc, see manifests/README.md).
 */
function policyFor(policy: Policy, config: InjectionConfig | undefined): Policy | undefined {
  if (config === undefined) return policy;
  if (config.runtime.runtimeClassName === null) return undefined;
  const lists: Record<string, readonly string[]> = {
    allowedRuntimeClasses: [config.runtime.runtimeClassName, ...config.runtime.allowedFallbacks],
    allowedCapabilities: config.workspace.capabilities,
  };
  const variables = policy.spec.variables!.map((v) => {
    const list = lists[v.name];
    if (list !== undefined) return { name: v.name, expression: `[${list.map((x) => `'${x}'`).join(', ')}]` };
    if (v.name === 'workspaceContainers') return { name: v.name, expression: v.expression.replace(`'${CONTAINER_WORKSPACE}'`, `'${config.workspaceContainerName}'`) };
    return v;
  });
  return { spec: { ...policy.spec, variables } };
}

const workspaceOf = (pod: Json): Json =>
  pod.spec.containers.find((c: Json) => c.name === CONTAINER_WORKSPACE) ?? pod.spec.containers[0];
const sidecarOf = (pod: Json): Json => pod.spec.initContainers[0];

const MESSAGES = {
  runtime: /spec.runtimeClassName must be gvisor or an allowed fallback/,
  sidecar: /first init container must be the credential-proxy native sidecar/,
  workspace: /the pod has no workspace container/,
  nonRoot: /every container must run as non-root/,
  readOnly: /readOnlyRootFilesystem: true/,
  escalation: /allowPrivilegeEscalation: false/,
  capabilities: /may add only the CHOWN, SETUID, SETGID and DAC_OVERRIDE capabilities/,
  privileged: /privileged containers are not allowed/,
  hostNamespaces: /host namespaces \(hostNetwork, hostPID, hostIPC\) are not allowed/,
  hostPath: /hostPath volumes are not allowed/,
  token: /automountServiceAccountToken must be false/,
} as const;

/** One broken rule each; the guard must deny with exactly that rule's message. */
const TAMPERS: { name: string; expect: keyof typeof MESSAGES; apply: (pod: Json) => void }[] = [
  { name: 'runtimeClassName removed', expect: 'runtime', apply: (p) => { delete p.spec.runtimeClassName; } },
  { name: 'runtimeClassName kata', expect: 'runtime', apply: (p) => { p.spec.runtimeClassName = 'kata'; } },
  { name: 'sidecar removed', expect: 'sidecar', apply: (p) => { p.spec.initContainers.shift(); } },
  { name: 'another init container before the sidecar', expect: 'sidecar', apply: (p) => {
    const setup = structuredClone(sidecarOf(p));
    setup.name = 'setup';
    delete setup.restartPolicy;
    p.spec.initContainers.unshift(setup);
  } },
  { name: 'sidecar restartPolicy removed', expect: 'sidecar', apply: (p) => { delete sidecarOf(p).restartPolicy; } },
  { name: 'sidecar restartPolicy Never', expect: 'sidecar', apply: (p) => { sidecarOf(p).restartPolicy = 'Never'; } },
  { name: 'no container named workspace among several', expect: 'workspace', apply: (p) => {
    const ws = workspaceOf(p);
    ws.name = 'main';
    if (p.spec.containers.length === 1) p.spec.containers.push({ ...structuredClone(ws), name: 'helper' });
  } },
  { name: 'workspace runAsNonRoot false', expect: 'nonRoot', apply: (p) => { workspaceOf(p).securityContext.runAsNonRoot = false; } },
  { name: 'workspace runAsUser 0', expect: 'nonRoot', apply: (p) => { workspaceOf(p).securityContext.runAsUser = 0; } },
  { name: 'runAsNonRoot nowhere', expect: 'nonRoot', apply: (p) => {
    delete workspaceOf(p).securityContext.runAsNonRoot;
    if (p.spec.securityContext) delete p.spec.securityContext.runAsNonRoot;
  } },
  { name: 'pod-level runAsUser 0 inherited by every container', expect: 'nonRoot', apply: (p) => {
    for (const c of [...p.spec.initContainers, ...p.spec.containers]) delete c.securityContext.runAsUser;
    p.spec.securityContext = { ...p.spec.securityContext, runAsUser: 0 };
  } },
  { name: 'sidecar runAsUser 0', expect: 'nonRoot', apply: (p) => { sidecarOf(p).securityContext.runAsUser = 0; } },
  { name: 'workspace writable root', expect: 'readOnly', apply: (p) => { workspaceOf(p).securityContext.readOnlyRootFilesystem = false; } },
  { name: 'workspace readOnlyRootFilesystem unset', expect: 'readOnly', apply: (p) => { delete workspaceOf(p).securityContext.readOnlyRootFilesystem; } },
  { name: 'workspace allowPrivilegeEscalation true', expect: 'escalation', apply: (p) => { workspaceOf(p).securityContext.allowPrivilegeEscalation = true; } },
  { name: 'workspace adds NET_ADMIN', expect: 'capabilities', apply: (p) => { addCap(workspaceOf(p), 'NET_ADMIN'); } },
  { name: 'workspace adds CAP_NET_RAW', expect: 'capabilities', apply: (p) => { addCap(workspaceOf(p), 'CAP_NET_RAW'); } },
  { name: 'sidecar adds sys_admin (lower case)', expect: 'capabilities', apply: (p) => { addCap(sidecarOf(p), 'sys_admin'); } },
  { name: 'workspace privileged', expect: 'privileged', apply: (p) => { workspaceOf(p).securityContext.privileged = true; } },
  { name: 'sidecar privileged', expect: 'privileged', apply: (p) => { sidecarOf(p).securityContext.privileged = true; } },
  { name: 'hostNetwork', expect: 'hostNamespaces', apply: (p) => { p.spec.hostNetwork = true; } },
  { name: 'hostPID', expect: 'hostNamespaces', apply: (p) => { p.spec.hostPID = true; } },
  { name: 'hostIPC', expect: 'hostNamespaces', apply: (p) => { p.spec.hostIPC = true; } },
  { name: 'hostPath volume', expect: 'hostPath', apply: (p) => { (p.spec.volumes ??= []).push({ name: 'node-root', hostPath: { path: '/' } }); } },
  { name: 'service account token mounted', expect: 'token', apply: (p) => { p.spec.automountServiceAccountToken = true; } },
  { name: 'automountServiceAccountToken unset', expect: 'token', apply: (p) => { delete p.spec.automountServiceAccountToken; } },
];

function addCap(c: Json, cap: string): void {
  const caps = (c.securityContext.capabilities ??= {});
  caps.add = [...(caps.add ?? []), cap];
}

t.test('the guard', { skip }, async (t) => {
  const objects = renderOverlay('prod');
  const policy = find<Policy & K8sObject>(objects, 'ValidatingAdmissionPolicy', 'workspace-sandbox-guard');
  const all = injectedPods();

  t.test('golden files of the webhook are used once it has any', async (t) => {
    const goldens = all.filter((p) => p.name.startsWith('golden'));
    if (existsSync(GOLDEN_DIR) && readdirSync(GOLDEN_DIR).length > 0) {
      t.ok(goldens.length > 0, `${GOLDEN_DIR} has files, so at least one *.yaml.injected Pod must be checked`);
    } else {
      t.comment(`no webhook goldens yet in ${GOLDEN_DIR}: checking the fixture only`);
    }
    t.ok(all.length >= 1);
  });

  t.test('admits every injected pod', async (t) => {
    for (const { name, pod, config } of all) {
      const p = policyFor(policy, config);
      if (p === undefined) { t.comment(`${name}: injected without a RuntimeClass, a config no guard is deployed with`); continue; }
      t.same(evaluateGuard(p, pod).failures, [], name);
    }
  });

  t.test('the goldens\' base config is the one the rendered guard is built for', { skip: existsSync(GOLDEN_BASE_CONFIG) ? false : 'no webhook/injection-config.example.yaml' }, async (t) => {
    const config = goldenConfig(join(GOLDEN_DIR, 'none.yaml.injected'))!;
    t.same(policyFor(policy, config)!.spec.variables, policy.spec.variables);
  });

  t.test('capability names in any form the webhook accepts are admitted', async (t) => {
    const pod = structuredClone(all[0]!.pod);
    workspaceOf(pod).securityContext.capabilities.add = ['cap_chown', 'CAP_SETUID', 'setgid', 'DAC_OVERRIDE'];
    t.same(evaluateGuard(policy, pod).failures, []);
  });

  t.test('denies an uninjected pod with the policy\'s messages', async (t) => {
    const plain = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'plain', namespace: 'sandboxes' },
      spec: { containers: [{ name: 'workspace', image: 'python:3.12-slim' }] } };
    const r = evaluateGuard(policy, plain);
    t.notOk(r.allowed);
    t.same(r.failures.filter((f) => f.error !== undefined), [], 'denied by the rules, not by a CEL error');
    const messages = r.failures.map((f) => f.message);
    for (const m of [MESSAGES.runtime, MESSAGES.sidecar, MESSAGES.nonRoot, MESSAGES.readOnly, MESSAGES.token]) {
      t.ok(messages.some((x) => m.test(x)), `fails ${m}`);
    }
    t.ok(messages.every((m) => m.startsWith('workspace-sandbox: ')), 'every message is one of the policy\'s');
  });

  t.test('denies the inputs of the webhook\'s denied cases that carry no injection', async (t) => {
    for (const file of goldenFiles('.yaml.denied')) {
      const input = file.slice(0, -'.denied'.length);
      if (!existsSync(input)) continue;
      for (const pod of pods(input)) {
        if (pod.metadata?.annotations?.[ANNOTATION_STATUS] !== undefined) continue; // carries an earlier injection
        t.notOk(evaluateGuard(policy, pod).allowed, file.slice(GOLDEN_DIR.length + 1));
      }
    }
  });

  for (const tamper of TAMPERS) {
    t.test(`denies an injected pod with ${tamper.name}`, async (t) => {
      for (const { name, pod, config } of all) {
        const p = policyFor(policy, config);
        if (p === undefined) continue;
        const tampered = structuredClone(pod);
        tamper.apply(tampered);
        const r = evaluateGuard(p, tampered);
        t.same(r.failures.filter((f) => f.error !== undefined), [], `${name}: no CEL error`);
        t.equal(r.failures.length, 1, `${name}: exactly one rule fails`);
        t.match(r.failures[0]?.message ?? '', MESSAGES[tamper.expect], name);
      }
    });
  }

  t.test('the local guard admits runc and refuses gvisor (kind has no gVisor)', async (t) => {
    const local = find<Policy & K8sObject>(renderOverlay('local'), 'ValidatingAdmissionPolicy', 'workspace-sandbox-guard');
    const pod = structuredClone(all[0]!.pod);
    pod.spec.runtimeClassName = 'runc';
    t.same(evaluateGuard(local, pod).failures, []);
    pod.spec.runtimeClassName = 'gvisor';
    t.match(evaluateGuard(local, pod).failures.map((f) => f.message), [MESSAGES.runtime]);
  });

  t.test('the policy applies exactly where the webhook injects', async (t) => {
    const policyObj = policy as unknown as Json;
    const binding = find<Json & K8sObject>(objects, 'ValidatingAdmissionPolicyBinding', 'workspace-sandbox-guard');
    t.same(binding.spec.validationActions, ['Deny']);
    t.equal(binding.spec.policyName, policyObj.metadata.name);
    t.equal(policyObj.spec.failurePolicy, 'Fail');
    const selector = { [LABEL_INJECTION]: LABEL_INJECTION_ENABLED };
    t.same(binding.spec.matchResources.namespaceSelector.matchLabels, selector);
    t.same(policyObj.spec.matchConstraints.namespaceSelector.matchLabels, selector);
    t.same(policyObj.spec.matchConstraints.resourceRules, [
      { operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }]);
    // The policy names the sidecar and workspace containers as the constants do.
    const text = JSON.stringify(policyObj.spec);
    t.match(text, `'${CONTAINER_PROXY}'`);
    t.match(text, `'${CONTAINER_WORKSPACE}'`);
  });
});
