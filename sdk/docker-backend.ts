// The Docker backend: the local mode and the rollback path (CONTAINER_BACKEND=docker).
//
// Each workspace is a container with no network interface but loopback (--network none), under
// gVisor where the engine has `runsc` registered. Its only ways in and out are two Unix sockets in
// a per-workspace host directory bind-mounted at /var/run/workspace-sandbox:
//   agent.sock  the agent listens there (AGENT_LISTEN_MODE=uds); the SDK calls it from the host;
//   proxy.sock  the workspace's own credential proxy, a host process started here; inside, the
//               agent relays 127.0.0.1:8080 (HTTP_PROXY) to it (agent/relay.ts).
//
// One proxy per workspace rather than one shared with scopes: the proxy is the Pod sidecar's
// program unchanged (its per-workspace CA, rules, credentials and audit identity come with the
// process), a workspace cannot reach another's rules even through a proxy bug, and killing a
// workspace kills its egress. The price is a Node process (~60 MB) per workspace, which is what
// the Kubernetes mode pays too and fine for a laptop or a single host's tens of workspaces.
//
// The per-workspace directory (STATE_DIR/<id>) also holds the agent token (mounted read-only), the
// workspace's uid (the subject of its /rules tokens, signed with the backend's key; the proxy
// checks them with STATE_DIR/pod-token/public.pem), proxy.json (pid and admin URL) and
// assignment.json (claim-time conversation and labels: Docker labels are fixed at creation). Everything here is on the host
// that runs the engine: the backend and dockerd must share a filesystem (the single-host mode).
import { spawn } from 'node:child_process';
import { createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, chownSync, chmodSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import type Docker from 'dockerode';
import { ProxyAdminClient } from '../clients/proxy-admin-client.ts';
import { generatePodTokenKeys } from '../lib/pod-token.ts';
import {
  ANNOTATION_ALLOWED_DOMAINS, ANNOTATION_TTL_SECONDS, CA_BUNDLE_FILE, CA_CERT_FILE, LABEL_CONVERSATION, LABEL_OWNER, PREFIX, PROXY_URL, SHARED_DIR,
} from '../lib/constants.ts';
import { AgentBackedBackend, checkConversationId, type AgentTarget, type RulesTarget } from './agent-backed.ts';
import type { CreateOptions, DestroyOptions, Resources, Workspace } from './backend.ts';
import { WorkspaceError } from './errors.ts';
import { checkCallerLabels, workspaceLabels } from './labels.ts';
import { resolveResources } from './resources.ts';
import { PodTokenSource } from './tokens.ts';

const LABEL_UID = `${PREFIX}uid`;
const AGENT_SOCKET = `${SHARED_DIR}/agent.sock`;
const PROXY_SOCKET = `${SHARED_DIR}/proxy.sock`;
const AGENT_TOKEN_IN_CONTAINER = '/run/workspace-sandbox/agent-token';
/** The workspace user of the images this mode runs (scripts/build-workspace-image.ts, examples/workspace-base). */
const DEFAULT_USER = { uid: 1000, gid: 1000 };
const BIN = fileURLToPath(new URL(`../bin/workspace-sandbox.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url));
const PROXY_START_TIMEOUT_MS = 30_000;
const PROXY_STOP_GRACE_MS = 2_000;

export interface DockerBackendOptions {
  docker: Docker;
  image: string;
  /** Host directory for the per-workspace sockets and state (created 0711). */
  stateDir: string;
  /** Value of the owner label: list() and the collector see only this backend's workspaces. */
  owner: string;
  /** `auto`: runsc when the engine has it registered, else runc. */
  runtime: 'auto' | 'runc' | 'runsc';
  defaultResources: Required<Resources>;
  maxResources: Required<Resources>;
  readyTimeoutMs: number;
  /** Environment of every workspace's proxy beyond what the backend sets (credentials, UPSTREAM_CA_FILE, STATIC_HOSTS). */
  proxyEnv?: Record<string, string>;
  /**
   * Ed25519 key (PEM) the /rules tokens are signed with (POD_TOKEN_PRIVATE_KEY_FILE). Default: a
   * key made once per state directory (STATE_DIR/pod-token/private.pem), shared by the replicas of
   * this host.
   */
  podTokenPrivateKeyPem?: string;
  /** How to start the proxy (default: this Node and the package's bin). */
  proxyCommand?: readonly string[];
  user?: { uid: number; gid: number };
}

interface ProxyState {
  pid: number;
  adminUrl: string;
}

interface Assignment {
  conversationId: string;
  labels: Record<string, string>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Writes a file whole or not at all (readers in other replicas never see half of it). */
function writeAtomic(path: string, text: string, mode = 0o600): void {
  writeFileSync(`${path}.tmp`, text, { mode });
  renameSync(`${path}.tmp`, path);
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** A loopback port nobody listens on right now. */
function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether `pid` is still the proxy of `id` (and not a process that reused the number). */
function isProxyOf(pid: number, id: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`POD_NAME=${id}`);
  } catch {
    return false;
  }
}

function dockerFailure(err: unknown, what: string): WorkspaceError {
  if (err instanceof WorkspaceError) return err;
  const e = err as { statusCode?: number; code?: string; json?: { message?: string }; message?: string };
  const message = e.json?.message ?? e.message ?? String(err);
  if (e.statusCode === undefined) return new WorkspaceError('WS_ERR_BACKEND_UNAVAILABLE', `${what}: Docker engine unreachable: ${message}`, { cause: err });
  if (e.statusCode === 404) return new WorkspaceError('WS_ERR_WORKSPACE_GONE', `${what}: ${message}`, { cause: err });
  if (e.statusCode === 400) return new WorkspaceError('WS_ERR_INVALID_OPTIONS', `${what}: ${message}`, { cause: err });
  return new WorkspaceError('WS_ERR_BACKEND_UNAVAILABLE', `${what}: Docker engine error ${e.statusCode}: ${message}`, { cause: err });
}

export class DockerBackend extends AgentBackedBackend {
  readonly kind = 'docker' as const;
  readonly #o: DockerBackendOptions;
  readonly #user: { uid: number; gid: number };
  #runtime: Promise<'runc' | 'runsc'> | undefined;
  readonly #tokens = new Map<string, { agent: string; uid: string }>();
  readonly #podTokens: PodTokenSource;
  readonly #publicKeysFile: string;
  readonly #proxies = new Map<string, ProxyState>();
  /** Creation-time labels per workspace (immutable in Docker), for claim-time assignment without an inspect. */
  readonly #created = new Map<string, { labels: Record<string, string>; createdAt: Date }>();

  constructor(options: DockerBackendOptions) {
    super();
    this.#o = options;
    this.#user = options.user ?? DEFAULT_USER;
    mkdirSync(options.stateDir, { recursive: true, mode: 0o711 });
    const keys = podTokenKeys(options.stateDir, options.podTokenPrivateKeyPem);
    this.#podTokens = new PodTokenSource(keys.privateKeyPem);
    this.#publicKeysFile = keys.publicKeysFile;
  }

  /** The OCI runtime new workspaces get (runsc when registered and not turned off). */
  runtime(): Promise<'runc' | 'runsc'> {
    this.#runtime ??= (async () => {
      if (this.#o.runtime !== 'auto') return this.#o.runtime;
      const info = await this.#o.docker.info() as { Runtimes?: Record<string, unknown> };
      return info.Runtimes && 'runsc' in info.Runtimes ? 'runsc' : 'runc';
    })().catch((err: unknown) => {
      this.#runtime = undefined;
      throw dockerFailure(err, 'docker info');
    });
    return this.#runtime;
  }

  #dir(id: string): string {
    if (!/^ws-[0-9a-f]{16}$/.test(id)) throw new WorkspaceError('WS_ERR_WORKSPACE_GONE', `${JSON.stringify(id)} is not a Docker workspace id`);
    return join(this.#o.stateDir, id);
  }

  async create(conversationId: string | undefined, options: CreateOptions = {}): Promise<Workspace> {
    if (conversationId !== undefined) checkConversationId(conversationId);
    checkCallerLabels(options.labels);
    const resources = resolveResources(options.resources, this.#o.defaultResources, this.#o.maxResources);
    const ttl = options.ttlSeconds;
    if (ttl !== undefined && (!Number.isInteger(ttl) || ttl <= 0)) throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', 'ttlSeconds must be a positive integer');
    const domains = options.allowedDomains ?? [];
    const labels = {
      ...workspaceLabels({ owner: this.#o.owner, conversationId, pool: options.pool, labels: options.labels }),
      ...(ttl !== undefined ? { [ANNOTATION_TTL_SECONDS]: String(ttl) } : {}),
      ...(domains.length > 0 ? { [ANNOTATION_ALLOWED_DOMAINS]: domains.join(',') } : {}),
    };
    const runtime = await this.runtime();
    const id = `ws-${randomBytes(8).toString('hex')}`;
    const uid = randomUUID();
    const dir = this.#dir(id);
    const run = join(dir, 'run');
    mkdirSync(run, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o711);
    chownSync(run, this.#user.uid, this.#user.gid);
    // The agent takes a static token (its own file, this workspace only); /rules takes per-workspace
    // tokens signed by this backend (lib/pod-token.ts), subject the workspace's uid.
    const tokens = { agent: randomBytes(32).toString('base64url'), uid };
    writeFileSync(join(dir, 'agent-token'), tokens.agent, { mode: 0o400 });
    chownSync(join(dir, 'agent-token'), this.#user.uid, this.#user.gid);
    writeFileSync(join(dir, 'uid'), uid, { mode: 0o600 });
    this.#tokens.set(id, tokens);
    const createdAt = new Date();
    try {
      const proxy = this.#startProxy(id, uid, dir, domains);
      const container = this.#o.docker.createContainer({
        name: id,
        Image: options.image ?? this.#o.image,
        Labels: { ...labels, [LABEL_UID]: uid },
        Env: [
          'AGENT_LISTEN_MODE=uds',
          `AGENT_SOCKET=${AGENT_SOCKET}`,
          `AGENT_TOKEN_FILE=${AGENT_TOKEN_IN_CONTAINER}`,
          `AGENT_PROXY_RELAY=${PROXY_SOCKET}`,
          ...['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'].map((n) => `${n}=${PROXY_URL}`),
          'NO_PROXY=localhost,127.0.0.1,::1', 'no_proxy=localhost,127.0.0.1,::1',
          ...['SSL_CERT_FILE', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'AWS_CA_BUNDLE', 'GIT_SSL_CAINFO', 'PIP_CERT'].map((n) => `${n}=${SHARED_DIR}/${CA_BUNDLE_FILE}`),
          `NODE_EXTRA_CA_CERTS=${SHARED_DIR}/${CA_CERT_FILE}`,
        ],
        HostConfig: {
          NetworkMode: 'none',
          Runtime: runtime,
          Binds: [`${run}:${SHARED_DIR}`, `${join(dir, 'agent-token')}:${AGENT_TOKEN_IN_CONTAINER}:ro`],
          NanoCpus: Math.round(resources.cpu * 1e9),
          Memory: resources.memoryBytes,
          PidsLimit: 4096,
          CapDrop: ['ALL'],
          SecurityOpt: ['no-new-privileges'],
        },
      }).then(async (c) => {
        await c.start();
        return c;
      });
      const [proxyResult, containerResult] = await Promise.allSettled([proxy, container]);
      if (containerResult.status === 'rejected') {
        const e = dockerFailure(containerResult.reason, `create ${id}`);
        // 404 at create time: the image is not there (no registry to pull from in this mode).
        throw e.code === 'WS_ERR_WORKSPACE_GONE' ? new WorkspaceError('WS_ERR_IMAGE_PULL_FAILED', e.message, { cause: e }) : e;
      }
      if (proxyResult.status === 'rejected') throw proxyResult.reason;
      this.#created.set(id, { labels: { ...labels, [LABEL_UID]: uid }, createdAt });
      const workspace: Workspace = {
        id, uid, backend: 'docker', agent: { socketPath: join(run, 'agent.sock') }, conversationId, labels, createdAt, readyAt: undefined, ttlSeconds: ttl, status: 'starting',
      };
      if (options.wait === false) return workspace;
      return await this.waitForAgentReady(workspace, { timeoutMs: options.timeoutMs ?? this.#o.readyTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) });
    } catch (err) {
      await this.destroy(id, { gracePeriodSeconds: 0 }).catch(() => {});
      throw err;
    }
  }

  /**
   * Starts the workspace's proxy, detached (it outlives this process; destroy and the collector
   * end it). Its admin listener gets a port free a moment ago; if someone takes it first the proxy
   * exits and another port is tried.
   */
  async #startProxy(id: string, uid: string, dir: string, domains: string[]): Promise<ProxyState> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#startProxyOnce(id, uid, dir, domains, await freeLoopbackPort());
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  }

  async #startProxyOnce(id: string, uid: string, dir: string, domains: string[], adminPort: number): Promise<ProxyState> {
    const logPath = join(dir, 'proxy.log');
    const log = openSync(logPath, 'a', 0o600);
    const [command, ...args] = this.#o.proxyCommand ?? [process.execPath, BIN, 'proxy'];
    let child;
    try {
      child = spawn(command!, args, {
        detached: true,
        stdio: ['ignore', log, log],
        env: {
          ...this.#o.proxyEnv,
          PROXY_SOCKET: join(dir, 'run', 'proxy.sock'),
          ADMIN_HOST: '127.0.0.1',
          ADMIN_PORT: String(adminPort),
          POD_TOKEN_PUBLIC_KEYS_FILE: this.#publicKeysFile,
          RULES_SCOPE: uid,
          CA_DIR: join(dir, 'run'),
          POD_NAME: id,
          ...(domains.length > 0 ? { ALLOWED_DOMAINS: domains.join(',') } : {}),
        },
      });
    } finally {
      closeSync(log);
    }
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new WorkspaceError('WS_ERR_BACKEND_UNAVAILABLE', `credential proxy of ${id} did not start`);
    writeAtomic(join(dir, 'proxy.pid'), String(pid));
    const state = { pid, adminUrl: `http://127.0.0.1:${adminPort}` };
    const admin = new ProxyAdminClient({ baseUrl: state.adminUrl });
    const deadline = Date.now() + PROXY_START_TIMEOUT_MS;
    for (let delay = 5; ; delay = Math.min(delay * 2, 50)) {
      if (!alive(pid) || !isProxyOf(pid, id) || Date.now() > deadline) {
        const tail = (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '').trim().split('\n').slice(-3).join('\n');
        if (alive(pid) && isProxyOf(pid, id)) process.kill(pid, 'SIGKILL');
        throw new WorkspaceError('WS_ERR_BACKEND_UNAVAILABLE', `credential proxy of ${id} did not start: ${tail}`);
      }
      try {
        await admin.health({ signal: AbortSignal.timeout(1_000) });
        writeAtomic(join(dir, 'proxy.json'), JSON.stringify(state));
        this.#proxies.set(id, state);
        return state;
      } catch {
        await sleep(delay);
      }
    }
  }

  #proxy(id: string): ProxyState | undefined {
    let state = this.#proxies.get(id);
    if (!state) {
      state = readJson<ProxyState>(join(this.#dir(id), 'proxy.json'));
      if (state) this.#proxies.set(id, state);
    }
    return state;
  }

  #tokensOf(id: string): { agent: string; uid: string } {
    let tokens = this.#tokens.get(id);
    if (!tokens) {
      const dir = this.#dir(id);
      try {
        tokens = { agent: readFileSync(join(dir, 'agent-token'), 'utf8'), uid: readFileSync(join(dir, 'uid'), 'utf8') };
      } catch (err) {
        throw new WorkspaceError('WS_ERR_WORKSPACE_GONE', `workspace ${id} has no state on this host`, { cause: err });
      }
      this.#tokens.set(id, tokens);
    }
    return tokens;
  }

  protected async agentOf(id: string): Promise<AgentTarget> {
    return { address: { socketPath: join(this.#dir(id), 'run', 'agent.sock') }, token: this.#tokensOf(id).agent };
  }

  protected async rulesOf(id: string): Promise<RulesTarget> {
    const proxy = this.#proxy(id);
    if (!proxy) throw new WorkspaceError('WS_ERR_WORKSPACE_GONE', `workspace ${id} has no proxy`);
    return { baseUrl: proxy.adminUrl, token: await this.#podTokens.token('rules', this.#tokensOf(id).uid) };
  }

  protected async failureOf(id: string): Promise<WorkspaceError | undefined> {
    let info;
    try {
      info = await this.#o.docker.getContainer(id).inspect();
    } catch (err) {
      return dockerFailure(err, `workspace ${id}`);
    }
    const s = info.State;
    if (s.OOMKilled) return new WorkspaceError('WS_ERR_EVICTED', `workspace ${id} was killed for exceeding its memory limit`, { details: { exitCode: s.ExitCode } });
    if (!s.Running && !s.Restarting && s.Status !== 'created') {
      return new WorkspaceError('WS_ERR_WORKSPACE_FAILED', `workspace ${id} is ${s.Status} (exit code ${s.ExitCode})${s.Error ? `: ${s.Error}` : ''}`, { details: { status: s.Status, exitCode: s.ExitCode } });
    }
    const proxy = this.#proxy(id);
    if (proxy && !alive(proxy.pid)) return new WorkspaceError('WS_ERR_WORKSPACE_FAILED', `the credential proxy of workspace ${id} is not running`);
    return undefined;
  }

  protected async runningOf(id: string): Promise<boolean> {
    return (await this.failureOf(id).catch(() => new WorkspaceError('WS_ERR_BACKEND_UNAVAILABLE', ''))) === undefined;
  }

  #toWorkspace(id: string, labels: Record<string, string>, createdAt: Date, state: string): Workspace {
    const assignment = readJson<Assignment>(join(this.#dir(id), 'assignment.json'));
    const merged: Record<string, string> = assignment ? { ...labels, ...assignment.labels, [LABEL_CONVERSATION]: assignment.conversationId } : { ...labels };
    delete merged[LABEL_UID];
    const ttl = labels[ANNOTATION_TTL_SECONDS];
    return {
      id,
      uid: labels[LABEL_UID] ?? '',
      backend: 'docker',
      agent: { socketPath: join(this.#dir(id), 'run', 'agent.sock') },
      conversationId: merged[LABEL_CONVERSATION],
      labels: merged,
      createdAt,
      readyAt: undefined,
      ttlSeconds: ttl === undefined ? undefined : Number(ttl),
      status: state === 'running' ? 'running' : state === 'created' || state === 'restarting' ? 'starting' : 'stopped',
    };
  }

  async get(id: string): Promise<Workspace> {
    this.#dir(id);
    let info;
    try {
      info = await this.#o.docker.getContainer(id).inspect();
    } catch (err) {
      throw dockerFailure(err, `workspace ${id}`);
    }
    if (info.Config.Labels?.[LABEL_OWNER] !== this.#o.owner) throw new WorkspaceError('WS_ERR_WORKSPACE_GONE', `workspace ${id} belongs to another backend`);
    this.#created.set(id, { labels: info.Config.Labels, createdAt: new Date(info.Created) });
    return this.#toWorkspace(id, info.Config.Labels, new Date(info.Created), info.State.Status);
  }

  async list(): Promise<Workspace[]> {
    let containers;
    try {
      containers = await this.#o.docker.listContainers({ all: true, filters: { label: [`${LABEL_OWNER}=${this.#o.owner}`] } });
    } catch (err) {
      throw dockerFailure(err, 'list workspaces');
    }
    return containers
      .map((c) => ({ c, id: (c.Names[0] ?? '').replace(/^\//, '') }))
      .filter(({ id }) => /^ws-[0-9a-f]{16}$/.test(id))
      .map(({ c, id }) => this.#toWorkspace(id, c.Labels, new Date(c.Created * 1000), c.State));
  }

  async assign(id: string, conversationId: string, labels: Record<string, string> = {}): Promise<Workspace> {
    checkConversationId(conversationId);
    checkCallerLabels(labels);
    // A container's labels never change: once read (or set at create) they are not asked for again.
    const created = this.#created.get(id);
    const current = created && existsSync(this.#dir(id))
      ? this.#toWorkspace(id, created.labels, created.createdAt, 'running')
      : await this.get(id);
    if (current.conversationId !== undefined && current.conversationId !== conversationId) {
      throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', `workspace ${id} already belongs to conversation ${current.conversationId}`);
    }
    writeAtomic(join(this.#dir(id), 'assignment.json'), JSON.stringify({ conversationId, labels } satisfies Assignment), 0o644);
    return { ...current, conversationId, labels: { ...current.labels, ...labels, [LABEL_CONVERSATION]: conversationId } };
  }

  async logs(id: string, options: { tail?: number } = {}): Promise<string> {
    this.#dir(id);
    try {
      const buf = await this.#o.docker.getContainer(id).logs({ stdout: true, stderr: true, follow: false, tail: options.tail ?? 1000 });
      return demux(buf);
    } catch (err) {
      throw dockerFailure(err, `logs of ${id}`);
    }
  }

  async destroy(id: string, options: DestroyOptions = {}): Promise<void> {
    const dir = this.#dir(id);
    this.forget(id);
    const grace = options.gracePeriodSeconds ?? 5;
    const container = this.#o.docker.getContainer(id);
    try {
      if (grace > 0) await container.stop({ t: grace }).catch((err: { statusCode?: number }) => {
        if (err.statusCode !== 304 && err.statusCode !== 404) throw err;
      });
      await container.remove({ force: true, v: true });
    } catch (err) {
      const e = dockerFailure(err, `destroy ${id}`);
      if (e.code !== 'WS_ERR_WORKSPACE_GONE') throw e;
    }
    await stopProxy(id, dir);
    this.#proxies.delete(id);
    this.#tokens.delete(id);
    this.#created.delete(id);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The /rules signing key and the public key file every proxy of this host checks tokens with. A
 * key made here is written once (exclusive create): replicas starting together agree on one.
 */
function podTokenKeys(stateDir: string, privateKeyPem: string | undefined): { privateKeyPem: string; publicKeysFile: string } {
  const dir = join(stateDir, 'pod-token');
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  let key = privateKeyPem;
  if (key === undefined) {
    const path = join(dir, 'private.pem');
    try {
      writeFileSync(path, generatePodTokenKeys().privateKeyPem, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    key = readFileSync(path, 'utf8');
  }
  const publicKeysFile = join(dir, 'public.pem');
  const publicPem = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
  if (!existsSync(publicKeysFile) || readFileSync(publicKeysFile, 'utf8') !== publicPem) writeAtomic(publicKeysFile, publicPem, 0o644);
  return { privateKeyPem: key, publicKeysFile };
}

/** Ends the workspace's proxy (SIGTERM, then SIGKILL), checking the pid is still that proxy. */
async function stopProxy(id: string, dir: string): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dir, 'proxy.pid'), 'utf8'));
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 1 || !isProxyOf(pid, id)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + PROXY_STOP_GRACE_MS;
  while (alive(pid) && isProxyOf(pid, id) && Date.now() < deadline) await sleep(20);
  if (alive(pid) && isProxyOf(pid, id)) process.kill(pid, 'SIGKILL');
}

/** Docker's multiplexed log stream (8-byte frame headers) as text; a TTY container's log is plain. */
function demux(buf: Buffer): string {
  const parts: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length && (buf[i] === 1 || buf[i] === 2) && buf[i + 1] === 0) {
    const size = buf.readUInt32BE(i + 4);
    parts.push(buf.subarray(i + 8, i + 8 + size));
    i += 8 + size;
  }
  return i === 0 ? buf.toString('utf8') : Buffer.concat(parts).toString('utf8');
}
