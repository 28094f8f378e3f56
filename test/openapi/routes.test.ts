// Route coverage: the routes the running servers answer are exactly the operations the OpenAPI
// documents list. Neither server has a router to introspect (both route by hand over node:http),
// so the candidates come from their route tables (lib/constants.ts AGENT_PATHS and
// PROXY_ADMIN_PATHS, which the servers route on), from the documents, and from plausible paths,
// each also upper-cased and with a trailing slash; each candidate is probed with every method.
// A probe is "not a route" when the server answers 404 WS_ERR_NOT_FOUND while every resource
// the probe could name exists (fixtures are reset before each probe), or 405.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AGENT_PATHS, PROXY_ADMIN_PATHS } from '../../lib/constants.ts';
import { loadSpec, matchPath, operations, SPEC_FILES, type Spec } from './spec.ts';
import { startAgent, startProxy } from './servers.ts';

const PROBE_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const;
/** Paths a server might plausibly answer although no document or table names them. */
const GUESSES = ['/', '/metrics', '/healthz', '/readyz', '/health', '/ready', '/version', '/status', '/openapi.json', '/exec', '/api', '/v1/execute', '/rules', '/execute', '/files', '/files/', '/debug/pprof'];

interface Probe {
  method: string;
  path: string;
  status: number;
  code: string | undefined;
  allow: string | null;
}

/** Each path as given, upper-cased and with a trailing slash. */
function variants(paths: string[]): string[] {
  return [...new Set(paths.flatMap((p) => [p, p.toUpperCase(), p.endsWith('/') ? p : `${p}/`]))];
}

/** `/files/{path}` → a concrete path whose resources the fixtures create. */
function instantiate(template: string, values: Record<string, string>): string {
  return template.replace(/\{([^}]+)\}/g, (_m, name: string) => values[name] ?? 'probe');
}

async function probe(base: string, method: string, path: string, token: string, reset: () => Promise<void> | void): Promise<Probe> {
  await reset();
  const hasBody = method === 'POST' || method === 'PUT' || method === 'PATCH';
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(hasBody ? { 'content-type': 'application/json' } : {}) },
    ...(hasBody ? { body: '{}' } : {}),
  });
  const text = await res.text();
  let code: string | undefined;
  try {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  } catch {
    code = undefined;
  }
  return { method, path, status: res.status, code, allow: res.headers.get('allow') };
}

function answered(p: Probe): boolean {
  if (p.status === 405) return false;
  if (p.status === 404 && (p.method === 'HEAD' || p.code === 'WS_ERR_NOT_FOUND')) return false;
  return true;
}

/** `METHOD template` of every documented operation. A HEAD answer counts as the GET route (RFC 9110 §9.3.2). */
function documented(spec: Spec): Set<string> {
  return new Set(operations(spec).map(({ method, path }) => `${method.toUpperCase()} ${path}`));
}

/** Every answered route documented, every documented route answered. */
function compare(t: Test, spec: Spec, probes: Probe[]): void {
  const docs = documented(spec);
  const answeredRoutes = new Set<string>();
  for (const p of probes) {
    if (!answered(p)) continue;
    const match = matchPath(spec, p.path);
    if (!match) {
      t.fail(`${p.method} ${p.path} answers ${p.status} but no path of the document matches it`);
      continue;
    }
    const method = p.method === 'HEAD' && !docs.has(`HEAD ${match.template}`) ? 'GET' : p.method;
    const key = `${method} ${match.template}`;
    answeredRoutes.add(key);
    t.ok(docs.has(key), `${p.method} ${p.path} answers ${p.status}${p.code ? ` ${p.code}` : ''}: documented as ${key}`);
  }
  for (const key of docs) t.ok(answeredRoutes.has(key), `documented ${key} is answered by the server`);
}

t.test('agent: answered routes == documented operations', async (t) => {
  const TOKEN = 'agent-route-probe-token-0123456789';
  const a = await startAgent(t, { token: TOKEN });
  const spec = loadSpec(SPEC_FILES.agent);
  // The agent has no router: its route table is AGENT_PATHS; `/files` also routes every path below it.
  const fromTable = Object.values(AGENT_PATHS).flatMap((p) => [p, `${p}/probe.txt`, `${p}/probe-dir/probe.txt`, `${p}/x`]);
  const fromSpec = Object.keys(spec.paths).flatMap((p) => [instantiate(p, { path: 'probe.txt' }), instantiate(p, { path: 'probe-dir/probe.txt' })]);
  const paths = variants([...fromTable, ...fromSpec, ...GUESSES]);
  t.ok(paths.includes('/files/probe.txt') && paths.includes('/execute') && paths.includes('/health'));
  const reset = () => {
    writeFileSync(join(a.root, 'probe.txt'), 'probe');
    mkdirSync(join(a.root, 'probe-dir'), { recursive: true });
    writeFileSync(join(a.root, 'probe-dir', 'probe.txt'), 'probe');
  };
  const probes: Probe[] = [];
  for (const path of paths) for (const method of PROBE_METHODS) probes.push(await probe(a.url!, method, path, TOKEN, reset));
  t.ok(probes.some((p) => p.status === 404 && p.code === 'WS_ERR_NOT_FOUND'), 'unknown paths are refused (the probe can tell)');
  t.same(probes.filter((p) => p.status === 405 && !p.allow).map((p) => `${p.method} ${p.path}`), [], '405 answers name the allowed methods (RFC 9110 §15.5.6)');
  compare(t, spec, probes);

  // Without the token every path but /health is 401: the token check comes before routing.
  const anon = await fetch(`${a.url}/no-such-route`);
  t.equal(anon.status, 401);
});

t.test('proxy admin: answered routes == documented operations', async (t) => {
  const TOKEN = 'proxy-route-probe-token-0123456789';
  const p = await startProxy(t, { tokens: [`probe:${TOKEN}`] });
  const spec = loadSpec(SPEC_FILES.proxyAdmin);
  const fromSpec = Object.keys(spec.paths).map((path) => instantiate(path, { id: 'probe' }));
  const fromTable = Object.values(PROXY_ADMIN_PATHS).flatMap((x) => [x, `${x}/probe`, `${x}/probe/x`]);
  const paths = variants([...fromSpec, ...fromTable, ...GUESSES]);
  // The rules `probe` and `PROBE` exist before every probe, so DELETE /rules/probe can only 404
  // for want of a route.
  const reset = async () => {
    await p.proxy.store.write((rules) => [...rules.filter((r) => r.id.toLowerCase() !== 'probe'), { id: 'probe', hosts: ['probe.example.com'] }, { id: 'PROBE', hosts: ['probe.example.com'] }]);
  };
  const probes: Probe[] = [];
  for (const path of paths) for (const method of PROBE_METHODS) probes.push(await probe(p.adminUrl, method, path, TOKEN, reset));
  t.ok(probes.some((x) => x.status === 404 && x.code === 'WS_ERR_NOT_FOUND'), 'unknown paths are refused (the probe can tell)');
  compare(t, spec, probes);
  const noAllow = probes.filter((x) => x.status === 405 && !x.allow).map((x) => `${x.method} ${x.path}`);
  t.same(noAllow, [], '405 answers name the allowed methods (RFC 9110 §15.5.6)');
});
