// fast-check generators of Pods as the API server could deliver them: valid in shape (unique
// names, mounts that name existing volumes), but with every field the webhook judges drawn from
// good, weaker and odd values.
import fc from 'fast-check';

/** Mostly a benign value, sometimes a hostile one: enough Pods pass to exercise the allowed path. */
function mostly<T>(good: T[], bad: T[]): fc.Arbitrary<T> {
  return fc.oneof({ weight: 60, arbitrary: fc.constantFrom(...good) }, { weight: 1, arbitrary: fc.constantFrom(...bad) });
}

const quantityCpu = fc.constantFrom('100m', '250m', '500m', '1', '2', '4', '8', '0.5', '1500m', '2e0');
const quantityMem = fc.constantFrom('64Mi', '512Mi', '1Gi', '2Gi', '8Gi', '16Gi', '1G', '3e9', '256M');

const envName = fc.constantFrom(
  'AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_CONTAINER_CREDENTIALS_FULL_URI', 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE',
  'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_ACCESS_KEY_ID', 'HTTP_PROXY', 'https_proxy', 'NO_PROXY', 'PATH', 'LANG', 'FOO', 'BAR_1',
  'AGENT_PORT', 'NODE_EXTRA_CA_CERTS',
);

const envVar = fc.oneof(
  { weight: 80, arbitrary: fc.record({ name: envName, value: fc.string({ maxLength: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ name: envName, valueFrom: fc.constant({ secretKeyRef: { name: 's', key: 'k' } }) }) },
  { weight: 1, arbitrary: fc.record({ name: envName, valueFrom: fc.constant({ fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } }) }) },
  { weight: 1, arbitrary: fc.record({ name: envName, valueFrom: fc.constant({ configMapKeyRef: { name: 'cm', key: 'k' } }) }) },
);

const capability = fc.constantFrom('CHOWN', 'SETUID', 'SETGID', 'DAC_OVERRIDE', 'NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'CAP_CHOWN', 'chown', 'ALL', 'KILL');

const securityContext = fc.record({
  runAsUser: mostly([1, 1000, 65534], [0]),
  runAsGroup: mostly([1000, 3000], [0]),
  runAsNonRoot: mostly([true], [false]),
  readOnlyRootFilesystem: mostly([true], [false]),
  allowPrivilegeEscalation: mostly([false], [true]),
  privileged: mostly([false], [true]),
  procMount: mostly(['Default'], ['Unmasked']),
  capabilities: fc.record({
    add: fc.oneof({ weight: 8, arbitrary: fc.array(fc.constantFrom('CHOWN', 'SETUID', 'CAP_CHOWN', 'chown'), { maxLength: 2 }) }, { weight: 1, arbitrary: fc.array(capability, { maxLength: 3 }) }),
    drop: fc.array(fc.constantFrom('ALL', 'NET_RAW', 'all'), { maxLength: 2 }),
  }, { requiredKeys: [] }),
  seccompProfile: mostly([{ type: 'RuntimeDefault' }, { type: 'Localhost', localhostProfile: 'p.json' }], [{ type: 'Unconfined' }]),
}, { requiredKeys: [] });

const resources = fc.oneof(
  fc.constant({}),
  fc.record({ limits: fc.record({ cpu: quantityCpu, memory: quantityMem }, { requiredKeys: [] }) }),
  // Requests alone, or requests equal to the limits (the API server defaults requests to limits).
  fc.record({ requests: fc.record({ cpu: quantityCpu, memory: quantityMem }, { requiredKeys: [] }) }),
  fc.record({ cpu: quantityCpu, memory: quantityMem }).map((l) => ({ limits: l, requests: { ...l } })),
);

type VolumeKind = 'emptyDir' | 'secret' | 'hostPath' | 'configMap' | 'kube-api-access' | 'pod-identity' | 'irsa' | 'projected-secret';

function volumeOf(kind: VolumeKind, i: number): Record<string, unknown> {
  switch (kind) {
    case 'emptyDir': return { name: `data-${i}`, emptyDir: {} };
    case 'secret': return { name: `keys-${i}`, secret: { secretName: 'keys', defaultMode: 420 } };
    case 'hostPath': return { name: `host-${i}`, hostPath: { path: '/var/log', type: '' } };
    case 'configMap': return { name: `cfg-${i}`, configMap: { name: 'cfg', defaultMode: 420 } };
    case 'projected-secret': return { name: `proj-${i}`, projected: { defaultMode: 420, sources: [{ secret: { name: 'x' } }] } };
    case 'kube-api-access': return { name: 'kube-api-access-ab12c', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] } };
    case 'pod-identity': return { name: 'eks-pod-identity-token', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { audience: 'pods.eks.amazonaws.com', expirationSeconds: 86400, path: 'eks-pod-identity-token' } }] } };
    case 'irsa': return { name: 'aws-iam-token', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { audience: 'sts.amazonaws.com', expirationSeconds: 86400, path: 'token' } }] } };
  }
}

const MOUNT_PATHS: Record<string, string> = {
  'kube-api-access-ab12c': '/var/run/secrets/kubernetes.io/serviceaccount',
  'eks-pod-identity-token': '/var/run/secrets/pods.eks.amazonaws.com/serviceaccount',
  'aws-iam-token': '/var/run/secrets/eks.amazonaws.com/serviceaccount',
};

const containerArb = fc.record({
  env: fc.option(fc.uniqueArray(envVar, { selector: (e) => e.name, maxLength: 6 }), { nil: undefined }),
  envFrom: fc.option(mostly([[{ configMapRef: { name: 'cm' } }]], [[{ secretRef: { name: 's' } }]]), { nil: undefined, freq: 6 }),
  securityContext: fc.option(securityContext, { nil: undefined }),
  resources,
  ports: fc.option(mostly<Record<string, unknown>[]>([
    [{ containerPort: 8080, protocol: 'TCP' }],
    [{ name: 'agent', containerPort: 9000, protocol: 'TCP' }],
    [{ containerPort: 8081, protocol: 'TCP' }],
  ], [[{ containerPort: 3000, hostPort: 3000, protocol: 'TCP' }]]), { nil: undefined }),
  mountPick: fc.array(fc.nat(20), { maxLength: 3 }),
  mountAt: fc.constantFrom('/data', '/tmp', '/workspace', '/var/run/workspace-sandbox', '/cache'),
  readinessProbe: fc.option(fc.constant({ tcpSocket: { port: 8081 }, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 }), { nil: undefined, freq: 4 }),
  livenessProbe: fc.option(fc.constant({ exec: { command: ['true'] }, initialDelaySeconds: 30, periodSeconds: 30, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 }), { nil: undefined, freq: 4 }),
  startupProbe: fc.option(fc.constant({ httpGet: { path: '/up', port: 8080, scheme: 'HTTP' }, periodSeconds: 5, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 30 }), { nil: undefined, freq: 4 }),
});

/** Pods shaped like the API server's deliveries, with hostile and benign values mixed. */
export const podArb = fc.record({
  names: fc.oneof(
    { weight: 6, arbitrary: fc.uniqueArray(fc.constantFrom('helper', 'browser', 'db'), { maxLength: 2 }).map((n): string[] => ['workspace', ...n]) },
    { weight: 2, arbitrary: fc.constantFrom<string[]>(['app'], ['main']) },
    { weight: 1, arbitrary: fc.uniqueArray(fc.constantFrom<string>('workspace', 'helper', 'app', 'credential-proxy'), { minLength: 1, maxLength: 3 }) },
  ),
  initNames: fc.uniqueArray(mostly(['fetch', 'setup'], ['credential-proxy']), { maxLength: 2 }),
  containers: fc.array(containerArb, { minLength: 5, maxLength: 5 }),
  volumeKinds: fc.uniqueArray(mostly<VolumeKind>(['emptyDir', 'configMap', 'kube-api-access', 'pod-identity', 'irsa'], ['secret', 'hostPath', 'projected-secret']), { maxLength: 4 }),
  annotations: fc.option(fc.record({
    'workspace-sandbox.io/runtime': mostly(['runc', 'gvisor'], ['kata', '']),
    'workspace-sandbox.io/ttl-seconds': mostly(['3600', '999999', '60'], ['0', 'abc', '4h']),
    'workspace-sandbox.io/allowed-domains': mostly(['api.example.com', '*.hf.co, pypi.org', ''], ['Bad Domain', 'a,,b c']),
    'example.com/a~b': fc.string({ maxLength: 6 }),
    'x/y~1z': fc.constant('v'),
  }, { requiredKeys: [] }), { nil: undefined }),
  spec: fc.record({
    hostNetwork: mostly([false], [true]),
    hostPID: mostly([false], [true]),
    shareProcessNamespace: mostly([false], [true]),
    automountServiceAccountToken: mostly([false], [true]),
    runtimeClassName: mostly(['gvisor'], ['runc', 'kata']),
    priorityClassName: fc.constantFrom('workspace', 'standard', ''),
    priority: fc.constantFrom(0, 1000),
    preemptionPolicy: fc.constantFrom('PreemptLowerPriority', 'Never'),
    activeDeadlineSeconds: fc.constantFrom(60, 14400, 100000),
    overhead: fc.constant({ cpu: '250m', memory: '160Mi' }),
    securityContext: fc.record({ runAsUser: mostly([2000], [0]), fsGroup: mostly([2000], [0]), runAsNonRoot: mostly([true], [false]), seccompProfile: mostly([{ type: 'RuntimeDefault' }], [{ type: 'Unconfined' }]) }, { requiredKeys: [] }),
  }, { requiredKeys: [] }),
  namespace: fc.constantFrom('sandboxes', 'sandboxes', 'sandboxes', 'default'),
  generateName: fc.boolean(),
}).map((g) => {
  const volumes = g.volumeKinds.map((k, i) => volumeOf(k, i));
  const build = (name: string, i: number, init: boolean) => {
    const c = g.containers[i % g.containers.length]!;
    const out: Record<string, unknown> = { name, image: `example/${name}:1`, imagePullPolicy: 'IfNotPresent', terminationMessagePath: '/dev/termination-log', terminationMessagePolicy: 'File' };
    if (c.env) out.env = c.env;
    if (c.envFrom) out.envFrom = c.envFrom;
    if (c.securityContext) out.securityContext = c.securityContext;
    out.resources = c.resources;
    if (c.ports && !init) out.ports = c.ports;
    for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe'] as const) if (c[probe] && !init) out[probe] = c[probe];
    const mounts: Record<string, unknown>[] = [];
    const used = new Set<string>();
    for (const pick of c.mountPick) {
      const v = volumes[pick % Math.max(volumes.length, 1)];
      if (!v || mounts.some((m) => m.name === v.name)) continue;
      const path = MOUNT_PATHS[v.name as string] ?? (mounts.length === 0 ? c.mountAt : `/mnt/${String(v.name)}`);
      if (used.has(path)) continue;
      used.add(path);
      mounts.push({ name: v.name, mountPath: path, ...(v.projected ? { readOnly: true } : {}) });
    }
    if (mounts.length > 0) out.volumeMounts = mounts;
    if (init && name === 'credential-proxy') out.restartPolicy = 'Always';
    return out;
  };
  const containers = g.names.map((n, i) => build(n, i, false));
  const initContainers = g.initNames.filter((n) => !g.names.includes(n)).map((n, i) => build(n, i + 3, true));
  const metadata: Record<string, unknown> = g.generateName ? { generateName: 'ws-' } : { name: 'ws-prop' };
  metadata.namespace = g.namespace;
  metadata.labels = { app: 'workspace' };
  if (g.annotations) metadata.annotations = g.annotations;
  const spec: Record<string, unknown> = { containers, ...g.spec, restartPolicy: 'Never', dnsPolicy: 'ClusterFirst', enableServiceLinks: true };
  if (initContainers.length > 0) spec.initContainers = initContainers;
  if (volumes.length > 0) spec.volumes = volumes;
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec, status: {} } as Record<string, unknown>;
});
