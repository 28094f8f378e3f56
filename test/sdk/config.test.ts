// The SDK's pure parts: its configuration, per-workspace tokens, resource and label checks, the
// mapping of Kubernetes API errors and Pod states onto the typed errors.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ApiException } from '@kubernetes/client-node';
import { ConfigError } from '../../lib/config.ts';
import { generatePodTokenKeys, PodTokenVerifier } from '../../lib/pod-token.ts';
import { loadSdkConfig } from '../../sdk/config.ts';
import { apiFailure, classifyPod } from '../../sdk/kubernetes-backend.ts';
import { workspaceLabels } from '../../sdk/labels.ts';
import { domainRules } from '../../sdk/pool.ts';
import { parseQuantity } from '../../lib/quantity.ts';
import { resolveResources } from '../../sdk/resources.ts';
import { PodTokenSource } from '../../sdk/tokens.ts';

t.test('configuration: defaults, every problem at once, secrets read from files', async (t) => {
  const c = loadSdkConfig({});
  t.match(c, { CONTAINER_BACKEND: 'docker', WORKSPACE_OWNER: 'backend', POOL_MIN: 0, POOL_MAX: 0, KUBE_NAMESPACE: 'sandboxes' });
  const err = t.throws(() => loadSdkConfig({ CONTAINER_BACKEND: 'nomad', POOL_MIN: '5', POOL_MAX: '2', WORKSPACE_MAX_CPU: 'lots', DOCKER_HOST: 'tcp://1.2.3.4:2375' })) as ConfigError;
  t.ok(err instanceof ConfigError);
  t.same(err.problems.map((p) => p.field).sort(), ['CONTAINER_BACKEND', 'DOCKER_HOST', 'WORKSPACE_MAX_CPU'].sort(), 'field errors first');
  const pool = t.throws(() => loadSdkConfig({ POOL_MIN: '5', POOL_MAX: '2' })) as ConfigError;
  t.same(pool.problems.map((p) => p.field).sort(), ['POOL_MAX', 'REDIS_URL']);
  const dir = mkdtempSync(join(tmpdir(), 'ws-sdk-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'rules'), 'backend:s3cr3t-token\nother:x\n');
  t.equal(loadSdkConfig({ RULES_TOKEN_FILE: join(dir, 'rules') }).rulesToken, 's3cr3t-token', 'the proxy\'s id:token format');
  t.throws(() => loadSdkConfig({ POD_TOKEN_PRIVATE_KEY_FILE: join(dir, 'absent') }), { code: 'WS_ERR_CONFIG_INVALID' });
});

t.test('per-workspace tokens: one per purpose and workspace, verifiable by that workspace only, reused', async (t) => {
  const keys = generatePodTokenKeys();
  const dir = mkdtempSync(join(tmpdir(), 'ws-sdk-tokens-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'public.pem'), keys.publicKeyPem);
  const verifier = new PodTokenVerifier(join(dir, 'public.pem'));
  const tokens = new PodTokenSource(keys.privateKeyPem);
  const agentA = await tokens.token('agent', 'uid-a');
  t.equal(await tokens.token('agent', 'uid-a'), agentA, 'cached');
  t.match(await verifier.verify(agentA, { purpose: 'agent', podUid: 'uid-a' }), { ok: true });
  t.match(await verifier.verify(agentA, { purpose: 'agent', podUid: 'uid-b' }), { ok: false, reason: /another pod/ });
  t.match(await verifier.verify(agentA, { purpose: 'rules', podUid: 'uid-a' }), { ok: false });
  t.match(await verifier.verify(await tokens.token('rules', 'uid-a'), { purpose: 'rules', podUid: 'uid-a' }), { ok: true });
});

t.test('resources, labels, domains', async (t) => {
  t.equal(parseQuantity('500m'), 0.5);
  t.equal(parseQuantity('2Gi'), 2 * 2 ** 30);
  t.equal(parseQuantity('1e3'), 1000, 'the webhook\'s grammar: what Kubernetes accepts, the SDK accepts');
  t.equal(parseQuantity('2 Gi'), undefined);
  const max = { cpu: '2', memory: '4Gi' };
  t.match(resolveResources({ cpu: '250m' }, { cpu: '1', memory: '1Gi' }, max), { cpu: 0.25, memoryBytes: 2 ** 30 });
  t.throws(() => resolveResources({ cpu: '3', memory: '-1' }, { cpu: '1', memory: '1Gi' }, max), { code: 'WS_ERR_INVALID_OPTIONS', details: [/above the allowed 2/, /not a positive quantity/] });
  t.throws(() => resolveResources({ cpu: '0.4n', memory: '1m' }, { cpu: '1', memory: '1Gi' }, max), { code: 'WS_ERR_INVALID_OPTIONS', details: [/below 1m/, /below 6Mi/] }, 'limits that round to zero (no limit) are refused');
  t.throws(() => workspaceLabels({ owner: 'b', conversationId: undefined, pool: undefined, labels: { 'workspace-sandbox.io/conversation': 'steal' } }), { code: 'WS_ERR_INVALID_OPTIONS' });
  t.throws(() => workspaceLabels({ owner: 'b', conversationId: undefined, pool: undefined, labels: { ok: 'bad value!' } }), { code: 'WS_ERR_INVALID_OPTIONS' });
  t.same(domainRules(['a.example.com', '*.b.example.com:8443']), [
    { id: 'allowed-domain-0', hosts: ['a.example.com'] },
    { id: 'allowed-domain-1', hosts: ['*.b.example.com'], ports: [8443] },
  ]);
});

t.test('Kubernetes API errors and Pod states become typed errors', async (t) => {
  const api = (code: number, message: string, reason = 'Forbidden') => new ApiException(code, 'x', JSON.stringify({ kind: 'Status', code, reason, message }), {});
  t.match(apiFailure(api(403, 'admission webhook "inject.workspace-sandbox.io" denied the request: privileged'), 'create'), { code: 'WS_ERR_ADMISSION_DENIED', details: { message: /privileged/ } });
  t.match(apiFailure(api(403, 'pods "ws-x" is forbidden: violates PodSecurity "restricted:latest": hostPath volumes'), 'create'), { code: 'WS_ERR_ADMISSION_DENIED' });
  t.match(apiFailure(api(403, 'pods "ws-x" is forbidden: exceeded quota: workspaces'), 'create'), { code: 'WS_ERR_QUOTA_EXCEEDED' });
  t.match(apiFailure(api(403, 'pods is forbidden: User "system:serviceaccount:backend:x" cannot create resource "pods"'), 'create'), { code: 'WS_ERR_BACKEND_UNAVAILABLE' });
  t.match(apiFailure(api(404, 'pods "ws-x" not found', 'NotFound'), 'get'), { code: 'WS_ERR_WORKSPACE_GONE' });
  t.match(apiFailure(new Error('connect ECONNREFUSED'), 'get'), { code: 'WS_ERR_BACKEND_UNAVAILABLE' });

  const pod = (status: object, metadata: object = {}) => ({ metadata: { name: 'ws-x', ...metadata }, status });
  t.same(classifyPod(pod({ phase: 'Running', podIP: '10.0.0.1', conditions: [{ type: 'Ready', status: 'True' }] })), { ready: true });
  t.match(classifyPod(pod({ phase: 'Running', conditions: [{ type: 'DisruptionTarget', status: 'True', reason: 'PreemptionByScheduler' }] })), { fatal: { code: 'WS_ERR_EVICTED' } });
  t.match(classifyPod(pod({ phase: 'Pending', containerStatuses: [{ name: 'workspace', state: { waiting: { reason: 'InvalidImageName' } } }] })), { fatal: { code: 'WS_ERR_IMAGE_PULL_FAILED' } });
  const pending = classifyPod(pod({ phase: 'Pending', containerStatuses: [{ name: 'workspace', state: { waiting: { reason: 'ErrImagePull' } } }] }));
  t.match(pending, { ready: false, fatal: undefined }, 'a pull error may still heal: wait');
  t.match(pending.ready ? undefined : pending.onTimeout(), { code: 'WS_ERR_IMAGE_PULL_FAILED' }, '...until the timeout');
  t.match(classifyPod(pod({ phase: 'Running' }, { deletionTimestamp: new Date() })), { fatal: { code: 'WS_ERR_WORKSPACE_GONE' } });
  t.match(classifyPod(pod({ phase: 'Failed', containerStatuses: [{ name: 'workspace', state: { terminated: { exitCode: 1, reason: 'Error' } } }] })), { fatal: { code: 'WS_ERR_WORKSPACE_FAILED' } });
});
