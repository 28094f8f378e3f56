// `npm start`: the webhook, the credential proxy and the agent on this machine, each its own
// process under one supervisor, with everything a cluster would provide made locally: a dev CA
// and serving pair for the webhook; for the proxy a rules file, the credentials it declares, and
// a per-pod /rules token signed with a local pod-token key (as the backend mints one in a cluster,
// for the scope `local`); a temporary workspace root for the agent. No cluster, no Redis.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { createCA, issueCertificate } from '../lib/certs.ts';
import { PROXY_ADMIN_PATHS, AGENT_PATHS, WEBHOOK_PATHS } from '../lib/constants.ts';
import { generatePodTokenKeys, MAX_POD_TOKEN_TTL_SECONDS, signPodToken } from '../lib/pod-token.ts';
import { inheritedEnvironment, loadLocalConfig, type LocalConfig } from './config.ts';
import { Supervisor, type ProgramSpec } from './supervisor.ts';

const BIN = fileURLToPath(new URL('../bin/workspace-sandbox.ts', import.meta.url));
const DAY = 24 * 3600_000;

/**
 * Hosts of the demo's fake APIs. The proxy answers them with loopback (STATIC_HOSTS); they are
 * not `*.localhost` names because the injected NO_PROXY=localhost covers those (curl matches it as
 * a domain suffix), and the demo must go through the proxy.
 */
export const DEMO_HOSTS = Object.freeze({ credentialed: 'api.demo.test', open: 'open.demo.test' });

/** Where the stack keeps what it made; the demo reads `state.json`. */
export interface StackState {
  urls: { webhook: string; webhookMetrics: string; proxy: string; proxyAdmin: string; agent: string };
  files: {
    devCa: string; devCaKey: string; webhookCert: string; webhookKey: string; rulesToken: string; podTokenPublicKeys: string;
    demoApiToken: string; caDir: string; rules: string; credentials: string;
  };
  workspaceRoot: string;
  demoApiPort: number;
}

/** A problem the stack reports in one sentence and exits 1 for (no stack trace). */
export class StackError extends Error {}

/** The stack's lock, beside its state dir (which start-up wipes): holds the owner's PID. */
export const lockPath = (stateDir: string): string => `${stateDir}.pid`;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The PID of the stack that owns `stateDir`, if one is running. */
export function runningStack(stateDir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(lockPath(stateDir), 'utf8').trim());
  } catch {
    return undefined;
  }
  return Number.isInteger(pid) && pid > 0 && pidAlive(pid) ? pid : undefined;
}

/**
 * Takes the lock for `stateDir`, or says which stack holds it. A lock whose owner is gone (a
 * SIGKILLed stack) is taken over. Returns the release function.
 */
export function acquireLock(stateDir: string): () => void {
  const path = lockPath(stateDir);
  mkdirSync(dirname(path), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        try {
          if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
        } catch {
          // already gone
        }
      };
      process.once('exit', release);
      return release;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = runningStack(stateDir);
      if (owner !== undefined) {
        throw new StackError(`a local stack is already running (pid ${owner}, state in ${stateDir}); stop it first (Ctrl-C in its terminal, or kill ${owner}), or give a second stack its own LOCAL_STATE_DIR and LOCAL_*_PORT values`);
      }
      rmSync(path, { force: true });
    }
  }
  throw new StackError(`cannot take the lock ${path}`);
}

/** The port variables of the stack, in the order they are checked. */
function portSettings(config: LocalConfig): [string, number][] {
  const p = config.ports;
  return [
    ['LOCAL_WEBHOOK_PORT', p.webhook],
    ['LOCAL_WEBHOOK_METRICS_PORT', p.webhookMetrics],
    ['LOCAL_PROXY_PORT', p.proxy],
    ['LOCAL_PROXY_ADMIN_PORT', p.proxyAdmin],
    ['LOCAL_AGENT_PORT', p.agent],
  ];
}

/** Resolves when 127.0.0.1:`port` can be bound; rejects with the bind error otherwise. */
export async function portFree(port: number): Promise<void> {
  const server = createServer();
  server.listen(port, '127.0.0.1');
  try {
    await once(server, 'listening');
  } finally {
    server.close();
  }
}

/**
 * Every port the stack will bind must be free before anything starts: a taken port would make the
 * program fail on every restart. Names every taken port with the variable that moves it.
 */
export async function checkPorts(config: LocalConfig): Promise<void> {
  const taken: string[] = [];
  for (const [name, port] of portSettings(config)) {
    try {
      await portFree(port);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      taken.push(`port ${port} is ${code === 'EADDRINUSE' ? 'in use by another program' : `not available (${code ?? (err as Error).message})`}: set ${name} to a free port`);
    }
  }
  if (taken.length > 0) throw new StackError(`cannot start the local stack:\n  - ${taken.join('\n  - ')}`);
}

function writeSecret(path: string, content: string): void {
  writeFileSync(path, content, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** The pod UID the local proxy stands for: the subject of its /rules token. */
export const LOCAL_SCOPE = 'local';

/** The credentials the local proxy declares (CREDENTIALS_FILE): the demo API's token, for that host only. */
export function devCredentials() {
  return {
    credentials: {
      'demo-api': { hosts: [DEMO_HOSTS.credentialed], type: 'header', header: 'authorization', value: { env: 'DEMO_API_TOKEN' }, format: 'Bearer {value}' },
    },
  };
}

/** The rules the proxy starts with: the demo's credentialed API; everything else is denied. */
export function devRules(demoApiPort: number) {
  return {
    rules: [{
      id: 'demo-api',
      hosts: [DEMO_HOSTS.credentialed],
      ports: [demoApiPort],
      // Local fake APIs listen on loopback; in a cluster rules never need this.
      allowPrivate: true,
      credential: 'demo-api',
    }],
  };
}

export async function prepareState(config: LocalConfig): Promise<StackState> {
  const dir = config.stateDir;
  rmSync(dir, { recursive: true, force: true });
  for (const sub of ['tls', 'ca', 'workspace']) mkdirSync(join(dir, sub), { recursive: true, mode: 0o700 });
  const ca = createCA({ commonName: 'workspace-sandbox local CA', organization: 'workspace-sandbox', validityMs: 30 * DAY });
  const leaf = issueCertificate(ca, { hosts: ['localhost', '127.0.0.1', '::1', DEMO_HOSTS.credentialed, DEMO_HOSTS.open], validityMs: 30 * DAY });
  const files: StackState['files'] = {
    devCa: join(dir, 'tls', 'ca.crt'),
    devCaKey: join(dir, 'tls', 'ca.key'),
    webhookCert: join(dir, 'tls', 'tls.crt'),
    webhookKey: join(dir, 'tls', 'tls.key'),
    rulesToken: join(dir, 'rules-token'),
    podTokenPublicKeys: join(dir, 'pod-token-public.pem'),
    demoApiToken: join(dir, 'demo-api-token'),
    caDir: join(dir, 'ca'),
    rules: config.rulesFile ?? join(dir, 'rules.yaml'),
    credentials: join(dir, 'credentials.yaml'),
  };
  writeFileSync(files.devCa, ca.certPem);
  // The local CA's key stays in the state dir so the demo can serve its fake APIs under it.
  writeSecret(files.devCaKey, ca.keyPair.privateKeyPem);
  writeFileSync(files.webhookCert, leaf.certPem);
  writeSecret(files.webhookKey, leaf.keyPem);
  // The backend's part, made here: a pod-token key pair (the private key is used once and
  // dropped) and the token a backend would mint for this pod.
  const podKeys = generatePodTokenKeys();
  writeFileSync(files.podTokenPublicKeys, podKeys.publicKeyPem);
  writeSecret(files.rulesToken, `${await signPodToken(podKeys.privateKeyPem, { purpose: 'rules', podUid: LOCAL_SCOPE, ttlSeconds: MAX_POD_TOKEN_TTL_SECONDS })}\n`);
  writeSecret(files.demoApiToken, `demo-${randomBytes(12).toString('hex')}`);
  writeFileSync(files.credentials, stringify(devCredentials()));
  if (!config.rulesFile) writeFileSync(files.rules, stringify(devRules(config.ports.demoApi)));
  const p = config.ports;
  const state: StackState = {
    urls: {
      webhook: `https://127.0.0.1:${p.webhook}`,
      webhookMetrics: `http://127.0.0.1:${p.webhookMetrics}`,
      proxy: `http://127.0.0.1:${p.proxy}`,
      proxyAdmin: `http://127.0.0.1:${p.proxyAdmin}`,
      agent: `http://127.0.0.1:${p.agent}`,
    },
    files,
    workspaceRoot: join(dir, 'workspace'),
    demoApiPort: p.demoApi,
  };
  writeFileSync(join(dir, 'state.json'), `${JSON.stringify(state, null, 2)}\n`);
  return state;
}

async function httpOk(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return res.ok;
}

function httpsOk(url: string, ca: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpsRequest(url, { ca, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

export function programSpecs(config: LocalConfig, state: StackState, inherited: Record<string, string>): ProgramSpec[] {
  const p = config.ports;
  const common: Record<string, string> = { ...inherited, LOG_LEVEL: config.logLevel };
  const ca = readFileSync(state.files.devCa, 'utf8');
  return [
    {
      name: 'webhook',
      command: process.execPath,
      args: [BIN, 'webhook'],
      env: { ...common, WEBHOOK_HOST: '127.0.0.1', WEBHOOK_PORT: String(p.webhook), METRICS_HOST: '127.0.0.1', METRICS_PORT: String(p.webhookMetrics), TLS_CERT_FILE: state.files.webhookCert, TLS_KEY_FILE: state.files.webhookKey },
      probe: () => httpsOk(`${state.urls.webhook}${WEBHOOK_PATHS.readyz}`, ca),
    },
    {
      name: 'proxy',
      command: process.execPath,
      args: [BIN, 'proxy'],
      env: {
        ...common,
        PROXY_PORT: String(p.proxy),
        ADMIN_HOST: '127.0.0.1',
        ADMIN_PORT: String(p.proxyAdmin),
        RULES_FILE: state.files.rules,
        CREDENTIALS_FILE: state.files.credentials,
        POD_TOKEN_PUBLIC_KEYS_FILE: state.files.podTokenPublicKeys,
        RULES_SCOPE: LOCAL_SCOPE,
        CA_DIR: state.files.caDir,
        UPSTREAM_CA_FILE: state.files.devCa,
        STATIC_HOSTS: Object.values(DEMO_HOSTS).map((h) => `${h}=127.0.0.1`).join(','),
        DEMO_API_TOKEN: readFileSync(state.files.demoApiToken, 'utf8'),
        POD_NAME: 'local',
      },
      probe: () => httpOk(`${state.urls.proxyAdmin}${PROXY_ADMIN_PATHS.readyz}`),
    },
    {
      name: 'agent',
      command: process.execPath,
      args: [BIN, 'agent'],
      env: { ...common, AGENT_LISTEN_MODE: 'tcp', AGENT_HOST: '127.0.0.1', AGENT_PORT: String(p.agent), AGENT_WORKSPACE_ROOT: state.workspaceRoot },
      probe: () => httpOk(`${state.urls.agent}${AGENT_PATHS.health}`),
    },
  ];
}

function summary(state: StackState, token: string): string {
  return [
    '',
    'workspace-sandbox local stack is ready',
    `  webhook  ${state.urls.webhook}/mutate  (serving CA: ${state.files.devCa})`,
    `           metrics ${state.urls.webhookMetrics}/metrics`,
    `  proxy    ${state.urls.proxy}  (use as HTTP_PROXY / HTTPS_PROXY; its CA: ${join(state.files.caDir, 'ca.crt')})`,
    `           admin ${state.urls.proxyAdmin}  (/healthz /readyz /metrics /rules); rules file ${state.files.rules}; credentials ${state.files.credentials}`,
    `           /rules token (shown once; also in ${state.files.rulesToken}; per-pod, for pod "${LOCAL_SCOPE}"): ${token}`,
    `  agent    ${state.urls.agent}  (/health /execute /files; workspace ${state.workspaceRoot})`,
    '',
    'Try it: npm run demo        Stop: Ctrl-C',
    '',
  ].join('\n');
}

export async function main(): Promise<number> {
  const config = loadLocalConfig();
  acquireLock(config.stateDir);
  await checkPorts(config);
  const state = await prepareState(config);

  let stopping = false;
  const supervisor = new Supervisor({
    restartBackoffMs: config.restartBackoffMs,
    color: process.stdout.isTTY,
    onStartupFailure: (name, how, lastLines) => {
      const tail = lastLines.length > 0 ? `; its last lines:\n${lastLines.map((l) => `    ${l}`).join('\n')}` : '';
      void stop(`${name} exited (${how}) before it was ready${tail}`, 1);
    },
    onStopped: (name, how) => void stop(`${name} was stopped (${how})`),
  });
  const stop = async (why: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    supervisor.say('stack', `${why}: stopping all programs`);
    await supervisor.stop();
    supervisor.say('stack', 'stopped');
    process.exit(code);
  };
  for (const spec of programSpecs(config, state, inheritedEnvironment())) supervisor.start(spec);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void stop(signal));
  // npm, a terminal or a service manager that dies without signalling us must not leave the stack
  // running: when our parent goes, we are re-parented, and that is the cue.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) void stop(`parent process ${parent} exited`);
  }, 500).unref();

  const laggards = await supervisor.waitReady(config.readyTimeoutMs);
  if (stopping) return 0;
  if (laggards.length > 0) {
    supervisor.say('stack', `not ready after ${config.readyTimeoutMs} ms: ${laggards.join(', ')} (still retrying; see the lines above)`);
  } else {
    const token = readFileSync(state.files.rulesToken, 'utf8').trim();
    supervisor.say('stack', summary(state, token));
  }
  return 0;
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`local stack: ${err instanceof StackError ? err.message : (err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
