// Property-based fuzzing of a live gateway. The workspace shares its Pod's network with the sidecar,
// so it reaches the gateway's port directly: whatever it sends there — CONNECT authorities, header
// blocks, Proxy-Authorization values (garbage, truncated and tampered tokens), other methods, the
// metrics listener's paths — the gateway answers (or closes that one connection), never with a
// 500, never by an unexpected error (the guard's counter stays at zero: a guarded crash is still a
// bug), and afterwards still answers /healthz and opens a tunnel for the pod's valid token.
// The Kubernetes API is the stand-in of kube-api-stand-in.ts. Fixed seed and bounded runs here;
// FUZZ_RUNS / FUZZ_SEED for longer runs (test/helpers/fuzz.ts).
import t, { type Test } from 'tap';
import fc from 'fast-check';
import { UNEXPECTED_ERRORS_METRIC } from '../../lib/guard.ts';
import { absoluteUrl, authority, fuzzParameters, headerBlock, method, rawRequest, sendRaw, stillServing } from '../helpers/fuzz.ts';
import { connectRequest, echo, exchange, startGateway, type GatewayHarness } from './harness.ts';

function acceptable(status: number): boolean {
  return status === 0 || (status >= 100 && status < 600 && status !== 500);
}

async function unexpectedErrors(g: GatewayHarness): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.metricsPort}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(UNEXPECTED_ERRORS_METRIC)).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
}

/** After a property: nothing was a bug, both listeners serve, the pod's token still opens a tunnel. */
async function healthy(t: Test, g: GatewayHarness, token: string) {
  t.equal(await unexpectedErrors(g), 0, 'no unexpected error was caught by a guard');
  t.ok(await stillServing({ port: g.metricsPort }), 'the metrics listener still answers /healthz');
  const r = await exchange(g.port, connectRequest('api.lab.test:443', token));
  t.equal(r.status, 200, 'the pod\'s token still opens a tunnel');
  t.equal(await echo(r.socket, 'ping'), 'ping');
  r.socket.destroy();
}

t.test('fuzz: the gateway survives whatever a workspace sends it', async (t) => {
  const g = await startGateway(t);
  const token = g.api.mint(g.pod);
  const gw = { port: g.port };

  t.test('CONNECT authority, with and without the pod\'s token', async (t) => {
    await fc.assert(fc.asyncProperty(authority, fc.boolean(), async (a, withToken) => {
      const reply = await sendRaw(gw, rawRequest('CONNECT', a, withToken ? [`Host: ${a}`, `Proxy-Authorization: Bearer ${token}`] : [`Host: ${a}`]), { idleMs: 50 });
      if (!acceptable(reply.status)) throw new Error(`CONNECT ${JSON.stringify(a)} → ${reply.status}`);
    }), fuzzParameters(300));
    await healthy(t, g, token);
  });

  t.test('Proxy-Authorization values: noise, other schemes, truncated and tampered tokens', async (t) => {
    const credential = fc.oneof(
      fc.string({ unit: 'binary-ascii', maxLength: 200 }),
      fc.constantFrom('Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', 'bearer x.y.z', 'Bearer ..', 'Bearer a.b', 'Bearer e30.e30.', `Bearer ${'a'.repeat(15_000)}`),
      fc.integer({ min: 0, max: token.length - 1 }).map((n) => `Bearer ${token.slice(0, n)}`),
      // Any character but the signature's last: its low bits are base64url padding, so other
      // characters there decode to the same signature (the same token, rightly accepted).
      fc.tuple(fc.integer({ min: 0, max: token.length - 2 }), fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 1 })).map(([i, c]) => `Bearer ${token.slice(0, i)}${c}${token.slice(i + 1)}`),
    );
    await fc.assert(fc.asyncProperty(credential, async (value) => {
      const reply = await sendRaw(gw, rawRequest('CONNECT', 'api.lab.test:443', ['Host: api.lab.test:443', `Proxy-Authorization: ${value}`]), { idleMs: 50 });
      if (!acceptable(reply.status)) throw new Error(`Proxy-Authorization ${JSON.stringify(value.slice(0, 80))} → ${reply.status}`);
      if (reply.status === 200 && value !== `Bearer ${token}`) throw new Error(`a tunnel opened for ${JSON.stringify(value.slice(0, 80))}`);
    }), fuzzParameters(300));
    await healthy(t, g, token);
  });

  t.test('raw header blocks on CONNECT', async (t) => {
    await fc.assert(fc.asyncProperty(headerBlock, fc.boolean(), fc.string({ maxLength: 64 }), async (lines, withToken, body) => {
      const headers = withToken ? [...lines, `Proxy-Authorization: Bearer ${token}`] : lines;
      const reply = await sendRaw(gw, rawRequest('CONNECT', 'api.lab.test:443', headers, body), { idleMs: 50, end: true });
      if (!acceptable(reply.status)) throw new Error(`CONNECT with ${JSON.stringify(lines)} → ${reply.status}`);
    }), fuzzParameters(300));
    await healthy(t, g, token);
  });

  t.test('other methods and absolute-form URLs, on both listeners', async (t) => {
    await fc.assert(fc.asyncProperty(method, absoluteUrl, fc.constantFrom(g.port, g.metricsPort), async (m, url, port) => {
      const reply = await sendRaw({ port }, rawRequest(m, url, ['Host: gateway', 'Connection: close']), { idleMs: 50 });
      if (!acceptable(reply.status)) throw new Error(`${m} ${JSON.stringify(url)} on ${port} → ${reply.status}`);
    }), fuzzParameters(300));
    await healthy(t, g, token);
  });
});
