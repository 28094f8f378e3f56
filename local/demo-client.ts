// What the demo runs inside the workspace in place of `curl -v URL`, so the demo needs nothing but
// Node: an HTTPS GET through $HTTPS_PROXY by CONNECT, trusting the CA bundle the webhook points
// NODE_EXTRA_CA_CERTS at (Node reads it at start-up). Like curl -v, it prints the proxy's answer to
// the CONNECT on stderr (that is where a denial's reason header is), the body on stdout, and exits
// non-zero when the tunnel or the request fails. Like curl and OpenSSL it trusts $SSL_CERT_FILE (the
// webhook points it at the bundle that also holds the upstream CA), so tunnelled hosts verify too.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as tlsConnect } from 'node:tls';

const target = new URL(process.argv[2] ?? '');
// A workspace tool, not one of our programs: honouring $HTTPS_PROXY is what it demonstrates.
// eslint-disable-next-line no-restricted-properties
const proxy = new URL(process.env.HTTPS_PROXY ?? process.env.https_proxy ?? '');
// eslint-disable-next-line no-restricted-properties
const caFile = process.env.SSL_CERT_FILE;
const authority = `${target.hostname}:${target.port || 443}`;

function fail(message: string, code = 1): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

const connect = httpRequest({ host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: authority, headers: { host: authority } });
connect.on('error', (err) => fail(`proxy ${proxy.host}: ${err.message}`));
connect.on('connect', (res, socket) => {
  process.stderr.write(`> CONNECT ${authority} HTTP/1.1\n< HTTP/1.1 ${res.statusCode} ${res.statusMessage}\n`);
  for (const [name, value] of Object.entries(res.headers)) process.stderr.write(`< ${name}: ${String(value)}\n`);
  if (res.statusCode !== 200) {
    socket.destroy();
    fail(`CONNECT tunnel failed, response ${res.statusCode}`, 56);
  }
  const tls = tlsConnect({ socket, servername: target.hostname, ...(caFile ? { ca: readFileSync(caFile) } : {}) });
  const get = httpsRequest(target, { createConnection: () => tls }, (response) => {
    process.stderr.write(`< HTTP/1.1 ${response.statusCode}\n`);
    response.pipe(process.stdout);
    response.on('end', () => process.exit(response.statusCode! < 400 ? 0 : 22));
  });
  get.on('error', (err) => fail(`${target.href}: ${err.message}`));
  get.end();
});
connect.end();
