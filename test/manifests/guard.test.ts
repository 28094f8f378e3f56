// The guard agrees with the injector. The ValidatingAdmissionPolicy is built from `inject`'s rule
// table (webhook/rules.ts, webhook/guard.ts) for each overlay's injection config; here its CEL is
// evaluated (@bufbuild/cel, as the API server evaluates it) against:
//  - every Pod the webhook produces (its golden outputs): all admitted;
//  - a corpus of tampered Pods, each the webhook's output with one thing broken, as someone who
//    bypassed the webhook would send it: each refused by the guard alone, by the rule whose
//    message names the field;
//  - the same tampered Pods given to `inject` (they carry the status annotation, so it re-renders):
//    whatever `inject` lets through, the guard admits.
import t from 'tap';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ANNOTATION_STATUS, CONTAINER_PROXY, LABEL_INJECTION, LABEL_INJECTION_ENABLED } from '../../lib/constants.ts';
import { parseInjectionConfig, type InjectionConfig } from '../../webhook/config.ts';
import { buildGuard, guardMessage, guardParams, GUARD_NAME } from '../../webhook/guard.ts';
import { inject, injectUpdate } from '../../webhook/inject.ts';
import { GUARD_RULES, VOLUME_SIDECAR_STATE, type GuardRuleId } from '../../webhook/rules.ts';
import { evaluateGuard, type Policy } from './guard.ts';
import { OVERLAYS, REPO_ROOT, find, kubectlSkipReason, renderOverlay, type K8sObject } from './render.ts';

const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED: ${skip}`);

const GOLDEN_DIR = join(REPO_ROOT, 'test', 'testdata', 'inject');
// The webhook's goldens are made with this config, and a case's <case>.config.yaml merged over it.
const GOLDEN_BASE_CONFIG = join(REPO_ROOT, 'webhook', 'injection-config.example.yaml');

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function pods(file: string): Json[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS() as Json).filter((o) => o?.kind === 'Pod');
}

function goldenFiles(suffix: string): string[] {
  return readdirSync(GOLDEN_DIR).filter((f) => f.endsWith(suffix)).sort().map((f) => join(GOLDEN_DIR, f));
}

/** The webhook golden test's merge: objects merge key by key, anything else replaces. */
function merge(base: unknown, overlay: unknown): unknown {
  if (overlay === null || typeof overlay !== 'object' || Array.isArray(overlay) || base === null || typeof base !== 'object' || Array.isArray(base)) return overlay;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(overlay)) out[k] = merge(out[k], v);
  return out;
}

function goldenConfig(injectedFile: string): InjectionConfig {
  const base: unknown = parseAllDocuments(readFileSync(GOLDEN_BASE_CONFIG, 'utf8'))[0]!.toJS();
  const caseConfig = injectedFile.replace(/\.yaml\.injected$/, '.config.yaml');
  const raw = existsSync(caseConfig) ? merge(base, parseAllDocuments(readFileSync(caseConfig, 'utf8'))[0]!.toJS()) : base;
  return parseInjectionConfig(raw, caseConfig);
}

interface Injected { name: string; pod: Json; config: InjectionConfig; policy: Policy }

/** Every golden injected Pod with the guard built for its config (none for a config without a RuntimeClass). */
function injectedPods(): Injected[] {
  const out: Injected[] = [];
  for (const file of goldenFiles('.yaml.injected')) {
    const config = goldenConfig(file);
    if (config.runtime.runtimeClassName === null) continue;
    const policy = buildGuard(config).policy as unknown as Policy;
    for (const [i, pod] of pods(file).entries()) out.push({ name: `golden ${file.slice(GOLDEN_DIR.length + 1)}#${i}`, pod, config, policy });
  }
  return out;
}

const workspaceOf = (pod: Json, config: InjectionConfig): Json =>
  pod.spec.containers.find((c: Json) => c.name === config.workspaceContainerName) ?? pod.spec.containers[0];
const sidecarOf = (pod: Json): Json => pod.spec.initContainers[0];
const addEnv = (c: Json, e: Json) => { c.env = [...(c.env ?? []), e]; };
const addVolume = (p: Json, v: Json, c: Json, mountPath: string) => {
  (p.spec.volumes ??= []).push(v);
  c.volumeMounts = [...(c.volumeMounts ?? []), { name: v.name, mountPath }];
};
/** A `kubectl debug` container, hardened like the workspace (so one broken thing shows alone). */
const ephemeral = (p: Json, config: InjectionConfig, change: (c: Json) => void = () => {}) => {
  const ws = workspaceOf(p, config);
  const c: Json = { name: 'debugger', image: 'busybox', securityContext: structuredClone(ws.securityContext) };
  change(c);
  (p.spec.ephemeralContainers ??= []).push(c);
};
const addCap = (c: Json, cap: string) => {
  const caps = (c.securityContext.capabilities ??= {});
  caps.add = [...(caps.add ?? []), cap];
};
const removeEnv = (c: Json, name: string) => { c.env = c.env.filter((e: Json) => e.name !== name); };

interface Tamper { name: string; expect: GuardRuleId[]; apply: (pod: Json, config: InjectionConfig) => void }

/** The attacks of the issue (a real API server admitted each with the webhook removed), and more. */
const TAMPERS: Tamper[] = [
  { name: 'AWS_CONTAINER_CREDENTIALS_FULL_URI in the workspace', expect: ['credential-env'], apply: (p, c) => addEnv(workspaceOf(p, c), { name: 'AWS_CONTAINER_CREDENTIALS_FULL_URI', value: 'http://169.254.170.23/v1/credentials' }) },
  { name: 'AWS access keys in the workspace', expect: ['credential-env'], apply: (p, c) => {
    addEnv(workspaceOf(p, c), { name: 'AWS_ACCESS_KEY_ID', value: 'AKIAEXAMPLE' });
    addEnv(workspaceOf(p, c), { name: 'AWS_SECRET_ACCESS_KEY', value: 'secret' });
  } },
  { name: 'the Pod Identity token mounted into the workspace', expect: ['service-account-token'], apply: (p, c) => addVolume(p, {
    name: 'eks-pod-identity-token-2', projected: { sources: [{ serviceAccountToken: { audience: 'pods.eks.amazonaws.com', expirationSeconds: 86400, path: 'eks-pod-identity-token' } }] },
  }, workspaceOf(p, c), '/var/run/secrets/pods.eks.amazonaws.com/serviceaccount') },
  { name: 'the rules-token Secret mounted into the workspace', expect: ['secret-volume'], apply: (p, c) => addVolume(p, { name: 'stolen-rules-token', secret: { secretName: 'workspace-sandbox-rules-token' } }, workspaceOf(p, c), '/rules-token') },
  { name: 'the sidecar\'s state volume (its CA key) mounted into the workspace', expect: ['reserved-volume'], apply: (p, c) => {
    workspaceOf(p, c).volumeMounts.push({ name: VOLUME_SIDECAR_STATE, mountPath: '/steal' });
  } },
  { name: 'a projected Secret mounted into the workspace', expect: ['secret-volume'], apply: (p, c) => addVolume(p, { name: 'bundle', projected: { sources: [{ secret: { name: 'db' } }] } }, workspaceOf(p, c), '/bundle') },
  { name: 'a CSI volume mounted into the workspace', expect: ['secret-volume'], apply: (p, c) => addVolume(p, { name: 'vault', csi: { driver: 'secrets-store.csi.k8s.io' } }, workspaceOf(p, c), '/vault') },
  { name: 'env from a Secret (secretKeyRef)', expect: ['secret-env'], apply: (p, c) => addEnv(workspaceOf(p, c), { name: 'DB_PASSWORD', valueFrom: { secretKeyRef: { name: 'db', key: 'password' } } }) },
  { name: 'env from a Secret (envFrom)', expect: ['secret-env'], apply: (p, c) => { workspaceOf(p, c).envFrom = [{ secretRef: { name: 'db' } }]; } },
  { name: 'seccomp Unconfined', expect: ['seccomp'], apply: (p, c) => { workspaceOf(p, c).securityContext.seccompProfile = { type: 'Unconfined' }; } },
  { name: 'seccomp unset everywhere', expect: ['seccomp'], apply: (p, c) => {
    delete workspaceOf(p, c).securityContext.seccompProfile;
    if (p.spec.securityContext) delete p.spec.securityContext.seccompProfile;
  } },
  { name: 'pod-level seccomp Unconfined inherited', expect: ['seccomp'], apply: (p, c) => {
    delete workspaceOf(p, c).securityContext.seccompProfile;
    p.spec.securityContext = { ...p.spec.securityContext, seccompProfile: { type: 'Unconfined' } };
  } },
  { name: 'AppArmor Unconfined', expect: ['apparmor'], apply: (p, c) => { workspaceOf(p, c).securityContext.appArmorProfile = { type: 'Unconfined' }; } },
  { name: 'a hostPort', expect: ['host-port'], apply: (p, c) => { workspaceOf(p, c).ports.push({ containerPort: 22, hostPort: 2222, protocol: 'TCP' }); } },
  { name: 'a swapped sidecar image', expect: ['sidecar-image'], apply: (p) => { sidecarOf(p).image = 'evil.example/credential-proxy:0.1.0'; } },
  { name: 'the proxy env removed', expect: ['proxy-env'], apply: (p, c) => { for (const n of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) removeEnv(workspaceOf(p, c), n); } },
  { name: 'HTTPS_PROXY overridden by a later entry', expect: ['proxy-env'], apply: (p, c) => addEnv(workspaceOf(p, c), { name: 'HTTPS_PROXY', value: '' }) },
  { name: 'NO_PROXY widened to everything', expect: ['proxy-env'], apply: (p, c) => { workspaceOf(p, c).env.find((e: Json) => e.name === 'NO_PROXY').value = '*'; } },
  { name: 'the agent\'s per-pod token check removed', expect: ['agent-auth'], apply: (p, c) => removeEnv(workspaceOf(p, c), 'AGENT_TOKEN_PUBLIC_KEYS_FILE') },
  { name: 'the agent told another Pod\'s UID', expect: ['agent-auth'], apply: (p, c) => {
    removeEnv(workspaceOf(p, c), 'AGENT_POD_UID');
    addEnv(workspaceOf(p, c), { name: 'AGENT_POD_UID', value: '7d1e4b2a-1c3f-4e5d-8a9b-0c1d2e3f4a5b' });
  } },
  { name: 'no limits', expect: ['limits'], apply: (p, c) => { delete workspaceOf(p, c).resources.limits; } },
  { name: 'the sidecar without a memory limit', expect: ['limits'], apply: (p) => { delete sidecarOf(p).resources.limits.memory; } },
  { name: 'no activeDeadlineSeconds', expect: ['deadline'], apply: (p) => { delete p.spec.activeDeadlineSeconds; } },
  { name: 'activeDeadlineSeconds above the maximum', expect: ['deadline'], apply: (p, c) => { p.spec.activeDeadlineSeconds = c.activeDeadlineSeconds.max + 1; } },
  { name: 'the sidecar\'s ALLOWED_DOMAINS changed', expect: ['allowed-domains'], apply: (p, c) => {
    const env = sidecarOf(p).env as Json[];
    const e = env.find((x) => x.name === 'ALLOWED_DOMAINS');
    // Widened where Pods may not add domains; a configured domain dropped where they may.
    if (c.allowedDomains.allowAnnotation) e!.value = e!.value.split(',').slice(1).join(',');
    else if (e) e.value = `${e.value ? `${e.value},` : ''}evil.example`;
    else env.push({ name: 'ALLOWED_DOMAINS', value: 'evil.example' });
  } },
  { name: 'runtimeClassName removed', expect: ['runtime-class'], apply: (p) => { delete p.spec.runtimeClassName; } },
  { name: 'runtimeClassName kata', expect: ['runtime-class'], apply: (p) => { p.spec.runtimeClassName = 'kata'; } },
  { name: 'sidecar removed', expect: ['sidecar'], apply: (p) => { p.spec.initContainers.shift(); } },
  { name: 'another init container before the sidecar', expect: ['sidecar'], apply: (p, c) => {
    const setup = structuredClone(workspaceOf(p, c));
    setup.name = 'setup';
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) delete setup[probe];
    delete setup.ports;
    p.spec.initContainers.unshift(setup);
  } },
  { name: 'sidecar restartPolicy Never', expect: ['sidecar'], apply: (p) => { sidecarOf(p).restartPolicy = 'Never'; } },
  { name: 'a second container named credential-proxy', expect: ['sidecar'], apply: (p) => {
    const fake = structuredClone(p.spec.containers[0]);
    fake.name = CONTAINER_PROXY;
    p.spec.containers.push(fake);
  } },
  { name: 'no container named as the workspace among several', expect: ['no-workspace-container'], apply: (p, c) => {
    const ws = workspaceOf(p, c);
    ws.name = 'main';
    if (p.spec.containers.length === 1) p.spec.containers.push({ ...structuredClone(ws), name: 'helper' });
  } },
  { name: 'workspace runAsNonRoot false', expect: ['run-as-root'], apply: (p, c) => { workspaceOf(p, c).securityContext.runAsNonRoot = false; } },
  { name: 'workspace runAsUser 0', expect: ['run-as-root'], apply: (p, c) => { workspaceOf(p, c).securityContext.runAsUser = 0; } },
  { name: 'workspace runAsGroup 0', expect: ['run-as-root'], apply: (p, c) => { workspaceOf(p, c).securityContext.runAsGroup = 0; } },
  { name: 'fsGroup 0', expect: ['run-as-root'], apply: (p) => { p.spec.securityContext = { ...p.spec.securityContext, fsGroup: 0 }; } },
  { name: 'pod-level runAsUser 0 inherited by every container', expect: ['run-as-root'], apply: (p) => {
    for (const c of [...p.spec.initContainers, ...p.spec.containers]) delete c.securityContext.runAsUser;
    p.spec.securityContext = { ...p.spec.securityContext, runAsUser: 0 };
  } },
  { name: 'sidecar runAsUser 0', expect: ['run-as-root'], apply: (p) => { sidecarOf(p).securityContext.runAsUser = 0; } },
  { name: 'workspace writable root', expect: ['writable-root'], apply: (p, c) => { workspaceOf(p, c).securityContext.readOnlyRootFilesystem = false; } },
  { name: 'workspace allowPrivilegeEscalation unset', expect: ['privilege-escalation'], apply: (p, c) => { delete workspaceOf(p, c).securityContext.allowPrivilegeEscalation; } },
  { name: 'workspace adds NET_ADMIN', expect: ['capability'], apply: (p, c) => addCap(workspaceOf(p, c), 'NET_ADMIN') },
  { name: 'workspace adds cap_sys_admin (any case, CAP_ prefix)', expect: ['capability'], apply: (p, c) => addCap(workspaceOf(p, c), 'cap_sys_admin') },
  { name: 'sidecar adds NET_RAW', expect: ['capability'], apply: (p) => addCap(sidecarOf(p), 'NET_RAW') },
  { name: 'workspace keeps its capabilities (no drop ALL)', expect: ['capability'], apply: (p, c) => { workspaceOf(p, c).securityContext.capabilities.drop = []; } },
  { name: 'procMount Unmasked', expect: ['proc-mount'], apply: (p, c) => { workspaceOf(p, c).securityContext.procMount = 'Unmasked'; } },
  { name: 'hostNetwork', expect: ['host-namespace'], apply: (p) => { p.spec.hostNetwork = true; } },
  { name: 'hostPID', expect: ['host-namespace'], apply: (p) => { p.spec.hostPID = true; } },
  { name: 'hostIPC', expect: ['host-namespace'], apply: (p) => { p.spec.hostIPC = true; } },
  { name: 'shareProcessNamespace', expect: ['share-process-namespace'], apply: (p) => { p.spec.shareProcessNamespace = true; } },
  { name: 'hostPath volume', expect: ['host-path'], apply: (p) => { p.spec.volumes.push({ name: 'node-root', hostPath: { path: '/' } }); } },
  { name: 'service account token automounted', expect: ['service-account-token'], apply: (p) => { p.spec.automountServiceAccountToken = true; } },
  { name: 'automountServiceAccountToken unset', expect: ['service-account-token'], apply: (p) => { delete p.spec.automountServiceAccountToken; } },
  { name: 'the shared CA dir mounted writable into the workspace', expect: ['reserved-volume'], apply: (p, c) => {
    for (const m of workspaceOf(p, c).volumeMounts) if (m.name === 'workspace-sandbox-shared') delete m.readOnly;
  } },
  // pods/ephemeralcontainers (`kubectl debug`): the new container is held to the same rules.
  { name: 'an ephemeral container running as root', expect: ['run-as-root'], apply: (p, c) => ephemeral(p, c, (e) => { e.securityContext.runAsUser = 0; }) },
  { name: 'an ephemeral container without a securityContext', expect: ['run-as-root', 'writable-root', 'privilege-escalation', 'capability', 'seccomp'], apply: (p, c) => ephemeral(p, c, (e) => { delete e.securityContext; }) },
  { name: 'an ephemeral container with AWS keys', expect: ['credential-env'], apply: (p, c) => ephemeral(p, c, (e) => addEnv(e, { name: 'AWS_SECRET_ACCESS_KEY', value: 'secret' })) },
  { name: 'an ephemeral container mounting the sidecar\'s state (its CA key)', expect: ['reserved-volume'], apply: (p, c) => ephemeral(p, c, (e) => {
    e.volumeMounts = [{ name: VOLUME_SIDECAR_STATE, mountPath: '/t' }];
  }) },
];

/** A golden whose config carries no rules token or runs the sidecar without one: some tampers do not apply. */
function applies(tamper: Tamper, pod: Json, config: InjectionConfig): boolean {
  if (tamper.expect.includes('agent-auth')) return config.podTokens !== null;
  if (tamper.name.includes('ALLOWED_DOMAINS') && config.allowedDomains.allowAnnotation) return config.allowedDomains.domains.length > 0;
  return true;
}

t.test('the guard', { skip }, async (t) => {
  const all = injectedPods();
  t.ok(all.length >= 15, `${all.length} golden injected Pods`);

  t.test('every overlay\'s guard is the one built from its injection config', async (t) => {
    for (const overlay of OVERLAYS) {
      const objs = renderOverlay(overlay);
      const config = parseInjectionConfig(JSON.parse(JSON.stringify(
        parseAllDocuments(find<Json>(objs, 'ConfigMap', 'workspace-sandbox-injection').data['config.yaml'])[0]!.toJS())));
      const built = buildGuard(config);
      const policy = find<Json>(objs, 'ValidatingAdmissionPolicy', GUARD_NAME);
      const binding = find<Json>(objs, 'ValidatingAdmissionPolicyBinding', GUARD_NAME);
      t.same(policy.spec, (built.policy as Json).spec, `${overlay}: rebuild with \`workspace-sandbox guard --config manifests/overlays/${overlay}/injection-config.yaml\``);
      t.same(binding.spec, (built.binding as Json).spec, overlay);
    }
  });

  t.test('every rule of the table is in the policy, in order', async (t) => {
    const { policy } = buildGuard(all[0]!.config) as { policy: Json };
    t.same(policy.spec.validations.map((v: Json) => /\(rule ([a-z-]+)\)$/.exec(v.message)?.[1]), Object.keys(GUARD_RULES));
  });

  t.test('admits every golden injected Pod', async (t) => {
    for (const { name, pod, policy } of all) t.same(evaluateGuard(policy, pod).failures, [], name);
  });

  t.test('capability names in any form the webhook accepts are admitted', async (t) => {
    const { pod, config, policy } = all[0]!;
    const p = structuredClone(pod);
    workspaceOf(p, config).securityContext.capabilities.add = config.workspace.capabilities.map((c, i) => (i % 2 === 0 ? `cap_${c.toLowerCase()}` : c));
    t.same(evaluateGuard(policy, p).failures, []);
  });

  t.test('denies an uninjected Pod, by the rules and not by a CEL error', async (t) => {
    const { policy } = all[0]!;
    const plain = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'plain', namespace: 'sandboxes' },
      spec: { containers: [{ name: 'workspace', image: 'python:3.12-slim' }] } };
    const r = evaluateGuard(policy, plain);
    t.notOk(r.allowed);
    t.same(r.failures.filter((f) => f.error !== undefined), []);
    const rules = r.failures.map((f) => /\(rule ([a-z-]+)\)$/.exec(f.message)?.[1]);
    for (const id of ['runtime-class', 'sidecar', 'run-as-root', 'writable-root', 'seccomp', 'proxy-env', 'limits', 'deadline', 'service-account-token']) {
      t.ok(rules.includes(id), `fails ${id}`);
    }
  });

  t.test('denies the inputs of the webhook\'s denied cases that carry no injection', async (t) => {
    const { policy } = all[0]!;
    for (const file of goldenFiles('.yaml.denied')) {
      const input = file.slice(0, -'.denied'.length);
      for (const pod of pods(input)) {
        if (pod.metadata?.annotations?.[ANNOTATION_STATUS] !== undefined) continue;
        t.notOk(evaluateGuard(policy, pod).allowed, file.slice(GOLDEN_DIR.length + 1));
      }
    }
  });

  for (const tamper of TAMPERS) {
    t.test(`refuses ${tamper.name}`, async (t) => {
      let checked = 0;
      for (const { name, pod, config, policy } of all) {
        if (!applies(tamper, pod, config)) continue;
        const tampered = structuredClone(pod);
        tamper.apply(tampered, config);
        const r = evaluateGuard(policy, tampered);
        t.same(r.failures.filter((f) => f.error !== undefined), [], `${name}: no CEL error`);
        const params = guardParams(config);
        t.same(r.failures.map((f) => f.message).sort(), tamper.expect.map((id) => guardMessage(id, params)).sort(), `${name}: refused by ${tamper.expect.join(', ')}`);
        for (const f of r.failures) t.match(f.message, /spec\.|securityContext|env|volumeMounts|ports/, 'the message names the field');

        // Given to the webhook, the same Pod is refused or repaired: whatever the webhook lets
        // through, the guard admits. A Pod carries the status annotation, so CREATE re-renders it;
        // an ephemeral container arrives by UPDATE of the pods/ephemeralcontainers subresource.
        const again = tampered.spec.ephemeralContainers ? injectUpdate(tampered, pod, config) : inject(tampered, config);
        if (!again.denied) t.same(evaluateGuard(policy, again.pod).failures, [], `${name}: inject repaired it into a Pod the guard admits`);
        checked++;
      }
      t.ok(checked > 0, 'applied to at least one golden Pod');
    });
  }

  t.test('an UPDATE that leaves the spec alone is not checked again; one that changes it is', async (t) => {
    const { pod, config, policy } = all[0]!;
    const oldObject = structuredClone(pod);
    // Admitted under an older config: another sidecar image.
    sidecarOf(oldObject).image = 'workspace-sandbox/credential-proxy:0.0.9';
    const relabelled = structuredClone(oldObject);
    relabelled.metadata.labels = { ...relabelled.metadata.labels, claimed: 'true' };
    t.same(evaluateGuard(policy, relabelled, { operation: 'UPDATE', oldObject }).matched, false, 'a label change passes');
    const swapped = structuredClone(pod);
    sidecarOf(swapped).image = 'evil.example/proxy:1';
    const r = evaluateGuard(policy, swapped, { operation: 'UPDATE', oldObject: pod });
    t.same(r.failures.map((f) => f.message), [guardMessage('sidecar-image', guardParams(config))], 'an image swap by UPDATE is refused');
    const debugged = structuredClone(pod);
    ephemeral(debugged, config, (e) => { e.securityContext.allowPrivilegeEscalation = true; });
    const d = evaluateGuard(policy, debugged, { operation: 'UPDATE', oldObject: pod, subResource: 'ephemeralcontainers' });
    t.same(d.failures.map((f) => f.message), [guardMessage('privilege-escalation', guardParams(config))], 'kubectl debug with escalation is refused');
  });

  t.test('the local guard admits runc and refuses gvisor (kind has no gVisor)', async (t) => {
    const local = find<Policy & K8sObject>(renderOverlay('local'), 'ValidatingAdmissionPolicy', GUARD_NAME);
    const config = parseInjectionConfig(JSON.parse(JSON.stringify(parseAllDocuments(
      find<Json>(renderOverlay('local'), 'ConfigMap', 'workspace-sandbox-injection').data['config.yaml'])[0]!.toJS())));
    const input = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'w', namespace: 'sandboxes' }, spec: { containers: [{ name: 'workspace', image: 'python:3.12-slim' }] } };
    const injected = inject(input, config);
    if (injected.denied) throw new Error(injected.message);
    t.equal((injected.pod as Json).spec.runtimeClassName, 'runc');
    t.same(evaluateGuard(local, injected.pod).failures, []);
    const gvisor = structuredClone(injected.pod) as Json;
    gvisor.spec.runtimeClassName = 'gvisor';
    t.same(evaluateGuard(local, gvisor).failures.map((f) => f.message), [guardMessage('runtime-class', guardParams(config))]);
  });

  t.test('the policy applies exactly where the webhook injects', async (t) => {
    const objects = renderOverlay('prod');
    const policy = find<Json>(objects, 'ValidatingAdmissionPolicy', GUARD_NAME);
    const binding = find<Json>(objects, 'ValidatingAdmissionPolicyBinding', GUARD_NAME);
    t.same(binding.spec.validationActions, ['Deny']);
    t.equal(binding.spec.policyName, policy.metadata.name);
    t.equal(policy.spec.failurePolicy, 'Fail');
    const selector = { [LABEL_INJECTION]: LABEL_INJECTION_ENABLED };
    t.same(binding.spec.matchResources.namespaceSelector.matchLabels, selector);
    t.same(policy.spec.matchConstraints.namespaceSelector.matchLabels, selector);
    t.same(policy.spec.matchConstraints.resourceRules, [{
      operations: ['CREATE', 'UPDATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods', 'pods/ephemeralcontainers'], scope: 'Namespaced' }]);
    const mwc = find<Json>(objects, 'MutatingWebhookConfiguration', 'workspace-sandbox');
    t.same(mwc.webhooks[0].rules.map((r: Json) => [r.operations, r.resources]), policy.spec.matchConstraints.resourceRules.map((r: Json) => [r.operations, r.resources]),
      'the webhook sees the same operations and subresources');
  });
});
