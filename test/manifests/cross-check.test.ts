// The manifests agree with the code: names, ports, paths, labels and the injection config come
// from lib/constants.ts and webhook/config.ts, and the objects that depend on each other agree.
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import {
  ANNOTATION_RUNTIME, CONTAINER_PROXY, GATEWAY_AUDIENCE, GATEWAY_NAMESPACE, GATEWAY_SERVICE, LABEL_INJECTION, LABEL_INJECTION_ENABLED, NAMESPACES, NODE_LABEL_GVISOR, PORTS,
  POD_IDENTITY_AGENT, PRIORITY_CLASS_OVERPROVISIONING, PRIORITY_CLASS_WORKSPACE, POD_TOKEN_PUBLIC_KEYS_CONFIGMAP, POD_TOKEN_PUBLIC_KEYS_KEY, SERVICE_ACCOUNT_WORKSPACE, RUNTIME_CLASS_GVISOR,
  RUNTIME_CLASS_RUNC, SERVICE_ACCOUNT_BACKEND, WEBHOOK_PATHS, WEBHOOK_SERVICE,
} from '../../lib/constants.ts';
import { VERSION } from '../../lib/version.ts';
import { loadWebhookConfig, parseInjectionConfig, type InjectionConfig } from '../../webhook/config.ts';
import { buildGuard } from '../../webhook/guard.ts';
import { inject } from '../../webhook/inject.ts';
import { parseQuantity } from '../../lib/quantity.ts';
import { evaluateGuard, type Policy } from './guard.ts';
import { OVERLAYS, REPO_ROOT, find, findAll, idOf, kubectlSkipReason, renderOverlay, type K8sObject, type Overlay } from './render.ts';

const skip = kubectlSkipReason();
if (skip !== undefined) t.comment(`SKIPPED: ${skip}`);

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const webhookDeployment = (objs: K8sObject[]) => find<Json>(objs, 'Deployment', WEBHOOK_SERVICE, NAMESPACES.system);
const webhookContainer = (objs: K8sObject[]) => webhookDeployment(objs).spec.template.spec.containers[0] as Json;
const envOf = (c: Json): Record<string, string> => Object.fromEntries((c.env ?? []).map((e: Json) => [e.name, e.value]));
const injectionConfigText = (objs: K8sObject[]) => find<Json>(objs, 'ConfigMap', 'workspace-sandbox-injection', NAMESPACES.system).data['config.yaml'] as string;
const injectionConfig = (objs: K8sObject[]): InjectionConfig => parseInjectionConfig(parseYaml(injectionConfigText(objs)), 'rendered ConfigMap');
const cpu = (q: unknown) => parseQuantity(q)!;

/** A label selector (matchLabels + matchExpressions) against a label set. */
function selects(selector: Json, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const ok = e.operator === 'In' ? has && e.values.includes(labels[e.key])
      : e.operator === 'NotIn' ? !has || !e.values.includes(labels[e.key])
        : e.operator === 'Exists' ? has : !has;
    if (!ok) return false;
  }
  return true;
}

/** The pod templates of workloads, with the object they belong to. */
function podTemplates(objs: K8sObject[]): { owner: string; spec: Json; namespace: string }[] {
  return objs.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet')
    .map((o) => ({ owner: idOf(o), spec: (o as Json).spec.template.spec, namespace: o.metadata.namespace! }));
}

for (const overlay of OVERLAYS) {
  t.test(`${overlay}`, { skip }, async (t) => {
    const objs = renderOverlay(overlay);

    t.test('webhook Service, Deployment and MutatingWebhookConfiguration agree with the webhook server', async (t) => {
      const svc = find<Json>(objs, 'Service', WEBHOOK_SERVICE, NAMESPACES.system);
      t.same(svc.spec.ports, [{ name: 'https', protocol: 'TCP', port: 443, targetPort: PORTS.webhook }]);
      const c = webhookContainer(objs);
      const ports = Object.fromEntries(c.ports.map((p: Json) => [p.name, p.containerPort]));
      t.same(ports, { https: PORTS.webhook, metrics: PORTS.webhookMetrics });
      const env = envOf(c);
      t.equal(env.WEBHOOK_PORT, String(PORTS.webhook));
      t.equal(env.METRICS_PORT, String(PORTS.webhookMetrics));
      t.equal(c.startupProbe.httpGet.path, WEBHOOK_PATHS.healthz);
      t.equal(c.livenessProbe.httpGet.path, WEBHOOK_PATHS.healthz);
      t.equal(c.readinessProbe.httpGet.path, WEBHOOK_PATHS.readyz);
      for (const p of [c.startupProbe, c.livenessProbe, c.readinessProbe]) t.same([p.httpGet.port, p.httpGet.scheme], [PORTS.webhook, 'HTTPS']);
      t.ok(c.lifecycle.preStop.sleep.seconds > 0, 'a preStop pause lets the Service drain');
      t.equal(webhookDeployment(objs).spec.template.spec.priorityClassName, 'system-cluster-critical');
      const np = find<Json>(objs, 'NetworkPolicy', WEBHOOK_SERVICE, NAMESPACES.system);
      t.ok(selects(np.spec.podSelector, webhookDeployment(objs).spec.template.metadata.labels), 'the NetworkPolicy selects the webhook Pods');
      t.same(np.spec.ingress.flatMap((r: Json) => r.ports.map((p: Json) => p.port)).sort(), [PORTS.webhook, PORTS.webhookMetrics].sort());
      t.same([np.spec.policyTypes, np.spec.egress], [['Ingress', 'Egress'], []], 'no egress: the webhook opens no connection');
      t.ok(webhookDeployment(objs).spec.template.spec.topologySpreadConstraints.some((s: Json) => s.topologyKey === 'topology.kubernetes.io/zone'), 'spread across zones');
      t.ok(webhookDeployment(objs).spec.template.spec.terminationGracePeriodSeconds > c.lifecycle.preStop.sleep.seconds);

      const metrics = find<Json>(objs, 'Service', `${WEBHOOK_SERVICE}-metrics`, NAMESPACES.system);
      t.same(metrics.spec.ports, [{ name: 'metrics', protocol: 'TCP', port: PORTS.webhookMetrics, targetPort: PORTS.webhookMetrics }]);
      t.equal(metrics.metadata.annotations['prometheus.io/path'], WEBHOOK_PATHS.metrics);
      t.equal(metrics.metadata.annotations['prometheus.io/port'], String(PORTS.webhookMetrics));
      const podLabels = webhookDeployment(objs).spec.template.metadata.labels;
      t.ok(selects({ matchLabels: svc.spec.selector }, podLabels) && selects({ matchLabels: metrics.spec.selector }, podLabels));

      const mwc = find<Json>(objs, 'MutatingWebhookConfiguration', 'workspace-sandbox');
      t.equal(mwc.webhooks.length, 1);
      const wh = mwc.webhooks[0];
      t.same(wh.clientConfig, { service: { name: WEBHOOK_SERVICE, namespace: NAMESPACES.system, path: WEBHOOK_PATHS.mutate, port: 443 } });
      t.same(wh.rules, [{ operations: ['CREATE', 'UPDATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods', 'pods/ephemeralcontainers'], scope: 'Namespaced' }]);
      t.same([wh.failurePolicy, wh.sideEffects, wh.admissionReviewVersions, wh.timeoutSeconds, wh.reinvocationPolicy],
        ['Fail', 'None', ['v1'], 5, 'IfNeeded']);
    });

    t.test('the webhook starts with the rendered environment and ConfigMap', async (t) => {
      const c = webhookContainer(objs);
      const env = envOf(c);
      const spec = webhookDeployment(objs).spec.template.spec;
      const mountOf = (volume: string) => c.volumeMounts.find((m: Json) => m.name === volume).mountPath;
      const volume = (name: string) => spec.volumes.find((v: Json) => v.name === name);
      // The file paths point into the mounts of the right volumes, at the keys those volumes hold.
      t.equal(dirname(env.WEBHOOK_CONFIG_FILE!), mountOf('config'));
      t.equal(volume('config').configMap.name, 'workspace-sandbox-injection');
      t.ok(Object.hasOwn(find<Json>(objs, 'ConfigMap', 'workspace-sandbox-injection', NAMESPACES.system).data, basename(env.WEBHOOK_CONFIG_FILE!)));
      t.equal(dirname(env.TLS_CERT_FILE!), mountOf('tls'));
      t.equal(dirname(env.TLS_KEY_FILE!), mountOf('tls'));
      t.same([basename(env.TLS_CERT_FILE!), basename(env.TLS_KEY_FILE!)], ['tls.crt', 'tls.key'], 'the keys of a cert-manager Secret');
      const serving = find<Json>(objs, 'Certificate', 'workspace-sandbox-webhook-serving', NAMESPACES.system);
      t.equal(volume('tls').secret.secretName, serving.spec.secretName);
      // webhook/config.ts's own loader accepts the environment and the rendered config file.
      const dir = mkdtempSync(join(tmpdir(), 'ws-manifests-'));
      const file = join(dir, 'config.yaml');
      writeFileSync(file, injectionConfigText(objs));
      const loaded = loadWebhookConfig({ ...env, WEBHOOK_CONFIG_FILE: file });
      t.equal(loaded.env.WEBHOOK_PORT, PORTS.webhook);
      t.equal(loaded.injection.workspaceContainerName, 'workspace');
    });

    t.test('the injection config agrees with the cluster objects it names', async (t) => {
      const config = injectionConfig(objs);
      const namespaces = findAll<Json>(objs, 'Namespace');
      for (const ns of config.namespaces) {
        const o = namespaces.find((n) => n.metadata.name === ns);
        t.equal(o?.metadata.labels[LABEL_INJECTION], LABEL_INJECTION_ENABLED, `served namespace ${ns} is injection-enabled`);
      }
      t.same(config.namespaces, [NAMESPACES.sandboxes]);
      t.equal(config.priorityClassName, PRIORITY_CLASS_WORKSPACE);
      find(objs, 'PriorityClass', config.priorityClassName!);
      const runtimes = [config.runtime.runtimeClassName, ...config.runtime.allowedFallbacks].filter((x): x is string => x !== null);
      for (const rc of runtimes) find(objs, 'RuntimeClass', rc);
      // Production is gVisor only; staging says it keeps the runc fallback; kind has no gVisor.
      t.same(runtimes, { local: [RUNTIME_CLASS_RUNC], staging: [RUNTIME_CLASS_GVISOR, RUNTIME_CLASS_RUNC], prod: [RUNTIME_CLASS_GVISOR] }[overlay]);
      if (overlay === 'prod') t.notOk(objs.some((o) => o.kind === 'RuntimeClass' && o.metadata.name === RUNTIME_CLASS_RUNC), 'no runc RuntimeClass in prod');
      t.equal(config.sidecar.rulesTokenSecret, null, '/rules takes per-pod tokens');
      // The ServiceAccount of the Pod Identity association (infra/), its token never mounted.
      const sa = find<Json>(objs, 'ServiceAccount', SERVICE_ACCOUNT_WORKSPACE, NAMESPACES.sandboxes);
      t.equal(sa.automountServiceAccountToken, false);
      t.equal(config.workspaceServiceAccount, overlay === 'local' ? null : SERVICE_ACCOUNT_WORKSPACE, 'EKS overlays admit workspace Pods only as that ServiceAccount');
      t.same(config.podTokens, { publicKeysConfigMap: POD_TOKEN_PUBLIC_KEYS_CONFIGMAP, key: POD_TOKEN_PUBLIC_KEYS_KEY }, 'the agent and /rules require per-pod tokens');
      t.notOk(/:latest$|^[^:]+$/.test(config.sidecar.image), 'the sidecar image has a tag, not latest');

      // The guard is built from this config (guard.test.ts checks the whole policy).
      const policy = find<Json>(objs, 'ValidatingAdmissionPolicy', 'workspace-sandbox-guard');
      t.same(policy.spec, (buildGuard(config).policy as Json).spec);

      // Limits the webhook may clamp up to fit the LimitRange ceiling.
      const limitRange = find<Json>(objs, 'LimitRange', 'workspaces', NAMESPACES.sandboxes).spec.limits.find((l: Json) => l.type === 'Container');
      for (const r of ['cpu', 'memory'] as const) {
        t.ok(cpu(limitRange.max[r]) >= cpu(config.workspace.maxResources[r]), `LimitRange max ${r} >= config maxResources`);
      }
      t.ok(cpu(limitRange.max.cpu) >= cpu(config.sidecar.resources.limits.cpu));
    });

    t.test('the guard admits what this overlay\'s webhook config injects', async (t) => {
      const policy = find<Policy & K8sObject>(objs, 'ValidatingAdmissionPolicy', 'workspace-sandbox-guard');
      const input = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'w', namespace: NAMESPACES.sandboxes }, spec: { serviceAccountName: SERVICE_ACCOUNT_WORKSPACE, containers: [{ name: 'workspace', image: 'python:3.12-slim' }] } };
      const injected = inject(input, injectionConfig(objs));
      if (injected.denied) throw new Error(injected.message);
      t.same(evaluateGuard(policy, injected.pod).failures, []);
    });

    t.test('namespaces and Pod Security Admission levels', async (t) => {
      const ns = (name: string) => find<Json>(objs, 'Namespace', name).metadata.labels as Record<string, string>;
      t.equal(ns(NAMESPACES.sandboxes)[LABEL_INJECTION], LABEL_INJECTION_ENABLED);
      t.same([ns(NAMESPACES.sandboxes)['pod-security.kubernetes.io/enforce'], ns(NAMESPACES.sandboxes)['pod-security.kubernetes.io/warn'],
        ns(NAMESPACES.sandboxes)['pod-security.kubernetes.io/audit']], ['restricted', 'restricted', 'restricted']);
      for (const n of [NAMESPACES.system, NAMESPACES.capacity]) {
        t.equal(ns(n)['pod-security.kubernetes.io/enforce'], 'restricted', n);
        t.equal(ns(n)[LABEL_INJECTION], undefined, `${n} is not injected`);
      }
      // The webhook never selects its own namespace, even if someone labels it.
      const wh = find<Json>(objs, 'MutatingWebhookConfiguration', 'workspace-sandbox').webhooks[0];
      const labelled = (name: string) => ({ 'kubernetes.io/metadata.name': name, [LABEL_INJECTION]: LABEL_INJECTION_ENABLED });
      t.notOk(selects(wh.namespaceSelector, labelled(NAMESPACES.system)));
      t.notOk(selects(wh.namespaceSelector, labelled('kube-system')));
      t.ok(selects(wh.namespaceSelector, { ...ns(NAMESPACES.sandboxes), 'kubernetes.io/metadata.name': NAMESPACES.sandboxes }));
      for (const n of [NAMESPACES.backend, NAMESPACES.capacity, NAMESPACES.system]) {
        t.notOk(selects(wh.namespaceSelector, { ...ns(n), 'kubernetes.io/metadata.name': n }), `${n} is not injected`);
      }
    });

    t.test('cert-manager chain and CA injection', async (t) => {
      const mwc = find<Json>(objs, 'MutatingWebhookConfiguration', 'workspace-sandbox');
      const serving = find<Json>(objs, 'Certificate', 'workspace-sandbox-webhook-serving', NAMESPACES.system);
      t.equal(mwc.metadata.annotations['cert-manager.io/inject-ca-from'], `${NAMESPACES.system}/${serving.metadata.name}`);
      t.same(serving.spec.dnsNames, [WEBHOOK_SERVICE, `${WEBHOOK_SERVICE}.${NAMESPACES.system}`,
        `${WEBHOOK_SERVICE}.${NAMESPACES.system}.svc`, `${WEBHOOK_SERVICE}.${NAMESPACES.system}.svc.cluster.local`]);
      t.same([serving.spec.duration, serving.spec.renewBefore], ['2160h', '720h'], '90 days, renewed 30 days before');
      const caIssuer = find<Json>(objs, 'Issuer', serving.spec.issuerRef.name, NAMESPACES.system);
      const ca = find<Json>(objs, 'Certificate', 'workspace-sandbox-ca', NAMESPACES.system);
      t.equal(caIssuer.spec.ca.secretName, ca.spec.secretName);
      t.equal(ca.spec.isCA, true);
      const bootstrap = find<Json>(objs, 'Issuer', ca.spec.issuerRef.name, NAMESPACES.system);
      t.same(bootstrap.spec, { selfSigned: {} });
    });

    t.test('every container has requests, limits and a restricted securityContext; no :latest', async (t) => {
      const templates = podTemplates(objs);
      t.ok(templates.length >= (overlay === 'local' ? 1 : 3));
      for (const { owner, spec } of templates) {
        t.equal(spec.automountServiceAccountToken, false, `${owner}: no API token`);
        for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
          const id = `${owner} ${c.name}`;
          for (const kind of ['requests', 'limits']) for (const r of ['cpu', 'memory']) t.ok(cpu(c.resources?.[kind]?.[r]) > 0, `${id}: ${kind}.${r}`);
          const sc = c.securityContext ?? {};
          t.ok(sc.runAsNonRoot ?? spec.securityContext?.runAsNonRoot, `${id}: runAsNonRoot`);
          t.ok((sc.runAsUser ?? spec.securityContext?.runAsUser) > 0, `${id}: numeric non-root runAsUser`);
          t.equal(sc.allowPrivilegeEscalation, false, `${id}: allowPrivilegeEscalation false`);
          t.equal(sc.readOnlyRootFilesystem, true, `${id}: read-only root`);
          t.notOk(sc.privileged, `${id}: not privileged`);
          t.same(sc.capabilities, { drop: ['ALL'] }, `${id}: drops ALL, adds nothing`);
          t.equal((sc.seccompProfile ?? spec.securityContext?.seccompProfile)?.type, 'RuntimeDefault', `${id}: seccomp`);
          t.match(c.image, /^[^:@]+(:[^:@]+|@sha256:[0-9a-f]{64}|:[^:@]+@sha256:[0-9a-f]{64})$/, `${id}: image has a tag or digest`);
          t.notOk(String(c.image).endsWith(':latest'), `${id}: not :latest`);
          t.ok(c.imagePullPolicy, `${id}: explicit imagePullPolicy`);
        }
      }
    });

    t.test('no RBAC for the webhook: its ServiceAccount holds no token and no rights', async (t) => {
      const sa = find<Json>(objs, 'ServiceAccount', WEBHOOK_SERVICE, NAMESPACES.system);
      t.equal(sa.automountServiceAccountToken, false);
      t.equal(webhookDeployment(objs).spec.template.spec.serviceAccountName, WEBHOOK_SERVICE);
      const bindings = objs.filter((o) => /^(Cluster)?RoleBinding$/.test(o.kind));
      t.same(bindings.filter((b) => (b.subjects as Json[] ?? []).some((s: Json) => s.name === WEBHOOK_SERVICE)).map(idOf), []);
    });

    t.test('the backend\'s RBAC: pods and pods/log in sandboxes only, least privilege', async (t) => {
      // The gateway's RBAC (TokenReview, pod reads) is checked in gateway.test.ts.
      const rbac = objs.filter((o) => /^(Cluster)?Role(Binding)?$/.test(o.kind) && o.metadata.name !== GATEWAY_SERVICE);
      t.same(rbac.map(idOf).sort(), [`Role ${NAMESPACES.sandboxes}/${SERVICE_ACCOUNT_BACKEND}`, `RoleBinding ${NAMESPACES.sandboxes}/${SERVICE_ACCOUNT_BACKEND}`].sort(), 'one Role and its binding, no ClusterRole');
      const role = find<Json>(objs, 'Role', SERVICE_ACCOUNT_BACKEND, NAMESPACES.sandboxes);
      t.same(role.rules, [
        { apiGroups: [''], resources: ['pods'], verbs: ['create', 'get', 'list', 'watch', 'delete', 'patch'] },
        { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
      ], 'no exec, no secrets, no wildcard');
      const binding = find<Json>(objs, 'RoleBinding', SERVICE_ACCOUNT_BACKEND, NAMESPACES.sandboxes);
      t.same(binding.subjects, [{ kind: 'ServiceAccount', name: SERVICE_ACCOUNT_BACKEND, namespace: NAMESPACES.backend }]);
      t.match(binding.roleRef, { kind: 'Role', name: SERVICE_ACCOUNT_BACKEND });
      find<Json>(objs, 'ServiceAccount', SERVICE_ACCOUNT_BACKEND, NAMESPACES.backend);
    });

    t.test('webhook availability: replicas, spread, PDB, never on spot', async (t) => {
      const d = webhookDeployment(objs);
      t.equal(d.spec.replicas, overlay === 'prod' ? 3 : 2);
      const spec = d.spec.template.spec;
      t.same(spec.topologySpreadConstraints.map((c: Json) => c.topologyKey).sort(), ['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
      const pdb = find<Json>(objs, 'PodDisruptionBudget', WEBHOOK_SERVICE, NAMESPACES.system);
      t.equal(pdb.spec.minAvailable, 1);
      t.ok(selects(pdb.spec.selector, d.spec.template.metadata.labels));
      const required = spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms;
      for (const term of required) {
        t.notOk(selects(term, { 'karpenter.sh/capacity-type': 'spot' }), 'a Karpenter spot node is excluded');
        t.notOk(selects(term, { 'eks.amazonaws.com/capacityType': 'SPOT' }), 'a managed node group spot node is excluded');
        t.ok(selects(term, { 'karpenter.sh/capacity-type': 'on-demand', 'karpenter.sh/nodepool': 'backend-ondemand' }));
      }
      t.equal(spec.securityContext.runAsNonRoot, true);
    });

    t.test('NetworkPolicies in sandboxes: the egress gateway is the only way out', async (t) => {
      const policies = findAll<Json>(objs, 'NetworkPolicy').filter((p) => p.metadata.namespace === NAMESPACES.sandboxes);
      t.ok(policies.every((p) => Object.keys(p.spec.podSelector).length === 0));
      const np = (name: string) => policies.find((p) => p.metadata.name === name)!.spec;
      t.same(np('default-deny'), { podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
      t.same(np('allow-egress-gateway').egress, [{
        to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': GATEWAY_NAMESPACE } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': GATEWAY_SERVICE } } }],
        ports: [{ protocol: 'TCP', port: PORTS.gateway }],
      }], 'the gateway pods on the CONNECT port, nothing else');
      const backend = np('allow-backend-ingress');
      t.same(backend.ingress, [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': NAMESPACES.backend } } }],
        ports: [{ protocol: 'TCP', port: PORTS.agent }, { protocol: 'TCP', port: PORTS.proxyAdmin }] }]);
      if (overlay === 'local') {
        t.equal(policies.length, 3, 'nothing else opens the namespace');
      } else {
        t.same(np('allow-pod-identity-agent').egress, [{ to: [{ ipBlock: { cidr: `${POD_IDENTITY_AGENT.ipv4}/32` } }, { ipBlock: { cidr: `${POD_IDENTITY_AGENT.ipv6}/128` } }],
          ports: [{ protocol: 'TCP', port: POD_IDENTITY_AGENT.port }] }], 'the Pod Identity agent, and nothing else of the link-local range');
        t.equal(policies.length, 4, 'nothing else opens the namespace');
      }
      const text = JSON.stringify(policies);
      t.notOk(text.includes('0.0.0.0/0') || text.includes('::/0'), 'no public range');
      t.notOk(/"port":53\b/.test(text), 'no DNS: the sidecar reaches the gateway by address');
      t.notOk(text.includes('UDP'), 'no UDP at all');
      t.notOk(text.includes(String(PORTS.proxy)), 'the proxy port (loopback only) is never opened');
      const gateway = find<Json>(objs, 'Service', GATEWAY_SERVICE, GATEWAY_NAMESPACE);
      t.equal(injectionConfig(objs).gateway?.url, `http://${gateway.spec.clusterIP}:${PORTS.gateway}`, 'sidecars are pointed at the gateway Service');
      t.equal(injectionConfig(objs).gateway?.audience, GATEWAY_AUDIENCE);
    });

    t.test('priority classes', async (t) => {
      const ws = find<Json>(objs, 'PriorityClass', PRIORITY_CLASS_WORKSPACE);
      const op = find<Json>(objs, 'PriorityClass', PRIORITY_CLASS_OVERPROVISIONING);
      t.ok(ws.value > 0);
      t.same([op.value, op.preemptionPolicy, op.globalDefault], [-1, 'Never', false]);
      t.equal(ws.globalDefault, false);
    });

    if (overlay !== 'local') eksChecks(t, overlay, objs);
  });
}

function eksChecks(t: Test, overlay: Overlay, objs: K8sObject[]): void {
  t.test('RuntimeClasses, the gVisor node pool and the pods that land there agree', async (t) => {
    const gvisor = find<Json>(objs, 'RuntimeClass', RUNTIME_CLASS_GVISOR);
    t.equal(gvisor.handler, 'runsc');
    t.ok(cpu(gvisor.overhead.podFixed.cpu) > 0 && cpu(gvisor.overhead.podFixed.memory) > 0);
    const scheduling = { nodeSelector: { [NODE_LABEL_GVISOR]: 'true' }, tolerations: [{ key: NODE_LABEL_GVISOR, operator: 'Equal', value: 'true', effect: 'NoSchedule' }] };
    t.same(gvisor.scheduling, scheduling);
    if (overlay !== 'prod') {
      const runc = find<Json>(objs, 'RuntimeClass', RUNTIME_CLASS_RUNC);
      t.same([runc.handler, runc.scheduling], ['runc', scheduling], `the runc fallback (annotation ${ANNOTATION_RUNTIME}) stays on workspace nodes`);
    }
    const pool = find<Json>(objs, 'NodePool', 'workspace-spot').spec.template;
    t.equal(pool.metadata.labels[NODE_LABEL_GVISOR], 'true');
    t.same(pool.spec.taints, [{ key: NODE_LABEL_GVISOR, value: 'true', effect: 'NoSchedule' }]);
    const backend = find<Json>(objs, 'NodePool', 'backend-ondemand').spec.template;
    t.notOk(selects({ matchLabels: scheduling.nodeSelector }, backend.metadata.labels), 'gVisor pods never land on backend nodes');
    const prepull = find<Json>(objs, 'DaemonSet', 'image-prepull', NAMESPACES.capacity).spec.template.spec;
    t.same([prepull.nodeSelector, prepull.tolerations], [scheduling.nodeSelector, scheduling.tolerations], 'pre-pull runs on every gVisor node');
  });

  t.test('warm capacity: pause pods the size of a workspace, pre-pull of the injected images', async (t) => {
    const config = injectionConfig(objs);
    const pause = find<Json>(objs, 'Deployment', 'overprovisioning', NAMESPACES.capacity);
    t.equal(pause.spec.replicas, overlay === 'prod' ? 5 : 1);
    const spec = pause.spec.template.spec;
    t.same([spec.priorityClassName, spec.runtimeClassName], [PRIORITY_CLASS_OVERPROVISIONING, config.runtime.runtimeClassName]);
    const requests = spec.containers[0].resources.requests;
    for (const r of ['cpu', 'memory'] as const) {
      t.equal(cpu(requests[r]), cpu(config.workspace.resources.requests[r]) + cpu(config.sidecar.resources.requests[r]), `pause ${r} = workspace + sidecar`);
    }
    const prepull = find<Json>(objs, 'DaemonSet', 'image-prepull', NAMESPACES.capacity).spec.template.spec;
    const images = prepull.initContainers.map((c: Json) => c.image);
    t.ok(images.includes(config.sidecar.image), 'the injected sidecar image is the one pre-pulled');
    t.ok(prepull.initContainers.every((c: Json) => c.restartPolicy === undefined), 'plain init containers: pull, run, exit');
  });

  t.test('Karpenter NodePools and EC2NodeClass', async (t) => {
    const req = (pool: Json, key: string) => pool.spec.template.spec.requirements.find((r: Json) => r.key === key)?.values as string[];
    const spot = find<Json>(objs, 'NodePool', 'workspace-spot');
    const families = req(spot, 'karpenter.k8s.aws/instance-family');
    const sizes = req(spot, 'karpenter.k8s.aws/instance-size');
    t.same(families, ['m5', 'm6i', 'm7i', 'c5', 'c6i', 'c7i', 'r5', 'r6i', 'r7i']);
    t.same(sizes, ['large', 'xlarge', '2xlarge']);
    t.ok(families.length * sizes.length >= 15, `${families.length * sizes.length} instance types`);
    t.same(req(spot, 'karpenter.sh/capacity-type'), ['spot']);
    t.equal(spot.spec.template.spec.expireAfter, '336h');
    // Live workspaces are never repacked: consolidation takes empty nodes only (do-not-disrupt on every workspace Pod too).
    t.same([spot.spec.disruption.consolidationPolicy, spot.spec.disruption.consolidateAfter], ['WhenEmpty', '5m']);
    // The on-demand pool catches workspaces when spot is short: the same nodes, a lower weight, bounded.
    const onDemand = find<Json>(objs, 'NodePool', 'workspace-ondemand');
    t.same(req(onDemand, 'karpenter.sh/capacity-type'), ['on-demand']);
    t.ok(spot.spec.weight > onDemand.spec.weight, 'spot preferred');
    t.same(onDemand.spec.template.metadata.labels, spot.spec.template.metadata.labels);
    t.same(onDemand.spec.template.spec.taints, spot.spec.template.spec.taints);
    t.same([onDemand.spec.disruption.consolidationPolicy, onDemand.spec.template.spec.terminationGracePeriod], ['WhenEmpty', spot.spec.template.spec.terminationGracePeriod]);
    t.ok(cpu(onDemand.spec.limits.cpu) < cpu(spot.spec.limits.cpu), 'bounded below the spot pool');
    // An expiring node waits for its workspaces, which live at most activeDeadlineSeconds.max.
    const grace = /^(?:(\d+)h)?(?:(\d+)m)?$/.exec(spot.spec.template.spec.terminationGracePeriod)!;
    t.ok(Number(grace[1] ?? 0) * 3600 + Number(grace[2] ?? 0) * 60 > injectionConfig(objs).activeDeadlineSeconds.max);

    const backend = find<Json>(objs, 'NodePool', 'backend-ondemand');
    t.same(req(backend, 'karpenter.sh/capacity-type'), ['on-demand']);
    t.same(req(backend, 'karpenter.k8s.aws/instance-family'), ['m6i', 'm7i', 'c6i', 'c7i']);
    t.same(req(backend, 'karpenter.k8s.aws/instance-size'), ['large', 'xlarge']);
    t.same([backend.spec.disruption.consolidationPolicy, backend.spec.disruption.consolidateAfter], ['WhenEmpty', '10m']);
    t.notOk(backend.spec.template.spec.taints);

    const nodeClass = find<Json>(objs, 'EC2NodeClass', 'al2023-gvisor');
    for (const pool of [spot, backend]) t.same(pool.spec.template.spec.nodeClassRef, { group: 'karpenter.k8s.aws', kind: 'EC2NodeClass', name: nodeClass.metadata.name });
    const s = nodeClass.spec;
    t.equal(s.amiFamily, 'AL2023');
    // The overlays pin the AMI the environment's stack names (infra/, test/infra/cluster-yaml.test.ts).
    t.same(s.amiSelectorTerms.map((term: Json) => Object.keys(term)), [['id']], 'one AMI pinned by id');
    t.same(s.blockDeviceMappings, [{ deviceName: '/dev/xvda', ebs: { volumeType: 'gp3', volumeSize: '50Gi', encrypted: true, deleteOnTermination: true } }]);
    t.same([s.metadataOptions.httpPutResponseHopLimit, s.metadataOptions.httpTokens, s.metadataOptions.httpEndpoint], [1, 'required', 'enabled'], 'IMDS hop limit 1: no pod reaches the node role');
    t.match(s.instanceProfile, new RegExp(`workspace-sandbox-${overlay}$`));
    t.equal(s.role, undefined, 'an instance profile, not a role Karpenter would need IAM rights to wrap');
    t.equal(s.subnetSelectorTerms[0].tags['karpenter.sh/discovery'], `workspace-sandbox-${overlay}`);
    // The AMI's nodeadm drop-in owns spec.containerd.config; user data setting it would be ignored.
    t.notOk(/containerd\s*:/.test(String(s.userData ?? '')), 'user data sets no containerd config');
  });

  // Release tag and digest: the digest is what the node pulls. Until release tooling writes the
  // pushed images' digests, the overlays carry the placeholder (all zeros; manifests/README.md).
  t.test('the overlay\'s notes name the VPC CNI\'s strict enforcing mode', async (t) => {
    t.match(readFileSync(join(REPO_ROOT, 'manifests', 'overlays', overlay, 'kustomization.yaml'), 'utf8'), /NETWORK_POLICY_ENFORCING_MODE=strict/);
  });

  t.test('images by release tag and digest', async (t) => {
    const images = [...podTemplates(objs).flatMap(({ spec }) => [...(spec.initContainers ?? []), ...spec.containers].map((c: Json) => c.image as string)),
      injectionConfig(objs).sidecar.image];
    const ours = images.filter((i) => i.includes('workspace-sandbox/'));
    t.ok(ours.length >= 3);
    for (const image of ours) t.match(image, new RegExp(`^[a-z0-9.-]+\\.amazonaws\\.com/workspace-sandbox/[a-z-]+:${VERSION.replace(/\./g, '\\.')}@sha256:[0-9a-f]{64}$`), image);
    t.ok(ours.includes(injectionConfig(objs).sidecar.image), 'the injection config names the sidecar by digest too');
  });
}

t.test('the local overlay keeps tags: its images are built and loaded into kind, never pushed', { skip }, async (t) => {
  const objs = renderOverlay('local');
  const images = [...podTemplates(objs).flatMap(({ spec }) => [...(spec.initContainers ?? []), ...spec.containers].map((c: Json) => c.image as string)),
    injectionConfig(objs).sidecar.image].filter((i) => i.includes('workspace-sandbox/'));
  t.ok(images.length >= 3);
  for (const image of images) t.notMatch(image, /@sha256:/, image);
});

const PACKER_TEMPLATE = join(REPO_ROOT, 'packer', 'al2023-gvisor.pkr.hcl');
t.test('the EC2NodeClass selects the AMI that packer/ builds', { skip: existsSync(PACKER_TEMPLATE) ? false : 'packer/al2023-gvisor.pkr.hcl not present' }, async (t) => {
  const template = PACKER_TEMPLATE;
  const hcl = readFileSync(template, 'utf8');
  t.match(hcl, /ami_name\s*=\s*"workspace-sandbox-al2023-gvisor-/, 'ami_name matches workspace-sandbox-al2023-gvisor-*');
  t.match(hcl, /"workspace-sandbox\.io\/ami"\s*=\s*"al2023-gvisor"/, 'the AMI carries the selector tag');
});

/** The numeric `USER uid[:gid]` of a Dockerfile's final stage. */
function dockerfileUser(name: string): number | undefined {
  const file = join(REPO_ROOT, name);
  if (!existsSync(file)) return undefined;
  const users = [...readFileSync(file, 'utf8').matchAll(/^USER\s+(\d+)/gm)];
  return users.length > 0 ? Number(users.at(-1)![1]) : undefined;
}

t.test('pods run as the user their image declares', { skip }, async (t) => {
  const objs = renderOverlay('prod');
  const webhookUser = dockerfileUser('Dockerfile.webhook');
  const proxyUser = dockerfileUser('Dockerfile.proxy');
  if (webhookUser === undefined || proxyUser === undefined) t.comment('a Dockerfile is missing: its user is not compared');
  if (webhookUser !== undefined) {
    t.equal(webhookDeployment(objs).spec.template.spec.securityContext.runAsUser, webhookUser, 'webhook Deployment = Dockerfile.webhook USER');
    t.equal(webhookContainer(objs).securityContext.runAsUser, webhookUser);
  }
  if (proxyUser !== undefined) t.equal(injectionConfig(objs).sidecar.runAsUser, proxyUser, 'sidecar runAsUser = Dockerfile.proxy USER');
});

t.test('the rendered config is checked by the webhook\'s schema (the check can fail)', { skip }, async (t) => {
  const text = injectionConfigText(renderOverlay('prod'));
  t.throws(() => parseInjectionConfig({ ...parseYaml(text), sidecarImage: 'x' }), /sidecarImage|unrecognized/i);
  t.match(CONTAINER_PROXY, 'credential-proxy');
});
