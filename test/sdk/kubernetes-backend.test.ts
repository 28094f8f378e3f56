// The Kubernetes backend against a STAND-IN for the API server (test/helpers/apiserver-standin.ts:
// there is no cluster here). The stand-in plays the API server, the webhook's verdicts and the
// kubelet's status updates; the workspace's agent and proxy are the real programs, in this
// process on loopback, where the "Pod IP" points.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { KubeConfig } from '@kubernetes/client-node';
import { loadProxyConfig } from '../../credential-proxy/config.ts';
import { createProxy } from '../../credential-proxy/server.ts';
import { ANNOTATION_TTL_SECONDS, CONTAINER_WORKSPACE, LABEL_CONVERSATION, LABEL_OWNER, LABEL_POOL } from '../../lib/constants.ts';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { KubernetesBackend } from '../../sdk/kubernetes-backend.ts';
import { PodTokenSource, StaticTokenSource } from '../../sdk/tokens.ts';
import { generatePodTokenKeys } from '../../lib/pod-token.ts';
import { startAgent } from '../agent/harness.ts';
import { startApiServerStandIn, type ApiServerStandIn } from '../helpers/apiserver-standin.ts';
import { captureLogs } from '../helpers/log-capture.ts';

const NS = 'sandboxes';
const AGENT_TOKEN = 'agent-token-0123456789abcdef';
const RULES_TOKEN = 'rules-token-0123456789abcdef';

function kubeConfig(api: ApiServerStandIn): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'standin', server: api.url, skipTLSVerify: true }],
    users: [{ name: 'backend', token: api.token }],
    contexts: [{ name: 'standin', cluster: 'standin', user: 'backend' }],
    currentContext: 'standin',
  });
  return kc;
}

/** What the scheduler and kubelet do for a healthy Pod: scheduled, running, Ready with an IP. */
function becomeReady(api: ApiServerStandIn, name: string): void {
  api.update(name, (p) => { p.status = { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'True' }] }; });
  api.update(name, (p) => {
    p.status = { phase: 'Running', podIP: '127.0.0.1', conditions: [{ type: 'PodScheduled', status: 'True' }, { type: 'Ready', status: 'True' }] };
  });
}

t.test('Kubernetes backend against an API server stand-in', async (t) => {
  const api = await startApiServerStandIn(NS);
  const agent = await startAgent({ AGENT_TOKEN_FILE: writeTemp('agent-token', AGENT_TOKEN) });
  const dir = mkdtempSync(join(tmpdir(), 'ws-sdk-k8s-'));
  writeFileSync(join(dir, 'rules-tokens'), `backend:${RULES_TOKEN}\n`);
  const proxy = createProxy(loadProxyConfig({ PROXY_PORT: '0', ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', RULES_TOKEN_FILE: join(dir, 'rules-tokens'), CA_DIR: dir }), {
    logger: createLogger({ name: 'credential-proxy', level: 'warn', destination: captureLogs().destination }),
    registry: createMetricsRegistry({ program: 'credential-proxy', defaultMetrics: false }),
  });
  const bound = await proxy.listen();
  const backend = new KubernetesBackend({
    kubeConfig: kubeConfig(api), namespace: NS, owner: 'test-backend', image: 'registry.example/workspace:1',
    defaultResources: { cpu: '500m', memory: '512Mi' }, maxResources: { cpu: '2', memory: '4Gi' }, readyTimeoutMs: 3_000,
    tokens: new StaticTokenSource({ agent: AGENT_TOKEN, rules: RULES_TOKEN }),
    agentPort: agent.target.port, adminPort: bound.admin.port!,
  });
  t.teardown(async () => {
    await backend.close();
    await proxy.close();
    await agent.close();
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  });
  function writeTemp(name: string, text: string): string {
    const d = mkdtempSync(join(tmpdir(), 'ws-sdk-k8s-secret-'));
    t.teardown(() => rmSync(d, { recursive: true, force: true }));
    writeFileSync(join(d, name), text);
    return join(d, name);
  }
  /** Makes every new Pod Ready a little after it is created, the way a healthy cluster would. */
  const autoReady = () => {
    api.onCreate = (pod) => {
      setTimeout(() => {
        const created = [...api.pods.values()].find((p) => p.metadata.labels?.[LABEL_CONVERSATION] === pod.metadata.labels?.[LABEL_CONVERSATION] && p.status?.phase === 'Pending');
        if (created) becomeReady(api, created.metadata.name);
      }, 30);
      return undefined;
    };
  };

  t.test('create: a plain Pod (the webhook adds the rest), watched until Ready, then exec through its agent', async (t) => {
    autoReady();
    api.collisions = 1;
    const ws = await backend.create('conv-1', { labels: { team: 'a' }, ttlSeconds: 600, allowedDomains: ['api.github.com'], resources: { cpu: '1', memory: '1Gi' } });
    t.equal(api.creates.length, 2, 'a generateName collision (409) is retried');
    const body = api.creates.at(-1)!;
    t.match(body, {
      metadata: {
        generateName: 'ws-', namespace: NS,
        labels: { team: 'a', [LABEL_OWNER]: 'test-backend', [LABEL_CONVERSATION]: 'conv-1' },
        annotations: { [ANNOTATION_TTL_SECONDS]: '600', 'workspace-sandbox.io/allowed-domains': 'api.github.com' },
      },
      spec: { restartPolicy: 'Never', containers: [{ name: CONTAINER_WORKSPACE, image: 'registry.example/workspace:1', resources: { limits: { cpu: '1', memory: '1Gi' } } }] },
    });
    const spec = body.spec as { containers: unknown[]; initContainers?: unknown; runtimeClassName?: unknown };
    t.equal(spec.containers.length, 1, 'one container: no sidecar rendered by the backend');
    t.equal((body.spec as { serviceAccountName?: string }).serviceAccountName, 'workspace-sandbox-workspace', 'the ServiceAccount of the Pod Identity association');
    t.notOk(spec.initContainers ?? spec.runtimeClassName, 'no injection done by the backend');
    t.match(ws, { backend: 'kubernetes', conversationId: 'conv-1', agent: { baseUrl: `http://127.0.0.1:${agent.target.port}` }, status: 'running' });
    t.ok(ws.readyAt);
    t.ok(api.requests.some((r) => r.includes('watch=true') && r.includes('allowWatchBookmarks=true')), 'the watch asks for bookmarks');
    t.notOk(api.requests.some((r) => r.startsWith(`GET /api/v1/namespaces/${NS}/pods/${ws.id}`)), 'readiness came from the watch, not from polling the Pod');

    t.match(await backend.exec(ws.id, ['sh', '-c', 'echo hi; exit 4']), { stdout: 'hi\n', exitCode: 4 });
    t.match(await backend.setRules(ws.id, [{ id: 'gh', hosts: ['api.github.com'] }]), { rules: [{ id: 'gh' }] });
    t.match(await backend.getRules(ws.id), { rules: [{ id: 'gh' }] });
    t.match(await backend.logs(ws.id, { tail: 2 }), /line 2\nline 3/);
    t.ok((await backend.list()).some((w) => w.id === ws.id && w.labels.team === 'a'));
    t.equal(await backend.isHealthy(ws.id), true);

    await backend.destroy(ws.id, { gracePeriodSeconds: 0 });
    t.ok(api.requests.some((r) => r.startsWith(`DELETE /api/v1/namespaces/${NS}/pods/${ws.id}`) && r.includes('gracePeriodSeconds=0')));
    await t.rejects(backend.get(ws.id), { code: 'WS_ERR_WORKSPACE_GONE' });
    await backend.destroy(ws.id); // 404: already gone, not an error
  });

  t.test('the watch survives bookmarks, a closed connection and a 410 Gone (relist)', async (t) => {
    api.onCreate = undefined;
    const pending = backend.create('conv-2');
    await waitUntil(() => [...api.pods.values()].some((p) => p.metadata.labels?.[LABEL_CONVERSATION] === 'conv-2'));
    const name = [...api.pods.values()].find((p) => p.metadata.labels?.[LABEL_CONVERSATION] === 'conv-2')!.metadata.name;
    api.bookmark();
    // History compacted and the watch closed: the client resumes from an expired resourceVersion,
    // gets 410 Gone, relists, and still sees the Pod turn Ready.
    api.update(name, (p) => { p.status = { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'True' }] }; });
    const compactedAt = api.requests.length;
    api.compact();
    becomeReady(api, name);
    const ws = await pending;
    t.equal(ws.id, name);
    const after = api.requests.slice(compactedAt);
    t.ok(after.some((r) => r.includes('watch=true')), 'the watch resumed');
    t.ok(after.some((r) => r.startsWith(`GET /api/v1/namespaces/${NS}/pods?`) && !r.includes('watch=true')), 'relisted after the 410 Gone');
    await backend.destroy(ws.id, { gracePeriodSeconds: 0 });
  });

  t.test('claim-time labels: a merge patch with a resourceVersion precondition, retried on 409 Conflict', async (t) => {
    autoReady();
    const ws = await backend.create(undefined, { pool: 'warm' });
    t.equal(ws.labels[LABEL_POOL], 'warm');
    // Someone else changes the Pod between our read and our patch: the first patch gets 409.
    api.concurrentWrites = 1;
    const before = api.requests.length;
    const assigned = await backend.assign(ws.id, 'conv-3', { tier: 'gold' });
    t.match(assigned, { conversationId: 'conv-3', labels: { tier: 'gold', [LABEL_CONVERSATION]: 'conv-3', [LABEL_POOL]: 'warm' } });
    t.equal(api.requests.slice(before).filter((r) => r.startsWith('PATCH')).length, 2, 'the 409 was retried with a fresh read');
    t.equal(api.pods.get(ws.id)!.metadata.labels![LABEL_CONVERSATION], 'conv-3');
    await t.rejects(backend.assign(ws.id, 'conv-4'), { code: 'WS_ERR_INVALID_OPTIONS' }, 'never re-assigned to another conversation');
    await backend.destroy(ws.id, { gracePeriodSeconds: 0 });
  });

  t.test('per-pod tokens: the backend mints /rules tokens the Pod\'s own proxy accepts', async (t) => {
    const keys = generatePodTokenKeys();
    const keyDir = mkdtempSync(join(tmpdir(), 'ws-sdk-k8s-keys-'));
    t.teardown(() => rmSync(keyDir, { recursive: true, force: true }));
    writeFileSync(join(keyDir, 'public.pem'), keys.publicKeyPem);
    const podUid = `uid-${process.pid}`;
    // The sidecar of that Pod: per-pod tokens only, scope = its UID (the webhook sets both).
    const sidecar = createProxy(loadProxyConfig({ PROXY_PORT: '0', ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', POD_TOKEN_PUBLIC_KEYS_FILE: join(keyDir, 'public.pem'), RULES_SCOPE: podUid, CA_DIR: keyDir }), {
      logger: createLogger({ name: 'credential-proxy', level: 'warn', destination: captureLogs().destination }),
      registry: createMetricsRegistry({ program: 'credential-proxy', defaultMetrics: false }),
    });
    const sidecarAddr = await sidecar.listen();
    const minting = new KubernetesBackend({
      kubeConfig: kubeConfig(api), namespace: NS, owner: 'test-backend', image: 'registry.example/workspace:1',
      defaultResources: { cpu: '500m', memory: '512Mi' }, maxResources: { cpu: '2', memory: '4Gi' }, readyTimeoutMs: 3_000,
      tokens: new PodTokenSource(keys.privateKeyPem), agentPort: agent.target.port, adminPort: sidecarAddr.admin.port!,
    });
    t.teardown(async () => {
      await minting.close();
      await sidecar.close();
    });
    autoReady();
    api.nextUids.push(podUid, 'uid-of-another-pod');
    const mine = await backend.create(undefined, { wait: false });
    const other = await backend.create(undefined, { wait: false });
    becomeReady(api, mine.id);
    becomeReady(api, other.id);
    t.match(await minting.setRules(mine.id, [{ id: 'gh', hosts: ['api.github.com'] }]), { rules: [{ id: 'gh' }] }, 'a token minted for this Pod opens its /rules');
    await t.rejects(minting.setRules(other.id, []), { code: 'WS_ERR_RULES_ERROR', details: { status: 401 } }, 'the token minted for another Pod does not open this proxy');
    await backend.destroy(mine.id, { gracePeriodSeconds: 0 });
    await backend.destroy(other.id, { gracePeriodSeconds: 0 });
  });

  t.test('typed errors: admission denial, quota, unschedulable, image pull, eviction', async (t) => {
    api.onCreate = () => ({ code: 403, reason: 'Forbidden', message: 'admission webhook "inject.workspace-sandbox.io" denied the request: spec.hostNetwork: host namespaces are not allowed' });
    const denied = await backend.create('conv-5').catch((e: unknown) => e);
    t.match(denied, { code: 'WS_ERR_ADMISSION_DENIED', details: { message: /host namespaces are not allowed/ } });
    api.onCreate = () => ({ code: 403, reason: 'Forbidden', message: 'pods "ws-abcde" is forbidden: exceeded quota: sandboxes-quota, requested: limits.cpu=1, used: limits.cpu=40, limited: limits.cpu=40' });
    await t.rejects(backend.create('conv-5'), { code: 'WS_ERR_QUOTA_EXCEEDED' });

    const withStatus = (conv: string, status: Record<string, unknown>) => {
      api.onCreate = (pod) => {
        setTimeout(() => {
          const p = [...api.pods.values()].find((x) => x.metadata.labels?.[LABEL_CONVERSATION] === conv);
          if (p) api.update(p.metadata.name, (q) => { q.status = status; });
        }, 20);
        void pod;
        return undefined;
      };
    };
    withStatus('conv-6', { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/3 nodes are available: 3 Insufficient cpu.' }] });
    await t.rejects(backend.create('conv-6', { timeoutMs: 300 }), { code: 'WS_ERR_UNSCHEDULABLE', message: /Insufficient cpu/ });
    withStatus('conv-7', { phase: 'Pending', containerStatuses: [{ name: CONTAINER_WORKSPACE, state: { waiting: { reason: 'ImagePullBackOff', message: 'Back-off pulling image' } } }] });
    await t.rejects(backend.create('conv-7', { timeoutMs: 300 }), { code: 'WS_ERR_IMAGE_PULL_FAILED' });
    withStatus('conv-8', { phase: 'Failed', reason: 'Evicted', message: 'The node was low on resource: memory.' });
    await t.rejects(backend.create('conv-8'), { code: 'WS_ERR_EVICTED' }, 'evicted while starting: at once, not at the timeout');
    t.equal([...api.pods.values()].filter((p) => !p.metadata.deletionTimestamp).length, 0, 'failed creates leave no Pod behind');
    api.onCreate = undefined;
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
