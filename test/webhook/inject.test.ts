// The injection config contract and `inject` behaviours the golden files don't pin down.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../../lib/config.ts';
import { AGENT_PATHS, ANNOTATION_STATUS, CA_VALIDITY_MARGIN_SECONDS, MAX_CA_VALIDITY_SECONDS, PORTS, PROXY_ADMIN_PATHS } from '../../lib/constants.ts';
import { DEFAULT_INJECTION_CONFIG, configHash, injectionConfigSchema, parseInjectionConfig } from '../../webhook/config.ts';
import { inject, readStatus, type Injected, type Json } from '../../webhook/inject.ts';
import { parseQuantity } from '../../lib/quantity.ts';

const EXAMPLE = new URL('../../webhook/injection-config.example.yaml', import.meta.url);
const example: unknown = parse(readFileSync(EXAMPLE, 'utf8'));

/** Dotted paths of every field of a zod object schema (records and arrays are leaves). */
function schemaFields(schema: z.ZodType, prefix = ''): string[] {
  let s = schema as unknown as { def: { type: string; innerType?: z.ZodType; in?: z.ZodType; shape?: Record<string, z.ZodType> } };
  while (['default', 'prefault', 'nullable', 'optional', 'pipe'].includes(s.def.type)) s = (s.def.innerType ?? s.def.in) as unknown as typeof s;
  if (s.def.type !== 'object') return [];
  const shape = (s as unknown as { shape: Record<string, z.ZodType> }).shape;
  return Object.entries(shape).flatMap(([k, v]) => {
    const path = prefix ? `${prefix}.${k}` : k;
    return [path, ...schemaFields(v, path)];
  });
}

function exampleFields(value: unknown, prefix = ''): string[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([k, v]) => {
    const path = prefix ? `${prefix}.${k}` : k;
    return [path, ...exampleFields(v, path)];
  });
}

t.test('the example config documents every field and is valid', async (t) => {
  const fields = schemaFields(injectionConfigSchema);
  t.ok(fields.length > 30, `${fields.length} fields`);
  const documented = new Set(exampleFields(example));
  const text = readFileSync(EXAMPLE, 'utf8');
  // A field under an object the example leaves null (off by default) is documented in a comment.
  const underNull = (f: string) => {
    const parent = f.split('.').slice(0, -1).reduce<unknown>((o, k) => (o as Record<string, unknown> | null)?.[k], example);
    return parent === null && new RegExp(`^\\s*#\\s+${f.split('.').pop()}:`, 'm').test(text);
  };
  for (const f of fields) t.ok(documented.has(f) || underNull(f), `example documents ${f}`);
  for (const f of fields) t.match(text, new RegExp(`^\\s*(#\\s+)?${f.split('.').pop()}:`, 'm'));
  t.doesNotThrow(() => parseInjectionConfig(example));
});

t.test('parseInjectionConfig: defaults, frozen, strict, every problem listed', async (t) => {
  const empty = parseInjectionConfig({});
  t.same(empty, DEFAULT_INJECTION_CONFIG);
  t.equal(configHash(empty), configHash(DEFAULT_INJECTION_CONFIG));
  t.ok(Object.isFrozen(empty.sidecar.resources.limits));
  t.equal(parseInjectionConfig(null).runtime.runtimeClassName, 'gvisor');
  const kind = parseInjectionConfig({ runtime: { runtimeClassName: null, allowedFallbacks: ['runc'] }, priorityClassName: null, sidecar: { rulesTokenSecret: null } });
  t.equal(kind.runtime.runtimeClassName, null);
  t.not(configHash(kind), configHash(empty));
  const err = t.throws(() => parseInjectionConfig({
    runtimes: {},
    runtime: { runtimeClassName: 'gvisor', allowedFallbacks: ['gvisor'] },
    sidecar: { image: '', extra: 1 },
    workspace: { capabilities: ['ALL', 'CAP_CHOWN'], maxResources: { cpu: '4 cores' } },
    allowedDomains: { domains: ['ok.example', 'NOT OK'] },
  })) as ConfigError;
  t.ok(err instanceof ConfigError);
  t.equal(err.code, 'WS_ERR_CONFIG_INVALID');
  const fields = err.problems.map((p) => p.field).sort();
  t.same(fields, [
    'allowedDomains.domains[1]', 'runtimes', 'sidecar.extra', 'sidecar.image',
    'workspace.capabilities[0]', 'workspace.capabilities[1]', 'workspace.maxResources.cpu',
  ]);
  const cross = t.throws(() => parseInjectionConfig({ runtime: { allowedFallbacks: ['gvisor'] }, credentials: { copyEnv: ['AWS_ROLE_ARN'] } })) as ConfigError;
  t.same(cross.problems.map((p) => p.field).sort(), ['credentials.copyEnv[0]', 'runtime.allowedFallbacks']);
});

t.test('quantities parse like Kubernetes', async (t) => {
  t.equal(parseQuantity('500m'), 0.5);
  t.equal(parseQuantity('2'), 2);
  t.equal(parseQuantity('2Gi'), 2 * 2 ** 30);
  t.equal(parseQuantity('1G'), 1e9);
  t.equal(parseQuantity('3e9'), 3e9);
  t.equal(parseQuantity('.5'), 0.5);
  for (const bad of ['', 'm', '1e3m', '2 Gi', '1.2.3', 'Gi', null, {}]) t.equal(parseQuantity(bad), undefined, String(bad));
});

const config = parseInjectionConfig(example);
const basePod = (): Json => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'ws', namespace: 'sandboxes' },
  spec: { containers: [{ name: 'workspace', image: 'example/ws:1' }] },
});
const injected = (r: ReturnType<typeof inject>): Injected => {
  if (r.denied) throw new Error(r.message);
  return r;
};
type C = { name: string; env?: { name: string; value?: string }[]; volumeMounts?: { name: string; mountPath: string }[] };

t.test('inject never modifies its input', async (t) => {
  const pod = basePod();
  const before = JSON.stringify(pod);
  injected(inject(pod, config));
  t.equal(JSON.stringify(pod), before);
});

t.test('the namespace fence uses the request namespace; the CLI can ignore it', async (t) => {
  const pod = basePod();
  delete (pod.metadata as Json).namespace;
  t.equal(injected(inject(pod, config, { namespace: 'default' })).skipped, 'namespace not served');
  t.notOk(injected(inject(pod, config, { namespace: 'sandboxes' })).skipped);
  t.notOk(injected(inject(pod, config, { namespace: 'default', ignoreNamespaces: true })).skipped);
  t.notOk(injected(inject(pod, parseInjectionConfig({}), { namespace: 'anything' })).skipped, 'an empty list serves every namespace');
});

t.test('a later webhook adding credentials everywhere (reinvocation) is undone without duplicates', async (t) => {
  const first = injected(inject(basePod(), config)).pod;
  // What the EKS Pod Identity webhook does when it runs after us: every container, sidecar included.
  const later = structuredClone(first) as Json & { spec: { containers: C[]; initContainers: C[]; volumes: Json[] } };
  for (const c of [...later.spec.containers, ...later.spec.initContainers]) {
    c.env = [...(c.env ?? []), { name: 'AWS_CONTAINER_CREDENTIALS_FULL_URI', value: 'http://169.254.170.23/v1/credentials' }];
    c.volumeMounts = [...(c.volumeMounts ?? []), { name: 'eks-pod-identity-token', mountPath: '/var/run/secrets/pods.eks.amazonaws.com/serviceaccount' }];
  }
  later.spec.volumes.push({ name: 'eks-pod-identity-token', projected: { sources: [{ serviceAccountToken: { audience: 'pods.eks.amazonaws.com', path: 'eks-pod-identity-token' } }] } });
  const again = injected(inject(later, config)).pod as typeof later;
  const sidecar = again.spec.initContainers[0]!;
  t.equal(sidecar.env!.filter((e) => e.name === 'AWS_CONTAINER_CREDENTIALS_FULL_URI').length, 1);
  t.equal(sidecar.volumeMounts!.filter((m) => m.name === 'eks-pod-identity-token').length, 1);
  t.notOk(again.spec.containers[0]!.env!.some((e) => e.name === 'AWS_CONTAINER_CREDENTIALS_FULL_URI'));
  t.notOk(again.spec.containers[0]!.volumeMounts!.some((m) => m.name === 'eks-pod-identity-token'));
  t.same(readStatus(again)?.credentials, ['AWS_CONTAINER_CREDENTIALS_FULL_URI', 'eks-pod-identity-token']);
  t.equal(JSON.stringify(injected(inject(again, config)).pod), JSON.stringify(again), 'and that is a fixpoint');
});

t.test('a forged status annotation gains nothing: the sidecar is rebuilt from the config', async (t) => {
  const pod = basePod() as Json & { metadata: Json; spec: Json };
  pod.metadata.annotations = { [ANNOTATION_STATUS]: '{"runtimeClassName":"runc"}' };
  pod.spec.runtimeClassName = 'runc';
  pod.spec.initContainers = [{ name: 'credential-proxy', image: 'evil/proxy:1', restartPolicy: 'Always', securityContext: { privileged: true }, env: [{ name: 'ALLOWED_DOMAINS', value: '*' }] }];
  const out = injected(inject(pod, config)).pod as Json & { spec: { runtimeClassName: string; initContainers: (C & { image: string; securityContext: Json })[] } };
  t.equal(out.spec.runtimeClassName, 'gvisor');
  t.equal(out.spec.initContainers.length, 1);
  t.equal(out.spec.initContainers[0]!.image, config.sidecar.image);
  t.equal(out.spec.initContainers[0]!.securityContext.privileged, undefined);
  t.not(out.spec.initContainers[0]!.env!.find((e) => e.name === 'ALLOWED_DOMAINS')!.value, '*');
  const garbage = basePod() as Json & { metadata: Json };
  garbage.metadata.annotations = { [ANNOTATION_STATUS]: 'not json' };
  t.notOk(inject(garbage, config).denied, 'an unreadable status is treated as ours and re-rendered');
});

t.test('annotations: domains extend only when allowed; runtime null config; ttl with the Pod\'s own deadline', async (t) => {
  const pod = basePod() as Json & { metadata: Json; spec: Json };
  pod.metadata.annotations = { 'workspace-sandbox.io/allowed-domains': 'extra.example.com' };
  const closed = injected(inject(pod, parseInjectionConfig({})));
  t.match(closed.warnings, [/allowed-domains ignored/]);
  const domainsOf = (r: Injected) => ((r.pod.spec as { initContainers: C[] }).initContainers[0]!.env!.find((e) => e.name === 'ALLOWED_DOMAINS')?.value);
  t.equal(domainsOf(closed), undefined, 'no domains: no ALLOWED_DOMAINS (an empty value would not survive the API server)');
  t.match(domainsOf(injected(inject(pod, config))), /,extra\.example\.com$/);

  const kind = parseInjectionConfig({ runtime: { runtimeClassName: null, allowedFallbacks: ['runc'] } });
  t.equal((injected(inject(basePod(), kind)).pod.spec as Json).runtimeClassName, undefined);
  const runc = basePod() as Json & { metadata: Json };
  runc.metadata.annotations = { 'workspace-sandbox.io/runtime': 'runc' };
  t.equal((injected(inject(runc, kind)).pod.spec as Json).runtimeClassName, 'runc');
  // Re-rendered under a config that no longer sets a class: ours is removed, with its stale overhead.
  const gv = injected(inject(basePod(), config)).pod as Json & { spec: Json };
  gv.spec.overhead = { cpu: '250m' };
  const moved = injected(inject(gv, kind)).pod.spec as Json;
  t.equal(moved.runtimeClassName, undefined);
  t.equal(moved.overhead, undefined);

  const own = basePod() as Json & { metadata: Json; spec: Json };
  own.spec.activeDeadlineSeconds = 600;
  own.metadata.annotations = { 'workspace-sandbox.io/ttl-seconds': '3600' };
  t.equal((injected(inject(own, config)).pod.spec as Json).activeDeadlineSeconds, 600, 'the lower of the Pod\'s and the annotation\'s');
  own.metadata.annotations = { 'workspace-sandbox.io/ttl-seconds': '60' };
  const lowered = injected(inject(own, config)).pod;
  t.equal((lowered.spec as Json).activeDeadlineSeconds, 60);
  t.equal(JSON.stringify(injected(inject(lowered, config)).pod), JSON.stringify(lowered));
});

t.test('a Pod-level securityContext is inherited rather than overridden', async (t) => {
  const pod = basePod() as Json & { spec: Json };
  pod.spec.securityContext = { runAsUser: 4242, runAsNonRoot: true, seccompProfile: { type: 'Localhost', localhostProfile: 'p.json' } };
  const out = injected(inject(pod, config)).pod as Json & { spec: { containers: { securityContext: Json }[]; securityContext: Json } };
  const sc = out.spec.containers[0]!.securityContext;
  t.equal(sc.runAsUser, undefined, 'runAsUser inherited from the Pod');
  t.equal(sc.seccompProfile, undefined);
  t.equal(sc.runAsGroup, 1000);
  t.equal(out.spec.securityContext.fsGroup, 1000);
  const root = basePod() as Json & { spec: Json };
  root.spec.securityContext = { runAsUser: 0 };
  const denied = inject(root, config);
  t.ok(denied.denied);
  if (denied.denied) t.match(denied.message, /spec.securityContext.runAsUser: must not be 0/);
});

t.test('the sidecar\'s CA outlives the Pod: CA_VALIDITY_SECONDS is the deadline plus the margin, and a deadline the proxy could not cover is refused', async (t) => {
  const c = parseInjectionConfig({ activeDeadlineSeconds: { default: 3600, max: 7200 } });
  const pod = basePod() as Json & { metadata: Json };
  pod.metadata.annotations = { 'workspace-sandbox.io/ttl-seconds': '999999' };
  const out = injected(inject(pod, c)).pod as Json & { spec: { activeDeadlineSeconds: number; initContainers: C[] } };
  t.equal(out.spec.activeDeadlineSeconds, 7200, 'clamped to the maximum');
  const validity = Number(out.spec.initContainers[0]!.env!.find((e) => e.name === 'CA_VALIDITY_SECONDS')!.value);
  t.equal(validity, 7200 + CA_VALIDITY_MARGIN_SECONDS);
  t.ok(validity <= MAX_CA_VALIDITY_SECONDS);
  t.throws(() => parseInjectionConfig({ activeDeadlineSeconds: { default: 3600, max: MAX_CA_VALIDITY_SECONDS } }), /activeDeadlineSeconds\.max/);
  t.same((out.spec.initContainers[0] as Json).volumeMounts, [
    { name: 'workspace-sandbox-shared', mountPath: '/var/run/workspace-sandbox' },
    { name: 'workspace-sandbox-sidecar-state', mountPath: '/var/lib/workspace-sandbox' },
    { name: 'workspace-sandbox-pod-token-keys', mountPath: '/etc/workspace-sandbox/pod-token', readOnly: true },
  ], 'the state volume is the sidecar\'s');
  t.notOk(JSON.stringify((out.spec as Json).containers).includes('workspace-sandbox-sidecar-state'), 'no other container mounts it');
  t.same(((out.spec as Json).volumes as Json[]).find((v) => v.name === 'workspace-sandbox-sidecar-state')!.emptyDir, { medium: 'Memory', sizeLimit: '16Mi' });
});

t.test('every env the webhook writes for the agent and the proxy is one their configs read', async (t) => {
  const { agentEnvObject } = await import('../../agent/config.ts');
  const { proxyEnvSchema } = await import('../../credential-proxy/config.ts');
  const c = parseInjectionConfig({ sidecar: { redisUrl: 'rediss://redis:6380', upstreamCaBundle: { configMapName: 'corp-ca' } } });
  const out = injected(inject(basePod(), c)).pod as Json & { spec: { containers: C[]; initContainers: C[] } };
  const agentNames = out.spec.containers[0]!.env!.map((e) => e.name).filter((n) => n.startsWith('AGENT_'));
  t.ok(agentNames.length >= 4);
  for (const n of agentNames) t.ok(Object.hasOwn(agentEnvObject.shape, n), `agent reads ${n}`);
  const proxyNames = out.spec.initContainers[0]!.env!.map((e) => e.name).filter((n) => !['POD_UID', 'POD_NAMESPACE', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_STS_REGIONAL_ENDPOINTS'].includes(n));
  for (const n of ['PROXY_STATE_DIR', 'CA_VALIDITY_SECONDS', 'UPSTREAM_CA_FILE', 'RULES_SCOPE', 'REDIS_URL']) t.ok(proxyNames.includes(n), `the sidecar gets ${n}`);
  for (const n of proxyNames) t.ok(Object.hasOwn((proxyEnvSchema as unknown as { shape: object }).shape, n), `proxy reads ${n}`);
});

t.test('every workspace carries karpenter.sh/do-not-disrupt (Karpenter never repacks a live conversation)', async (t) => {
  const out = injected(inject(basePod(), config)).pod as Json & { metadata: { annotations: Record<string, string> } };
  t.equal(out.metadata.annotations['karpenter.sh/do-not-disrupt'], 'true');
  t.equal(JSON.stringify(injected(inject(out, config)).pod), JSON.stringify(out), 'a fixpoint');
});

type Probe = { httpGet: { path: string; port: number; scheme: string }; initialDelaySeconds?: number; periodSeconds: number; timeoutSeconds: number; successThreshold: number; failureThreshold: number };
type Probed = C & { startupProbe?: Probe; readinessProbe?: Probe; livenessProbe?: Probe; restartPolicy?: string };
const PROBES = ['startupProbe', 'readinessProbe', 'livenessProbe'] as const;

t.test('the probes never delay the first Ready: startup probes poll every second, no probe waits before its first run', async (t) => {
  const out = injected(inject(basePod(), config)).pod as Json & { spec: { containers: Probed[]; initContainers: Probed[] } };
  const ws = out.spec.containers[0]!;
  const sidecar = out.spec.initContainers[0]!;
  t.equal(sidecar.restartPolicy, 'Always', 'a native sidecar: the kubelet starts the workspace once its startupProbe passes');

  // Every workspace probe asks the agent's /health, unauthenticated, on the TCP port the webhook tells it to listen on.
  const env = (name: string) => ws.env!.find((e) => e.name === name)?.value;
  t.same([env('AGENT_LISTEN_MODE'), env('AGENT_PORT')], ['tcp', String(PORTS.agent)]);
  for (const field of PROBES) t.same(ws[field]?.httpGet, { path: AGENT_PATHS.health, port: PORTS.agent, scheme: 'HTTP' }, `workspace ${field} on /health`);
  for (const field of ['startupProbe', 'readinessProbe'] as const) t.same(sidecar[field]?.httpGet, { path: PROXY_ADMIN_PATHS.readyz, port: PORTS.proxyAdmin, scheme: 'HTTP' }, `sidecar ${field} on /readyz`);

  for (const [c, what] of [[ws, 'workspace'], [sidecar, 'sidecar']] as const) {
    t.equal(c.startupProbe?.periodSeconds, 1, `${what}: the startup probe polls every second`);
    for (const field of PROBES) {
      const p = c[field];
      if (!p) continue;
      t.equal(p.initialDelaySeconds, undefined, `${what} ${field}: no initial delay`);
      t.ok(p.timeoutSeconds <= p.periodSeconds, `${what} ${field}: a probe ends before the next is due`);
    }
    // Should the kubelet's immediate readiness run after startup miss, the next is at most 2 s away.
    t.ok(c.readinessProbe!.periodSeconds <= 2, `${what}: readiness polls at least every 2 s`);
  }
  // The start budget is period times failureThreshold: the config's startupTimeoutSeconds.
  t.equal(ws.startupProbe!.failureThreshold, config.workspace.startupTimeoutSeconds);
  t.equal(sidecar.startupProbe!.failureThreshold, config.sidecar.startupTimeoutSeconds);
  // Liveness restarts a wedged agent only: a minute of silence, 5 s for each answer.
  t.ok(ws.livenessProbe!.periodSeconds * ws.livenessProbe!.failureThreshold >= 60);
  t.ok(ws.livenessProbe!.timeoutSeconds >= 5);
  t.same(readStatus(out)?.probes, [...PROBES]);

  const slow = parseInjectionConfig({ ...(example as Json), workspace: { ...((example as Json).workspace as Json), startupTimeoutSeconds: 300 } });
  const rerun = injected(inject(out, slow)).pod as typeof out;
  t.equal(rerun.spec.containers[0]!.startupProbe!.failureThreshold, 300, 'a re-run re-renders the webhook\'s own probes from the current config');
  t.equal(JSON.stringify(injected(inject(rerun, slow)).pod), JSON.stringify(rerun), 'a fixpoint');
});

t.test('the creator\'s own probes are kept, on a re-run too; a forged status removes nothing but probes', async (t) => {
  const own: Probe = { httpGet: { path: '/ready', port: 9000, scheme: 'HTTP' }, initialDelaySeconds: 5, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 };
  const pod = basePod() as Json & { spec: { containers: Probed[] } };
  pod.spec.containers[0]!.readinessProbe = own;
  const out = injected(inject(pod, config)).pod as typeof pod;
  t.same(out.spec.containers[0]!.readinessProbe, own, 'the creator\'s readiness probe');
  t.equal(out.spec.containers[0]!.startupProbe?.httpGet.path, AGENT_PATHS.health, 'the missing ones are added');
  t.equal(out.spec.containers[0]!.livenessProbe?.httpGet.path, AGENT_PATHS.health);
  t.same(readStatus(out)?.probes, ['startupProbe', 'livenessProbe']);
  t.same((injected(inject(out, config)).pod as typeof pod).spec.containers[0]!.readinessProbe, own, 'still the creator\'s after a re-run');

  const forged = basePod() as Json & { metadata: Json; spec: { containers: (Probed & { image: string })[] } };
  forged.metadata.annotations = { [ANNOTATION_STATUS]: JSON.stringify({ workspaceContainer: 'workspace', probes: ['image', 'securityContext', 'readinessProbe'] }) };
  forged.spec.containers[0]!.readinessProbe = own;
  const rebuilt = injected(inject(forged, config)).pod as typeof forged;
  t.equal(rebuilt.spec.containers[0]!.image, 'example/ws:1', 'a field that is not a probe stays');
  t.equal(rebuilt.spec.containers[0]!.readinessProbe!.httpGet.path, AGENT_PATHS.health, 'a probe the status claims is re-rendered');
});
