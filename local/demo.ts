// `npm run demo`: drives the running local stack (`npm start`) the way a cluster and a backend
// would, printing each step, and exits non-zero when a step does not behave as shown.
//  1. a plain Pod goes through the webhook; the injected Pod is shown as a readable diff;
//  2. a command run through the agent, with the injected workspace environment, reaches a fake
//     API through the proxy with a credential it never had, then is denied another host;
//  3. a rule added through /rules allows that host.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import jsonpatch from 'fast-json-patch';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { CA_BUNDLE_FILE, CONTAINER_PROXY, CONTAINER_WORKSPACE, HEADER_DENY_REASON, PROXY_URL, SHARED_DIR } from '../lib/constants.ts';
import { issueCertificate, loadCA } from '../lib/certs.ts';
import { loadLocalConfig } from './config.ts';
import { DEMO_HOSTS, runningStack, type StackState } from './stack.ts';

/** The command the demo runs in the workspace: an HTTPS GET through the proxy, curl -v style (Node only). */
const DEMO_CLIENT = fileURLToPath(new URL('./demo-client.ts', import.meta.url));
const fetchCommand = (url: string): string[] => [process.execPath, DEMO_CLIENT, url];

type Json = Record<string, unknown>;

class StepFailed extends Error {}

function check(ok: unknown, what: string): asserts ok {
  if (!ok) throw new StepFailed(what);
}

const out = (line = '') => process.stdout.write(`${line}\n`);
const indent = (text: string, by = '    ') => text.split('\n').map((l) => by + l).join('\n');

const NO_STACK = (stateDir: string) => `no local stack is running (state dir ${stateDir}): start one with 'npm start' in another terminal, then run the demo again`;

function loadState(stateDir: string): StackState {
  if (runningStack(stateDir) === undefined) throw new StepFailed(NO_STACK(stateDir));
  try {
    return JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as StackState;
  } catch {
    throw new StepFailed(`the running stack has no state in ${stateDir} yet: wait until 'npm start' prints "ready"`);
  }
}

function postJson(url: string, body: unknown, ca: string): Promise<{ status: number; json: Json }> {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = httpsRequest(url, { method: 'POST', ca, headers: { 'content-type': 'application/json', 'content-length': data.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) as Json });
        } catch (err) {
          reject(err as Error);
        }
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

function describeOp(op: jsonpatch.Operation): string {
  const value = 'value' in op ? JSON.stringify(op.value) : '';
  const short = value.length > 110 ? `${value.slice(0, 107)}...` : value;
  const sign = op.op === 'remove' ? '-' : op.op === 'add' ? '+' : '~';
  return `${sign} ${op.path}${short ? ` = ${short}` : ''}`;
}

async function stepInject(state: StackState, ca: string): Promise<Json> {
  out('Step 1. The backend creates a plain Pod; the webhook makes it a workspace');
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'conversation-42', namespace: 'sandboxes', labels: { app: 'workspace' } },
    spec: { containers: [{ name: CONTAINER_WORKSPACE, image: 'python:3.12-slim' }] },
  };
  const review = {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: randomUUID(),
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'sandboxes',
      operation: 'CREATE',
      object: pod,
    },
  };
  const { status, json } = await postJson(`${state.urls.webhook}/mutate`, review, ca);
  const response = json.response as { uid: string; allowed: boolean; patch?: string; warnings?: string[]; status?: { message?: string } } | undefined;
  check(status === 200 && response, `webhook answered HTTP ${status}`);
  check(response.uid === review.request.uid, 'webhook did not echo the request uid');
  check(response.allowed, `webhook denied the pod: ${response.status?.message ?? ''}`);
  check(response.patch, 'webhook returned no patch');
  const ops = JSON.parse(Buffer.from(response.patch, 'base64').toString()) as jsonpatch.Operation[];
  out(`  POST ${state.urls.webhook}/mutate → allowed, ${ops.length} patch operations:`);
  for (const op of ops) out(`    ${describeOp(op)}`);
  for (const w of response.warnings ?? []) out(`  warning: ${w}`);
  const injected = jsonpatch.applyPatch(structuredClone(pod) as Json, ops, true, false).newDocument as Json;
  const spec = injected.spec as { runtimeClassName?: string; initContainers?: Json[]; containers: Json[] };
  check(spec.initContainers?.[0]?.name === CONTAINER_PROXY && spec.initContainers[0].restartPolicy === 'Always', 'credential-proxy is not the first init container (native sidecar)');
  out(`  ✓ runtimeClassName=${spec.runtimeClassName ?? '(none)'}, ${CONTAINER_PROXY} native sidecar first, workspace hardened`);
  out();
  return injected;
}

/** The injected workspace container's environment, pointed at this machine's stack. */
function workspaceEnv(injected: Json, state: StackState): Record<string, string> {
  const spec = injected.spec as { containers: { name: string; env?: { name: string; value?: string }[] }[] };
  const container = spec.containers.find((c) => c.name === CONTAINER_WORKSPACE) ?? spec.containers[0]!;
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (e.value === undefined || e.name.startsWith('AGENT_')) continue;
    env[e.name] = e.value.split(PROXY_URL).join(state.urls.proxy).split(`${SHARED_DIR}/`).join(`${state.files.caDir}/`);
  }
  return env;
}

interface ExecResult { exitCode: number | null; reason: string; stdout: string; stderr: string }

async function execStreaming(state: StackState, cmd: string[], env: Record<string, string>): Promise<ExecResult> {
  const res = await fetch(`${state.urls.agent}/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/x-ndjson' },
    body: JSON.stringify({ cmd, env, timeoutMs: 20_000 }),
  });
  check(res.ok && res.body, `agent answered HTTP ${res.status}`);
  let stdout = '';
  let stderr = '';
  let exit: ExecResult | undefined;
  const lines = createInterface({ input: Readable.fromWeb(res.body as WebReadableStream) });
  for await (const line of lines) {
    if (!line) continue;
    const frame = JSON.parse(line) as { type: string; data?: string; exitCode?: number | null; reason?: string };
    if (frame.type === 'stdout') stdout += frame.data ?? '';
    else if (frame.type === 'stderr') stderr += frame.data ?? '';
    else if (frame.type === 'exit') exit = { exitCode: frame.exitCode ?? null, reason: frame.reason ?? '', stdout, stderr };
  }
  check(exit, 'the agent stream ended without its exit frame');
  return exit;
}

function startFakeApi(state: StackState): Promise<Server> {
  // Serve under the stack's local CA, which the proxy trusts for upstreams (UPSTREAM_CA_FILE).
  const ca = loadCA(readFileSync(state.files.devCa, 'utf8'), readFileSync(state.files.devCaKey, 'utf8'));
  const leaf = issueCertificate(ca, { hosts: [DEMO_HOSTS.credentialed, DEMO_HOSTS.open], validityMs: 3600_000 });
  const server = createServer({ cert: leaf.certPem, key: leaf.keyPem }, (req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(`${JSON.stringify({ api: req.headers.host, path: req.url, authorization: req.headers.authorization ?? null })}\n`);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(state.demoApiPort, '127.0.0.1', () => resolve(server));
  });
}

async function stepCredential(state: StackState, env: Record<string, string>): Promise<void> {
  out('Step 2. A command in the workspace calls an API through the proxy, holding no credential');
  const token = readFileSync(state.files.demoApiToken, 'utf8').trim();
  check(!Object.values(env).some((v) => v.includes(token)), 'the workspace environment contains the credential');
  out('  workspace environment (from the injected Pod):');
  for (const name of ['HTTPS_PROXY', 'NO_PROXY', 'SSL_CERT_FILE', 'CURL_CA_BUNDLE']) if (env[name]) out(`    ${name}=${env[name]}`);
  const url = `https://${DEMO_HOSTS.credentialed}:${state.demoApiPort}/v1/whoami`;
  const cmd = fetchCommand(url);
  out(`  agent /execute (streaming): an HTTPS GET of ${url} through $HTTPS_PROXY`);
  const r = await execStreaming(state, cmd, env);
  out(indent(`${r.stdout.trim()}${r.stderr ? `\n${r.stderr.trim()}` : ''}`));
  check(r.exitCode === 0, `the command exited ${r.exitCode} (${r.reason}): ${r.stderr.trim().split('\n').slice(-2).join(' ')}`);
  const echoed = JSON.parse(r.stdout) as { authorization: string | null };
  check(echoed.authorization === `Bearer ${token}`, 'the API did not receive the credential the proxy holds');
  out('  ✓ the API received the proxy\'s credential; the command never had it');
  out();
}

async function getOpenHost(state: StackState, env: Record<string, string>): Promise<ExecResult> {
  return execStreaming(state, fetchCommand(`https://${DEMO_HOSTS.open}:${state.demoApiPort}/hello`), env);
}

async function stepDenied(state: StackState, env: Record<string, string>): Promise<void> {
  out(`  Now a host no rule allows: GET https://${DEMO_HOSTS.open}:${state.demoApiPort}/hello`);
  const r = await getOpenHost(state, env);
  const shown = r.stderr.split('\n').filter((l) => /< HTTP\/|deny-reason|CONNECT tunnel failed/i.test(l));
  out(indent(shown.join('\n')));
  check(r.exitCode !== 0, 'the denied host was reachable');
  check(new RegExp(HEADER_DENY_REASON, 'i').test(r.stderr), `the proxy gave no ${HEADER_DENY_REASON} header`);
  out('  ✓ denied, and the proxy says why');
  out();
}

async function stepRules(state: StackState, env: Record<string, string>): Promise<void> {
  out('Step 3. The backend allows that host through the /rules API');
  const token = readFileSync(state.files.rulesToken, 'utf8').trim();
  const rule = { id: 'demo-open', hosts: [DEMO_HOSTS.open], ports: [state.demoApiPort], allowPrivate: true };
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  // Re-runs start clean: a rule left by an interrupted run is replaced.
  await fetch(`${state.urls.proxyAdmin}/rules/${rule.id}`, { method: 'DELETE', headers });
  const added = await fetch(`${state.urls.proxyAdmin}/rules`, { method: 'POST', headers, body: JSON.stringify(rule) });
  const addedBody = await added.text();
  out(`  POST ${state.urls.proxyAdmin}/rules ${JSON.stringify(rule)} → ${added.status}`);
  check(added.ok, `adding the rule failed: ${added.status} ${addedBody}`);
  try {
    const r = await getOpenHost(state, env);
    out(indent(r.stdout.trim()));
    check(r.exitCode === 0, `the command exited ${r.exitCode}: ${r.stderr.split('\n').slice(-3).join(' ')}`);
    const echoed = JSON.parse(r.stdout) as { authorization: string | null };
    check(echoed.authorization === null, 'a tunnel-only rule must not add a credential');
    out('  ✓ now allowed (a plain tunnel: no interception, no credential added)');
  } finally {
    await fetch(`${state.urls.proxyAdmin}/rules/${rule.id}`, { method: 'DELETE', headers });
  }
  out();
}

export async function main(): Promise<number> {
  const config = loadLocalConfig();
  const state = loadState(config.stateDir);
  const ca = readFileSync(state.files.devCa, 'utf8');
  let api: Server;
  try {
    api = await startFakeApi(state);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StepFailed(code === 'EADDRINUSE'
      ? `port ${state.demoApiPort} of the demo's fake API is in use by another program: start the stack with LOCAL_DEMO_API_PORT set to a free port`
      : `cannot serve the demo's fake API: ${(err as Error).message}`);
  }
  try {
    const injected = await stepInject(state, ca);
    const env = workspaceEnv(injected, state);
    check(env.HTTPS_PROXY && readFileSync(join(state.files.caDir, CA_BUNDLE_FILE)), 'injected environment has no HTTPS_PROXY or the proxy has not written its CA bundle');
    await stepCredential(state, env);
    await stepDenied(state, env);
    await stepRules(state, env);
    out('Demo complete: every step behaved as shown.');
    return 0;
  } finally {
    await new Promise((r) => api.close(r));
  }
}

if (import.meta.main) {
  main().then((code) => process.exit(code), (err: unknown) => {
    const refused = (err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED' || (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
    const message = refused ? NO_STACK(loadLocalConfig().stateDir) : (err as Error).message;
    process.stderr.write(`\ndemo FAILED: ${message}\n`);
    process.exit(1);
  });
}
