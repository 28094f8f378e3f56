// The credential proxy chained through the egress gateway: with GATEWAY_URL set, every upstream
// connection (plain tunnels, forwarded plain HTTP, intercepted requests with credential injection)
// is a CONNECT through the gateway carrying the pod's token, and the proxy resolves nothing itself.
// The gateway's Kubernetes API is the stand-in of kube-api-stand-in.ts; the gateway's dials of the
// lab address 198.51.100.10 reach local upstreams (HTTPS on 443, plain HTTP on 80).
import t from 'tap';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HEADER_DENY_REASON } from '../../lib/constants.ts';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { AUDIT_MSG } from '../../credential-proxy/audit.ts';
import { loadProxyConfig } from '../../credential-proxy/config.ts';
import { createInterceptor } from '../../credential-proxy/intercept.ts';
import { createProxy } from '../../credential-proxy/server.ts';
import { createUpstream, gatewayEndpoint } from '../../credential-proxy/upstream.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { listenLocal, closeServer } from '../helpers/listen.ts';
import { makeTestPki } from '../helpers/tls.ts';
import { IN_PROCESS_PROXY_ENV } from '../credential-proxy/fixtures/proxy-harness.ts';
import { startGateway } from './harness.ts';

const run = promisify(execFile);
const API_SECRET = 'chained-api-secret-0123456789';

t.test('every kind of upstream connection goes through the gateway with the pod\'s token', async (t) => {
  const dir = t.testdir();
  const pki = makeTestPki(['api.lab.test', 'secret.lab.test']);
  const https = createHttpsServer({ cert: pki.certPem, key: pki.keyPem }, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ tls: true, path: req.url, auth: req.headers.authorization ?? null }));
  });
  const http = createHttpServer((req, res) => res.end(JSON.stringify({ tls: false, path: req.url })));
  const httpsPort = (await listenLocal(https)).port;
  const httpPort = (await listenLocal(http)).port;
  t.teardown(() => Promise.all([closeServer(https), closeServer(http)]));

  const g = await startGateway(t, { GATEWAY_CEILING: '*.lab.test,*.lab.test:80' }, {
    connect: (target) => {
      g.dialled.push(`${target.host}:${target.port}`);
      return netConnect({ host: '127.0.0.1', port: target.port === 443 ? httpsPort : httpPort, onread: target.onread });
    },
  });
  const tokenFile = join(dir, 'gateway-token');
  writeFileSync(tokenFile, `${g.api.mint(g.pod)}\n`);
  writeFileSync(join(dir, 'upstream-ca.pem'), pki.caPem);
  writeFileSync(join(dir, 'rules.json'), JSON.stringify([
    { id: 'plain', hosts: ['api.lab.test', 'outside.example.com'], ports: [443, 80] },
    { id: 'inject', hosts: ['secret.lab.test'], credential: 'api' },
  ]));
  writeFileSync(join(dir, 'credentials.json'), JSON.stringify({
    credentials: { api: { hosts: ['secret.lab.test'], type: 'header', header: 'authorization', value: { env: 'API_SECRET' }, format: 'Bearer {value}' } },
  }));
  const config = loadProxyConfig({
    ...IN_PROCESS_PROXY_ENV,
    PROXY_PORT: '0', ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.1', POD_NAME: 'pod-a', RULES_FILE: join(dir, 'rules.json'), CREDENTIALS_FILE: join(dir, 'credentials.json'),
    CA_DIR: join(dir, 'shared'), UPSTREAM_CA_FILE: join(dir, 'upstream-ca.pem'),
    GATEWAY_URL: `http://127.0.0.1:${g.port}`, GATEWAY_TOKEN_FILE: tokenFile,
  });
  const logs = captureLogs();
  const logger = createLogger({ name: 'credential-proxy', level: 'info', destination: logs.destination });
  const registry = createMetricsRegistry({ program: 'credential-proxy', defaultMetrics: false });
  // The proxy must resolve nothing: the pod has no DNS; the gateway resolves and checks.
  const resolved: string[] = [];
  const resolver = async (host: string) => {
    resolved.push(host);
    throw Object.assign(new Error('no DNS in the pod'), { code: 'ENOTFOUND' });
  };
  const upstream = createUpstream({ resolver, gateway: gatewayEndpoint(config), onToken: (tk) => logger.secrets.add(tk) });
  const interceptor = createInterceptor(config, { logger, registry, env: { API_SECRET }, upstream });
  const proxy = createProxy(config, { logger, registry, resolver, upstream, interceptor });
  const bound = await proxy.listen();
  t.teardown(() => proxy.close());
  await interceptor.ready;
  const proxyUrl = `http://127.0.0.1:${bound.proxy.port}`;

  const curl = async (...args: string[]) => {
    const r = await run('curl', ['-sS', '--max-time', '20', '-x', proxyUrl, '-D', '-', ...args]).catch((e: { stdout: string; stderr: string }) => e);
    return r.stdout + (r.stderr ?? '');
  };

  await t.test('a plain tunnel (curl through the proxy, TLS end to end with the upstream)', async (t) => {
    const caFile = join(dir, 'api-ca.pem');
    writeFileSync(caFile, pki.caPem);
    const out = await curl('--cacert', caFile, 'https://api.lab.test/tunnel');
    t.match(out, /"tls":true,"path":"\/tunnel","auth":null/, out);
    const line = await g.logs.waitFor(AUDIT_MSG, (l) => l.decision === 'tunnel' && l.port === 443);
    t.match(line, { pod: 'sandboxes/pod-a', host: 'api.lab.test', address: '198.51.100.10' });
  });

  await t.test('plain HTTP forwarding', async (t) => {
    const out = await curl('http://api.lab.test/forwarded');
    t.match(out, /"tls":false,"path":"\/forwarded"/, out);
    t.ok(g.dialled.includes('198.51.100.10:80'));
  });

  await t.test('an intercepted request gets its credential injected and leaves through the gateway', async (t) => {
    const out = await curl('--cacert', join(config.CA_DIR, 'ca.crt'), 'https://secret.lab.test/v1/things');
    t.match(out, new RegExp(`"auth":"Bearer ${API_SECRET}"`), out);
  });

  await t.test('a gateway refusal reaches the workspace with the gateway\'s reason', async (t) => {
    const out = await curl('https://outside.example.com/');
    t.match(out, new RegExp(`${HEADER_DENY_REASON}: egress gateway: beyond the cluster-wide ceiling`, 'i'), out);
  });

  await t.test('a stale or missing token: the gateway answers 407 and nothing leaves', async (t) => {
    const before = g.dialled.length;
    writeFileSync(tokenFile, g.api.mint(g.pod, { expiresIn: -10 }));
    const out = await curl('https://api.lab.test/');
    t.match(out, /egress gateway: the token is not valid/, out);
    t.equal(g.dialled.length, before);
  });

  t.same(resolved, [], 'the proxy resolved no name itself');
  t.notMatch(logs.text() + g.logs.text(), /eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}/, 'no token in any log line');
});

t.test('GATEWAY_URL and GATEWAY_TOKEN_FILE come together', async (t) => {
  t.throws(() => loadProxyConfig({ GATEWAY_URL: 'http://10.96.0.20:3128' }), /GATEWAY_TOKEN_FILE/);
  t.throws(() => loadProxyConfig({ GATEWAY_TOKEN_FILE: '/x' }), /GATEWAY_URL/);
  t.throws(() => loadProxyConfig({ GATEWAY_URL: 'https://gw:3128', GATEWAY_TOKEN_FILE: '/x' }), /http:\/\/address:port/);
  const c = loadProxyConfig({ GATEWAY_URL: 'http://[fd00::20]:3128', GATEWAY_TOKEN_FILE: '/x' });
  t.same(gatewayEndpoint(c), { host: 'fd00::20', port: 3128, tokenFile: '/x' });
});
