// Property-based fuzzing of a live proxy (both listeners, with TLS interception as main.ts wires
// it): CONNECT authorities, absolute-form URLs, Host headers, raw header blocks, requests inside an
// intercepted tunnel, and JSON bodies to /rules. Whatever arrives, the proxy answers (or closes
// that one connection), never with a 500, never by an unexpected error (the guard's counter stays
// at zero: a guarded crash is still a bug), and still answers /healthz and an allowed CONNECT.
// Fixed seed and bounded runs here; FUZZ_RUNS / FUZZ_SEED for longer runs (test/helpers/fuzz.ts).
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type { Registry } from 'prom-client';
import { UNEXPECTED_ERRORS_METRIC } from '../../lib/guard.ts';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { loadProxyConfig } from '../../credential-proxy/config.ts';
import { createInterceptor } from '../../credential-proxy/intercept.ts';
import { createProxy } from '../../credential-proxy/server.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { makeTestPki } from '../helpers/tls.ts';
import {
  absoluteUrl, authority, fuzzParameters, headerBlock, hostish, jsonBody, method, rawRequest, sendRaw, statusOf, stillServing,
} from '../helpers/fuzz.ts';
import { IN_PROCESS_PROXY_ENV, openTunnel, startUpstreams, testResolver } from './fixtures/proxy-harness.ts';
import { startUpstream } from './fixtures/intercept-upstream.ts';

const TOKEN = 'fuzz-rules-token-0123456789abcdef';
const SECRET = 'sk-fuzz-secret-value-5566';
const API = 'api.example.test';

async function startStack(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'ws-fuzz-'));
  const up = await startUpstreams(t);
  const pki = makeTestPki([API]);
  writeFileSync(join(dir, 'upstream-ca.pem'), pki.caPem);
  const api = await startUpstream(pki);
  t.teardown(() => api.close());
  writeFileSync(join(dir, 'rules.json'), JSON.stringify([
    { id: 'plain', hosts: ['upstream.test', '*.wild.test'], ports: [up.httpPort, up.httpsPort], allowPrivate: true },
    { id: 'api', hosts: [API], ports: [api.port], allowPrivate: true, credential: 'api' },
  ]));
  writeFileSync(join(dir, 'credentials.json'), JSON.stringify({ credentials: { api: { hosts: [API], type: 'header', header: 'authorization', value: { env: 'API_SECRET' }, format: 'Bearer {value}' } } }));
  writeFileSync(join(dir, 'tokens'), `backend:${TOKEN}\n`);
  const config = loadProxyConfig({
    ...IN_PROCESS_PROXY_ENV,
    PROXY_PORT: '0', ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', LOG_LEVEL: 'debug', POD_NAME: 'ws-fuzz',
    RULES_FILE: join(dir, 'rules.json'), RULES_TOKEN_FILE: join(dir, 'tokens'), CREDENTIALS_FILE: join(dir, 'credentials.json'), CA_DIR: join(dir, 'shared'),
    UPSTREAM_CA_FILE: join(dir, 'upstream-ca.pem'), HEADER_TIMEOUT_MS: '2000', UPSTREAM_CONNECT_TIMEOUT_MS: '500',
  });
  const logs = captureLogs();
  const logger = createLogger({ name: 'credential-proxy', level: 'debug', destination: logs.destination });
  const registry = createMetricsRegistry({ program: 'credential-proxy', defaultMetrics: false });
  const interceptor = createInterceptor(config, { logger, registry, env: { API_SECRET: SECRET } });
  const proxy = createProxy(config, { logger, registry, resolver: testResolver(), interceptor });
  const bound = await proxy.listen();
  t.teardown(() => proxy.close());
  await interceptor.ready;
  return { up, api, registry, logs, interceptor, port: bound.proxy.port!, adminPort: bound.admin.port! };
}

type Stack = Awaited<ReturnType<typeof startStack>>;

async function unexpectedErrors(registry: Registry): Promise<number> {
  const m = registry.getSingleMetric(UNEXPECTED_ERRORS_METRIC);
  if (!m) return 0;
  return (await m.get()).values.reduce((n, v) => n + v.value, 0);
}

/** After a property: nothing crashed, nothing was a bug, both listeners serve. */
async function healthy(t: Test, s: Stack) {
  t.equal(await unexpectedErrors(s.registry), 0, 'no unexpected error was caught by a guard');
  t.ok(await stillServing({ port: s.adminPort }), 'admin still answers /healthz');
  const { socket } = await openTunnel(s.port, `upstream.test:${s.up.httpPort}`);
  socket.destroy();
  t.pass('proxy still opens an allowed tunnel');
}

/** The property each exchange must hold: an answer that is not a 5xx of our own making, or a close. */
function acceptable(status: number): boolean {
  return status === 0 || (status >= 100 && status < 600 && status !== 500);
}

t.test('fuzz: the proxy listener and the admin API survive whatever they are sent', async (t) => {
  const s = await startStack(t);
  const proxy = { port: s.port };
  const admin = { port: s.adminPort };

  t.test('CONNECT authority', async (t) => {
    await fc.assert(fc.asyncProperty(authority, fc.boolean(), async (a, withHost) => {
      const reply = await sendRaw(proxy, rawRequest('CONNECT', a, withHost ? [`Host: ${a}`] : []), { idleMs: 50 });
      if (!acceptable(reply.status)) throw new Error(`CONNECT ${JSON.stringify(a)} → ${reply.status}`);
    }), fuzzParameters(300));
    await healthy(t, s);
  });

  t.test('absolute-form URLs with any method and Host header', async (t) => {
    await fc.assert(fc.asyncProperty(method, absoluteUrl, fc.option(hostish, { nil: undefined }), async (m, url, host) => {
      const lines = host === undefined ? ['Connection: close'] : [`Host: ${host}`, 'Connection: close'];
      const reply = await sendRaw(proxy, rawRequest(m, url, lines), { idleMs: 50 });
      if (!acceptable(reply.status)) throw new Error(`${m} ${JSON.stringify(url)} Host ${JSON.stringify(host)} → ${reply.status}`);
    }), fuzzParameters(300));
    await healthy(t, s);
  });

  t.test('Host headers on an allowed absolute-form request', async (t) => {
    const url = `http://upstream.test:${s.up.httpPort}/`;
    await fc.assert(fc.asyncProperty(authority, async (host) => {
      const reply = await sendRaw(proxy, rawRequest('GET', url, [`Host: ${host}`, 'Connection: close']), { idleMs: 50 });
      if (!acceptable(reply.status)) throw new Error(`Host ${JSON.stringify(host)} → ${reply.status}`);
    }), fuzzParameters(300));
    await healthy(t, s);
  });

  t.test('raw header blocks on CONNECT and plain requests', async (t) => {
    const targets = [`upstream.test:${s.up.httpPort}`, `http://upstream.test:${s.up.httpPort}/echo`];
    await fc.assert(fc.asyncProperty(fc.constantFrom(...targets), headerBlock, fc.string({ maxLength: 64 }), async (target, lines, body) => {
      const m = target.startsWith('http') ? 'POST' : 'CONNECT';
      const reply = await sendRaw(proxy, rawRequest(m, target, lines, body), { idleMs: 50, end: true });
      if (!acceptable(reply.status)) throw new Error(`${m} ${target} ${JSON.stringify(lines)} → ${reply.status}`);
    }), fuzzParameters(300));
    await healthy(t, s);
  });

  t.test('requests inside an intercepted tunnel', async (t) => {
    const ca = s.interceptor.ca!.certPem;
    const inTunnel = async (payload: Buffer): Promise<number> => {
      const { socket } = await openTunnel(s.port, `${API}:${s.api.port}`);
      const tls = tlsConnect({ socket, servername: API, ca, ALPNProtocols: ['http/1.1'] });
      return new Promise((resolve) => {
        let raw = '';
        const done = () => { clearTimeout(timer); tls.destroy(); resolve(statusOf(raw)); };
        const timer = setTimeout(done, 3000);
        tls.setEncoding('latin1');
        tls.on('data', (c: string) => { raw += c; if (/\r\n\r\n/.test(raw)) setTimeout(done, 20); });
        tls.on('error', done);
        tls.on('close', done);
        tls.once('secureConnect', () => tls.write(payload));
      });
    };
    await fc.assert(fc.asyncProperty(method, fc.option(authority, { nil: undefined }), headerBlock, fc.constantFrom('/', '/v1/x', '*', 'http://x/', '/%2e%2e/'), async (m, host, lines, path) => {
      const status = await inTunnel(rawRequest(m, path, [...(host === undefined ? [] : [`Host: ${host}`]), ...lines, 'Connection: close']));
      if (!acceptable(status)) throw new Error(`in tunnel: ${m} ${path} Host ${JSON.stringify(host)} ${JSON.stringify(lines)} → ${status}`);
    }), fuzzParameters(60));
    await healthy(t, s);
  });

  t.test('admin API: JSON bodies, paths and headers, with and without the token', async (t) => {
    const paths = fc.oneof(fc.constant('/rules'), hostish.map((h) => `/rules/${encodeURIComponent(h)}`), fc.webPath().map((p) => `/rules${p}`), fc.constantFrom('/rules/%', '/rules/%zz', '/RULES/', '/healthz', '/metrics'));
    await fc.assert(fc.asyncProperty(fc.constantFrom('GET', 'PUT', 'POST', 'DELETE', 'PATCH', 'HEAD'), paths, jsonBody, fc.boolean(), headerBlock, async (m, path, body, withToken, lines) => {
      const text = JSON.stringify(body) ?? '';
      const headers = [`Host: 127.0.0.1:${s.adminPort}`, 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(text)}`, 'Connection: close',
        ...(withToken ? [`Authorization: Bearer ${TOKEN}`] : []), ...lines.filter((l) => !/^(content-length|transfer-encoding|host)\s*:/i.test(l))];
      const reply = await sendRaw(admin, rawRequest(m, path, headers, text), { idleMs: 50 });
      if (!acceptable(reply.status)) throw new Error(`${m} ${path} ${text.slice(0, 200)} → ${reply.status}`);
    }), fuzzParameters(300));
    await healthy(t, s);
  });

  t.test('admin API: raw header blocks', async (t) => {
    await fc.assert(fc.asyncProperty(method, headerBlock, async (m, lines) => {
      const reply = await sendRaw(admin, rawRequest(m, '/rules', lines), { idleMs: 50, end: true });
      if (!acceptable(reply.status)) throw new Error(`${m} /rules ${JSON.stringify(lines)} → ${reply.status}`);
    }), fuzzParameters(200));
    await healthy(t, s);
  });
});
