// The agent in the cluster accepts only per-pod tokens minted for its own Pod UID
// (AGENT_TOKEN_PUBLIC_KEYS_FILE + AGENT_POD_UID, which the webhook wires). A real agent server,
// tokens signed with lib/pod-token.ts as the backend signs them, the typed client as the backend
// uses it; key rotation by editing the mounted file.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient } from '../../clients/agent-client.ts';
import { generatePodTokenKeys, signPodToken } from '../../lib/pod-token.ts';
import { loadAgentConfig } from '../../agent/config.ts';
import { call, startAgent, tempDir } from './harness.ts';

const POD_UID = '0f3c2a6e-8f1d-4d7b-9a51-2b7c9e4d1a10';
const OTHER_UID = '7d1e4b2a-1c3f-4e5d-8a9b-0c1d2e3f4a5b';

t.test('per-pod agent tokens: own Pod only, agent purpose only, rotation without a restart', async (t) => {
  const dir = tempDir();
  const keysFile = join(dir, 'public.pem');
  const oldKeys = generatePodTokenKeys();
  writeFileSync(keysFile, oldKeys.publicKeyPem);
  const a = await startAgent({ AGENT_TOKEN_PUBLIC_KEYS_FILE: keysFile, AGENT_POD_UID: POD_UID });
  t.teardown(a.close);
  const run = (token?: string) => call(a.target, '/execute', { ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}), body: { cmd: ['true'] } });

  t.equal((await call(a.target, '/health')).status, 200, '/health needs no token (kubelet probes)');
  t.equal((await run()).status, 401, 'no token');
  t.equal((await run('not-a-jwt')).status, 401, 'garbage');
  const own = await signPodToken(oldKeys.privateKeyPem, { purpose: 'agent', podUid: POD_UID, ttlSeconds: 600 });
  t.equal((await run(own)).status, 200, 'a token for this Pod');
  t.equal((await run(await signPodToken(oldKeys.privateKeyPem, { purpose: 'agent', podUid: OTHER_UID, ttlSeconds: 600 }))).status, 401, 'another Pod\'s token');
  t.equal((await run(await signPodToken(oldKeys.privateKeyPem, { purpose: 'rules', podUid: POD_UID, ttlSeconds: 600 }))).status, 401, 'a /rules token');
  const forger = generatePodTokenKeys();
  t.equal((await run(await signPodToken(forger.privateKeyPem, { purpose: 'agent', podUid: POD_UID, ttlSeconds: 600 }))).status, 401, 'signed with a key not in the file');

  // The typed client carries the token.
  const port = (a.target as { port: number }).port;
  const client = new AgentClient({ baseUrl: `http://127.0.0.1:${port}`, token: own });
  t.equal((await client.execute({ cmd: ['echo', 'hi'] })).stdout, 'hi\n');

  // Rotation: add the new key, mint with it, drop the old one.
  const newKeys = generatePodTokenKeys();
  writeFileSync(keysFile, oldKeys.publicKeyPem + newKeys.publicKeyPem);
  const fresh = await signPodToken(newKeys.privateKeyPem, { purpose: 'agent', podUid: POD_UID, ttlSeconds: 600 });
  let status = 0;
  for (let i = 0; i < 200 && status !== 200; i++) {
    status = (await run(fresh)).status;
    if (status !== 200) await new Promise((r) => setTimeout(r, 25));
  }
  t.equal(status, 200, 'a token of the added key, without a restart');
  t.equal((await run(own)).status, 200, 'the old key still works while both are listed');
  writeFileSync(keysFile, newKeys.publicKeyPem);
  status = 200;
  for (let i = 0; i < 200 && status === 200; i++) {
    status = (await run(await signPodToken(oldKeys.privateKeyPem, { purpose: 'agent', podUid: POD_UID, ttlSeconds: 600 }))).status;
    if (status === 200) await new Promise((r) => setTimeout(r, 25));
  }
  t.equal(status, 401, 'the dropped key no longer verifies');
});

t.test('config: the public keys and the Pod UID go together, and the keys file must hold a key', async (t) => {
  const dir = tempDir();
  t.throws(() => loadAgentConfig({ AGENT_WORKSPACE_ROOT: dir, AGENT_TOKEN_PUBLIC_KEYS_FILE: join(dir, 'k.pem') }), /AGENT_POD_UID/);
  writeFileSync(join(dir, 'empty.pem'), '');
  t.throws(() => loadAgentConfig({ AGENT_WORKSPACE_ROOT: dir, AGENT_TOKEN_PUBLIC_KEYS_FILE: join(dir, 'empty.pem'), AGENT_POD_UID: POD_UID }), /AGENT_TOKEN_PUBLIC_KEYS_FILE/);
  writeFileSync(join(dir, 'token'), 'x'.repeat(32));
  writeFileSync(join(dir, 'k.pem'), generatePodTokenKeys().publicKeyPem);
  t.throws(() => loadAgentConfig({ AGENT_WORKSPACE_ROOT: dir, AGENT_TOKEN_FILE: join(dir, 'token'), AGENT_TOKEN_PUBLIC_KEYS_FILE: join(dir, 'k.pem'), AGENT_POD_UID: POD_UID }), /not both/);
  t.match(loadAgentConfig({ AGENT_WORKSPACE_ROOT: dir, AGENT_TOKEN_PUBLIC_KEYS_FILE: join(dir, 'k.pem'), AGENT_POD_UID: POD_UID }).podToken, { podUid: POD_UID });
});
