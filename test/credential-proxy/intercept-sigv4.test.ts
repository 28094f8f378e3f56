// SigV4 signing and credential sources, checked against an independent verifier and, for the
// default chain, a real HTTP endpoint speaking the EKS Pod Identity agent's protocol.
import t from 'tap';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SecretSet } from '../../lib/log.ts';
import type { WorkspaceSandboxError } from '../../lib/errors.ts';
import { createSigV4Signer, parseQuery, signingName } from '../../credential-proxy/sigv4.ts';
import { formatHeaderValue, headerCredential, SecretReader } from '../../credential-proxy/credentials.ts';
import { verifySigV4 } from './fixtures/bedrock-sigv4.ts';
import { listenLocal, closeServer } from '../helpers/listen.ts';
import { writeSecretVolume } from '../helpers/secret-volume.ts';

const REAL = { accessKeyId: 'AKIAREALREALREAL0001', secretAccessKey: 'real/Secret+Key0123456789abcdefghijklmno', sessionToken: 'real-session-token-xyz' };
const spec = { type: 'aws-sigv4' as const, service: 'bedrock', region: 'us-east-1' };

function toRaw(headers: Record<string, string>): string[] {
  return Object.entries(headers).flatMap(([k, v]) => [k, v]);
}

t.test('signatures verify with an independent SigV4 implementation, for awkward paths and queries', async (t) => {
  const secrets = new SecretSet();
  const signer = createSigV4Signer({ credentials: async () => REAL, secrets });
  const cases = [
    '/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke',
    '/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude/invoke-with-response-stream',
    '/v1/things?b=2&a=1&a=0&space=a%20b&plus=a+b&empty=&flag',
    '/',
  ];
  for (const url of cases) {
    const body = Buffer.from(JSON.stringify({ prompt: `for ${url}` }));
    const headers = { 'content-type': 'application/json', accept: 'application/json', 'content-length': String(body.length), 'x-amzn-bedrock-trace': 'ENABLED' };
    const signed = await signer.sign(spec, { method: 'POST', host: 'bedrock-runtime.us-east-1.amazonaws.com', url, headers, body });
    const verdict = verifySigV4('POST', url, toRaw(signed), body, REAL);
    t.ok(verdict.ok, `${url}: ${verdict.ok ? 'verified' : verdict.reason}`);
    t.equal(signed['x-amz-security-token'], REAL.sessionToken);
    t.notOk(signed['x-amz-content-sha256'], 'no payload-hash header (not S3)');
    const other = verifySigV4('POST', url, toRaw(signed), body, { ...REAL, secretAccessKey: 'another-secret' });
    t.notOk(other.ok, 'a different secret does not verify');
    const tampered = verifySigV4('POST', url, toRaw(signed), Buffer.from('{"prompt":"tampered"}'), REAL);
    t.notOk(tampered.ok, 'the body is covered by the signature');
  }
  t.ok(secrets.size >= 2, 'the secret key and session token are registered for scrubbing');
});

t.test('a non-default port is part of the signed host', async (t) => {
  const signer = createSigV4Signer({ credentials: async () => REAL });
  const body = Buffer.from('{}');
  const signed = await signer.sign(spec, { method: 'POST', host: 'bedrock-runtime.us-east-1.amazonaws.com:8443', url: '/model/x/invoke', headers: { 'content-length': '2' }, body });
  t.equal(signed.host, 'bedrock-runtime.us-east-1.amazonaws.com:8443');
  t.ok(verifySigV4('POST', '/model/x/invoke', toRaw(signed), body, REAL).ok);
});

t.test('bedrock-runtime is signed as bedrock', async (t) => {
  t.equal(signingName('bedrock-runtime'), 'bedrock');
  t.equal(signingName('bedrock'), 'bedrock');
  t.equal(signingName('sts'), 'sts');
  const signer = createSigV4Signer({ credentials: async () => REAL });
  const signed = await signer.sign({ ...spec, service: 'bedrock-runtime' }, { method: 'GET', host: 'h', url: '/', headers: {}, body: Buffer.alloc(0) });
  t.match(signed.authorization, /\/us-east-1\/bedrock\/aws4_request/);
});

t.test('no AWS credentials → WS_ERR_UNAVAILABLE with the provider\'s reason', async (t) => {
  const signer = createSigV4Signer({ credentials: async () => { throw new Error('Could not load credentials from any providers'); } });
  await t.rejects(signer.sign(spec, { method: 'GET', host: 'h', url: '/', headers: {}, body: Buffer.alloc(0) }), { code: 'WS_ERR_UNAVAILABLE', message: /Could not load credentials/ });
});

t.test('parseQuery keeps repeated keys and a literal plus', async (t) => {
  t.same(parseQuery('a=1&a=2&b=x+y&c=%2F&d'), { a: ['1', '2'], b: 'x+y', c: '/', d: '' });
  t.same(parseQuery(''), {});
  t.same(parseQuery('bad=%E0%A4%A'), { bad: '%E0%A4%A' }, 'malformed escapes are kept as sent');
});

t.test('the default chain: EKS Pod Identity (container credentials endpoint + token file)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-podid-'));
  const tokenFile = join(dir, 'eks-pod-identity-token');
  writeFileSync(tokenFile, 'pod-identity-jwt-token');
  let calls = 0;
  let seenAuth: string | undefined;
  const agent = createServer((req, res) => {
    calls++;
    seenAuth = req.headers.authorization;
    if (req.url !== '/v1/credentials' || req.headers.authorization !== 'pod-identity-jwt-token') {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({
      AccessKeyId: REAL.accessKeyId, SecretAccessKey: REAL.secretAccessKey, Token: REAL.sessionToken,
      AccountId: '123456789012', Expiration: new Date(Date.now() + 3600_000).toISOString(),
    }));
  });
  const { url } = await listenLocal(agent);
  t.teardown(() => closeServer(agent));
  const saved = { ...process.env };
  t.teardown(() => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  });
  for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN', 'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI']) delete process.env[k];
  process.env.AWS_CONFIG_FILE = join(dir, 'no-config');
  process.env.AWS_SHARED_CREDENTIALS_FILE = join(dir, 'no-credentials');
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = `${url}/v1/credentials`;
  process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = tokenFile;

  const secrets = new SecretSet();
  const signer = createSigV4Signer({ secrets });
  const body = Buffer.from('{"prompt":"hi"}');
  const req = { method: 'POST', host: 'bedrock-runtime.us-east-1.amazonaws.com', url: '/model/m/invoke', headers: { 'content-length': String(body.length) }, body };
  const signed = await signer.sign(spec, req);
  t.equal(seenAuth, 'pod-identity-jwt-token', 'the token file was sent to the agent');
  t.ok(verifySigV4('POST', req.url, toRaw(signed), body, REAL).ok, 'signed with the Pod Identity credentials');
  t.equal(signed['x-amz-security-token'], REAL.sessionToken);
  await signer.sign(spec, req);
  t.equal(calls, 1, 'credentials are cached by the chain until near expiry');
  t.ok(secrets.size >= 2);
  rmSync(dir, { recursive: true, force: true });
});

t.test('SecretReader: env, file; every value registered for scrubbing', async (t) => {
  const secrets = new SecretSet();
  const dir = mkdtempSync(join(tmpdir(), 'ws-secret-'));
  writeFileSync(join(dir, 'plain'), 'file-secret-value\n');
  const reader = new SecretReader({ env: { TOKEN: ' env-secret-value ', CRLF: 'one\r\nInjected: two' }, secrets, fileRecheckMs: 0 });
  t.equal(reader.read({ env: 'TOKEN' }), 'env-secret-value');
  t.equal(reader.read({ file: join(dir, 'plain') }), 'file-secret-value', 'trailing newline dropped');
  t.equal(secrets.scrub('a env-secret-value b file-secret-value'), 'a [REDACTED] b [REDACTED]');
  t.throws(() => reader.read({ env: 'CRLF' }), { code: 'WS_ERR_UNAVAILABLE', message: /CRLF holds more than one line/ }, 'a value with CR/LF is never a header value');
  t.throws(() => reader.read({ env: 'MISSING' }), { code: 'WS_ERR_UNAVAILABLE', message: /MISSING is not set/ });
  t.throws(() => reader.read({ file: join(dir, 'absent') }), { code: 'WS_ERR_UNAVAILABLE', message: /ENOENT/ });
  writeFileSync(join(dir, 'two'), 'a-line\nanother-line');
  t.throws(() => reader.read({ file: join(dir, 'two') }), { code: 'WS_ERR_UNAVAILABLE', message: /more than one line/ });
  const e = (() => { try { reader.read({ file: join(dir, 'two') }); } catch (err) { return err as WorkspaceSandboxError; } })();
  t.notMatch(e!.message, /a-line/, 'the error never quotes the value');
});

t.test('SecretReader: a rotated Secret volume is picked up; a vanished file keeps the last value', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ws-rotate-'));
  writeSecretVolume(dir, { token: 'first-token-value' });
  let now = 0;
  const reader = new SecretReader({ env: {}, secrets: new SecretSet(), fileRecheckMs: 1000, now: () => now });
  const src = { file: join(dir, 'token') };
  t.equal(reader.read(src), 'first-token-value');
  writeSecretVolume(dir, { token: 'second-token-value' });
  t.equal(reader.read(src), 'first-token-value', 'not re-checked within the interval');
  now += 1000;
  t.equal(reader.read(src), 'second-token-value', 'rotation seen after the interval');
  rmSync(join(dir, 'token'));
  now += 1000;
  t.equal(reader.read(src), 'second-token-value', 'mid-rotation absence keeps the last value');
});

t.test('header values: format template', async (t) => {
  const secrets = new SecretSet();
  const reader = new SecretReader({ env: { V: 'abc-123-secret' }, secrets });
  const spec = { type: 'header' as const, name: 'authorization', value: { env: 'V' }, format: 'Bearer {value}' };
  t.same(headerCredential(spec, reader), { name: 'authorization', value: 'Bearer abc-123-secret' });
  t.equal(formatHeaderValue({ type: 'header', name: 'x-api-key', value: { env: 'V' } }, 'raw'), 'raw');
  t.equal(secrets.scrub('x abc-123-secret y'), 'x [REDACTED] y', 'the value read is registered for scrubbing');
});
