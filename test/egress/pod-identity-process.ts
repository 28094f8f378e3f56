// Runs inside the "node" network namespace of the conformance suite: the EKS Pod Identity agent's
// credentials endpoint (http://169.254.170.23/v1/credentials), which the sidecar reads through the
// AWS SDK's default chain. Like the real agent it answers only the Pod's projected token (the file
// named by AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, mounted into the sidecar alone) and refuses
// anything else with 401. Every call is reported on stdout.
// Usage: node pod-identity-process.ts <address> <token file> <access key id> <secret key> <session token>
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [address, tokenFile, accessKeyId, secretAccessKey, sessionToken] = process.argv.slice(2);
const token = readFileSync(tokenFile!, 'utf8').trim();
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

const server = createServer((req, res) => {
  const authorized = req.url === '/v1/credentials' && req.headers.authorization === token;
  out({ seen: 'pod-identity', from: req.socket.remoteAddress, authorized });
  if (!authorized) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"message":"invalid token"}');
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ AccessKeyId: accessKeyId, SecretAccessKey: secretAccessKey, Token: sessionToken, AccountId: '123456789012', Expiration: new Date(Date.now() + 3600_000).toISOString() }));
});
server.listen(80, address, () => out({ ready: true }));
process.stdin.resume();
process.stdin.once('end', () => process.exit(0));
