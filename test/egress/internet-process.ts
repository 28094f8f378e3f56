// Runs inside the "internet" network namespace of the conformance suite: upstreams on TEST-NET
// addresses only (198.51.100.0/24, 2001:db8::/32). Every TCP connection and UDP datagram that
// arrives is reported on stdout, so the suite asserts on what actually left the cluster. A request
// signed with SigV4 is checked against the keys in SIGV4_KEYS (JSON; the ones the sidecar gets from
// the Pod Identity agent) by the independent verifier, and the verdict is part of the answer.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type Socket } from 'node:net';
import { verifySigV4, type SecretKeys } from '../credential-proxy/fixtures/bedrock-sigv4.ts';

const [certFile, keyFile, ...addresses] = process.argv.slice(2);
const cert = readFileSync(certFile!, 'utf8');
const key = readFileSync(keyFile!, 'utf8');
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const seen = (proto: string, port: number) => (s: Socket) => out({ seen: proto, port, from: s.remoteAddress, to: s.localAddress });

const keys = process.env.SIGV4_KEYS ? JSON.parse(process.env.SIGV4_KEYS) as SecretKeys : undefined;
const BODY_CAP = 1024 * 1024;

const answer = (req: IncomingMessage, res: ServerResponse) => {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size > BODY_CAP) req.destroy();
    else chunks.push(c);
  });
  req.on('end', () => {
    const authorization = req.headers.authorization ?? null;
    let sigv4: string | undefined;
    if (authorization?.startsWith('AWS4-HMAC-SHA256')) {
      const verdict = keys ? verifySigV4(req.method!, req.url!, req.rawHeaders, Buffer.concat(chunks), keys) : { ok: false as const, reason: 'no keys to check against' };
      sigv4 = verdict.ok ? 'verified' : verdict.reason;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ upstream: 'internet', host: req.headers.host, path: req.url, authorization, from: req.socket.remoteAddress, ...(sigv4 ? { sigv4, securityToken: req.headers['x-amz-security-token'] ?? null } : {}) }));
  });
};
let pending = 0;
const listening = () => { if (--pending === 0) out({ ready: true }); };
for (const address of addresses) {
  const https = createHttpsServer({ cert, key }, answer);
  https.on('connection', seen('tcp', 443));
  const http = createHttpServer(answer);
  http.on('connection', seen('tcp', 80));
  const other = createNetServer((s) => { s.on('error', () => {}); s.end('other port\n'); });
  other.on('connection', seen('tcp', 8443));
  for (const [server, port] of [[https, 443], [http, 80], [other, 8443]] as const) {
    pending++;
    server.listen(port, address, listening);
  }
  for (const port of [53, 443]) {
    const udp = createSocket(address.includes(':') ? 'udp6' : 'udp4');
    udp.on('message', (msg, rinfo) => out({ seen: 'udp', port, from: rinfo.address, bytes: msg.length }));
    pending++;
    udp.bind(port, address, listening);
  }
}
process.stdin.resume();
process.stdin.once('end', () => process.exit(0));
