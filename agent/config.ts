// The agent's configuration: environment variables → one validated, frozen object. This is the only
// module of the agent that reads process.env; it also computes the clean base environment of every
// command, so nothing else can leak the agent's own variables into a child.
import { PodTokenVerifier } from '../lib/pod-token.ts';
import { readFileSync, statSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError, deepFreeze, env, pickEnv, problemsFromZod, type ConfigProblem, type DeepReadonly } from '../lib/config.ts';
import { AGENT_SOCKET_PATH, PORTS, WORKSPACE_ROOT } from '../lib/constants.ts';

const MiB = 1024 * 1024;

/** The variable every command carries so escaped descendants can be found in /proc (see sweep.ts). */
export const EXEC_ID_VAR = 'WORKSPACE_SANDBOX_EXEC_ID';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Variables of the container's environment that commands inherit. Everything else the agent was
 * started with (its own AGENT_* settings, NODE_OPTIONS, anything a manifest added for the agent)
 * stays out. The proxy and CA variables are here because the webhook points the workspace's egress
 * at the credential proxy through them.
 */
export const DEFAULT_CHILD_ENV = Object.freeze([
  'PATH', 'HOME', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'TZ', 'USER', 'LOGNAME', 'SHELL', 'TERM',
  'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy',
  'SSL_CERT_FILE', 'SSL_CERT_DIR', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'NODE_EXTRA_CA_CERTS',
  'PIP_CERT', 'AWS_CA_BUNDLE', 'GIT_SSL_CAINFO',
]);

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const agentEnvObject = z.object({
  AGENT_LISTEN_MODE: z.enum(['tcp', 'uds'], { message: 'must be tcp or uds' }).default('tcp'),
  AGENT_HOST: env.string().default('0.0.0.0'),
  AGENT_PORT: env.port().default(PORTS.agent),
  AGENT_SOCKET: env.string().refine((p) => p.startsWith('/'), 'must be an absolute path').default(AGENT_SOCKET_PATH),
  AGENT_TOKEN_FILE: env.string().optional(),
  /** Public keys that verify per-pod tokens (agent/pod-token-auth.ts); the webhook sets it in the cluster. */
  AGENT_TOKEN_PUBLIC_KEYS_FILE: env.string().refine((p) => p.startsWith('/'), 'must be an absolute path').optional(),
  /** This Pod's UID (downward API): only tokens minted for it are accepted. */
  AGENT_POD_UID: env.string().regex(/^[0-9a-fA-F-]{1,64}$/, 'must be a Pod UID').optional(),
  AGENT_WORKSPACE_ROOT: env.string().refine((p) => p.startsWith('/'), 'must be an absolute path').default(WORKSPACE_ROOT),
  AGENT_MAX_CONCURRENT: env.int(1, 10_000).default(32),
  AGENT_DEFAULT_TIMEOUT_MS: env.int(1, 86_400_000).default(60_000),
  AGENT_MAX_TIMEOUT_MS: env.int(1, 86_400_000).default(3_600_000),
  AGENT_KILL_GRACE_MS: env.int(0, 600_000).default(2_000),
  AGENT_DRAIN_TIMEOUT_MS: env.int(0, 3_600_000).default(10_000),
  AGENT_OUTPUT_DRAIN_MS: env.int(0, 60_000).default(100),
  // Defaults derived from the memory limit in loadAgentConfig (see outputMemory).
  AGENT_MEMORY_LIMIT_BYTES: env.int(16 * MiB, 2 ** 50).optional(),
  AGENT_OUTPUT_MEMORY_BYTES: env.int(0, 2 ** 50).optional(),
  AGENT_MAX_OUTPUT_BYTES: env.int(0, 2 ** 40).optional(),
  AGENT_MAX_OUTPUT_BYTES_LIMIT: env.int(0, 2 ** 40).optional(),
  AGENT_MAX_REQUEST_BYTES: env.int(1024, 2 ** 40).default(16 * MiB),
  AGENT_MAX_FILE_BYTES: env.int(0, 2 ** 50).default(512 * MiB),
  AGENT_MAX_UPLOAD_BYTES: env.int(0, 2 ** 50).default(2048 * MiB),
  AGENT_MAX_TAR_ENTRIES: env.int(1, 10_000_000).default(200_000),
  AGENT_CHILD_ENV: env.list().superRefine((names, ctx) => {
    for (const name of names) {
      if (!ENV_NAME.test(name)) ctx.addIssue({ code: 'custom', message: `'${name}' is not a variable name` });
      // The agent's own settings (and the token file's path) never reach a command.
      else if (name.startsWith('AGENT_') || name === EXEC_ID_VAR) ctx.addIssue({ code: 'custom', message: `'${name}' belongs to the agent and cannot be passed to commands` });
    }
  }).default([...DEFAULT_CHILD_ENV]),
  AGENT_INIT_REAPER: z.enum(['auto', 'off'], { message: 'must be auto or off' }).default('auto'),
  AGENT_PROXY_RELAY: env.string().refine((p) => p.startsWith('/'), 'must be an absolute path').optional(),
  AGENT_PROCESS_ISOLATION: z.enum(['auto', 'pid-namespace', 'sweep'], { message: 'must be auto, pid-namespace or sweep' }).default('auto'),
  LOG_LEVEL: env.logLevel().default('info'),
});

export const agentEnvSchema = agentEnvObject.superRefine((c, ctx) => {
  if ((c.AGENT_TOKEN_PUBLIC_KEYS_FILE === undefined) !== (c.AGENT_POD_UID === undefined)) {
    const missing = c.AGENT_POD_UID === undefined ? 'AGENT_POD_UID' : 'AGENT_TOKEN_PUBLIC_KEYS_FILE';
    ctx.addIssue({ code: 'custom', path: [missing], message: 'AGENT_TOKEN_PUBLIC_KEYS_FILE and AGENT_POD_UID go together (per-pod tokens)' });
  }
  if (c.AGENT_TOKEN_PUBLIC_KEYS_FILE !== undefined && c.AGENT_TOKEN_FILE !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['AGENT_TOKEN_FILE'], message: 'set either AGENT_TOKEN_FILE (one shared token) or per-pod tokens, not both' });
  }
  if (c.AGENT_DEFAULT_TIMEOUT_MS > c.AGENT_MAX_TIMEOUT_MS) {
    ctx.addIssue({ code: 'custom', path: ['AGENT_DEFAULT_TIMEOUT_MS'], message: `must be <= AGENT_MAX_TIMEOUT_MS (${c.AGENT_MAX_TIMEOUT_MS})` });
  }
});

export interface AgentConfig {
  readonly listen: { readonly mode: 'tcp'; readonly host: string; readonly port: number } | { readonly mode: 'uds'; readonly path: string };
  /** Bearer token required on everything but /health; undefined: no authentication. */
  readonly token: string | undefined;
  /** Per-pod tokens (the cluster): required on everything but /health; takes the place of `token`. */
  readonly podToken?: { readonly publicKeysFile: string; readonly podUid: string };
  readonly workspaceRoot: string;
  readonly maxConcurrent: number;
  readonly defaultTimeoutMs: number;
  readonly maxTimeoutMs: number;
  readonly killGraceMs: number;
  readonly drainTimeoutMs: number;
  /** After the command's main process exits, how long to wait for its output pipes to close. */
  readonly outputDrainMs: number;
  readonly defaultMaxOutputBytes: number;
  readonly maxOutputBytesLimit: number;
  /**
   * Output all running buffered commands may keep together: each reserves 2 × its cap (stdout and
   * stderr) while it runs; a command that does not fit is refused with 429.
   */
  readonly outputMemoryBytes: number;
  readonly maxRequestBytes: number;
  readonly maxFileBytes: number;
  readonly maxUploadBytes: number;
  readonly maxTarEntries: number;
  /** The environment every command starts from (request env is merged over it). */
  readonly childBaseEnv: Readonly<Record<string, string>>;
  readonly initReaper: 'auto' | 'off';
  /** Unix socket of the credential proxy that 127.0.0.1:8080 is relayed to (Docker mode), if any. */
  readonly proxyRelay: string | undefined;
  /** pid-namespace: required; sweep: the exec-id sweep only; auto: a PID namespace when the runtime allows. */
  readonly processIsolation: 'auto' | 'pid-namespace' | 'sweep';
  readonly logLevel: DeepReadonly<z.output<typeof agentEnvSchema>>['LOG_LEVEL'];
}

/** Where the container's memory limit is: cgroup v2 (the container's own cgroup namespace), then v1. */
export const CGROUP_MEMORY_LIMIT_FILES = Object.freeze(['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']);

/** The container's memory limit in bytes, or undefined when there is none (or none visible). */
export function detectMemoryLimit(files: readonly string[] = CGROUP_MEMORY_LIMIT_FILES): number | undefined {
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8').trim();
    } catch {
      continue;
    }
    const bytes = Number(text);
    // v2 says "max"; v1 says a huge page-rounded number (2^63 - 4096) for "no limit".
    return Number.isSafeInteger(bytes) && bytes > 0 && bytes < 2 ** 50 ? bytes : undefined;
  }
  return undefined;
}

/** Output budget without a known memory limit. */
export const DEFAULT_OUTPUT_MEMORY_BYTES = 256 * MiB;

interface OutputMemory {
  memoryLimit: number | undefined;
  outputMemoryBytes: number;
  maxOutputBytesLimit: number;
  defaultMaxOutputBytes: number;
}

/**
 * Output memory consistent with the container's memory limit: kept output (a quarter of the limit
 * by default, at most half: the agent's own heap and the commands share the rest) bounds the cap a
 * request may ask for (one command at that cap must fit: 2 streams × cap), which bounds the default
 * cap. Explicit settings that break this chain are problems, not silently lowered.
 */
function outputMemory(c: Partial<Pick<z.output<typeof agentEnvObject>, 'AGENT_MEMORY_LIMIT_BYTES' | 'AGENT_OUTPUT_MEMORY_BYTES' | 'AGENT_MAX_OUTPUT_BYTES_LIMIT' | 'AGENT_MAX_OUTPUT_BYTES'>>, problems: ConfigProblem[]): OutputMemory {
  const memoryLimit = c.AGENT_MEMORY_LIMIT_BYTES ?? detectMemoryLimit();
  const outputMemoryBytes = c.AGENT_OUTPUT_MEMORY_BYTES ?? (memoryLimit === undefined ? DEFAULT_OUTPUT_MEMORY_BYTES : Math.floor(memoryLimit / 4));
  if (memoryLimit !== undefined && outputMemoryBytes > memoryLimit / 2) {
    problems.push({ field: 'AGENT_OUTPUT_MEMORY_BYTES', value: outputMemoryBytes, message: `must be <= half the memory limit (${Math.floor(memoryLimit / 2)} of ${memoryLimit} bytes)` });
  }
  const maxOutputBytesLimit = c.AGENT_MAX_OUTPUT_BYTES_LIMIT ?? Math.min(64 * MiB, Math.floor(outputMemoryBytes / 2));
  if (2 * maxOutputBytesLimit > outputMemoryBytes) {
    problems.push({ field: 'AGENT_MAX_OUTPUT_BYTES_LIMIT', value: maxOutputBytesLimit, message: `must be <= half of AGENT_OUTPUT_MEMORY_BYTES (${Math.floor(outputMemoryBytes / 2)}): a command keeps up to this much of stdout and of stderr` });
  }
  const defaultMaxOutputBytes = c.AGENT_MAX_OUTPUT_BYTES ?? Math.min(MiB, maxOutputBytesLimit);
  if (defaultMaxOutputBytes > maxOutputBytesLimit) {
    problems.push({ field: 'AGENT_MAX_OUTPUT_BYTES', value: defaultMaxOutputBytes, message: `must be <= AGENT_MAX_OUTPUT_BYTES_LIMIT (${maxOutputBytesLimit})` });
  }
  return { memoryLimit, outputMemoryBytes, maxOutputBytesLimit, defaultMaxOutputBytes };
}

/** Mode of the Unix socket: the backend's group may connect, nobody else. */
export const SOCKET_MODE = 0o660;

/** The token in `path`, or the problem with it. */
function readToken(path: string): string | ConfigProblem {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return { field: 'AGENT_TOKEN_FILE', value: path, message: `cannot read: ${(err as Error).message}` };
  }
  const token = text.trim();
  if (token.length < 16) return { field: 'AGENT_TOKEN_FILE', value: path, message: 'token must be at least 16 characters' };
  return token;
}

/**
 * Loads the agent's configuration from `source` (process.env by default). Every problem is reported
 * in one ConfigError, the files named by the settings (workspace root, token file) included, so an
 * operator fixes a bad Deployment in one round trip.
 */
export function loadAgentConfig(source: Record<string, string | undefined> = process.env): AgentConfig {
  const input = pickEnv(agentEnvObject, source);
  const parsed = agentEnvSchema.safeParse(input);
  const problems: ConfigProblem[] = parsed.success ? [] : problemsFromZod(parsed.error, input);
  const rootSetting = input.AGENT_WORKSPACE_ROOT ?? WORKSPACE_ROOT;
  if (rootSetting.startsWith('/') && !statSync(rootSetting, { throwIfNoEntry: false })?.isDirectory()) {
    problems.push({ field: 'AGENT_WORKSPACE_ROOT', value: rootSetting, message: 'must be an existing directory' });
  }
  let token: string | undefined;
  if (input.AGENT_TOKEN_FILE !== undefined) {
    const read = readToken(input.AGENT_TOKEN_FILE);
    if (typeof read === 'string') token = read;
    else problems.push(read);
  }
  if (input.AGENT_TOKEN_PUBLIC_KEYS_FILE !== undefined) {
    try {
      new PodTokenVerifier(input.AGENT_TOKEN_PUBLIC_KEYS_FILE);
    } catch (err) {
      problems.push({ field: 'AGENT_TOKEN_PUBLIC_KEYS_FILE', value: input.AGENT_TOKEN_PUBLIC_KEYS_FILE, message: (err as Error).message });
    }
  }
  // Checked even when other settings are wrong, so its problems are listed with theirs.
  const memorySettings = agentEnvObject.pick({ AGENT_MEMORY_LIMIT_BYTES: true, AGENT_OUTPUT_MEMORY_BYTES: true, AGENT_MAX_OUTPUT_BYTES_LIMIT: true, AGENT_MAX_OUTPUT_BYTES: true }).safeParse(input);
  const memory = memorySettings.success ? outputMemory(memorySettings.data, problems) : undefined;
  if (!parsed.success || !memory || problems.length > 0) throw new ConfigError('agent configuration', problems);
  const c = deepFreeze(parsed.data);
  const childBaseEnv: Record<string, string> = { PATH: DEFAULT_PATH, HOME: c.AGENT_WORKSPACE_ROOT, LANG: 'C.UTF-8' };
  for (const name of c.AGENT_CHILD_ENV) {
    const value = source[name];
    if (value !== undefined) childBaseEnv[name] = value;
  }
  return Object.freeze({
    listen: c.AGENT_LISTEN_MODE === 'tcp'
      ? Object.freeze({ mode: 'tcp' as const, host: c.AGENT_HOST, port: c.AGENT_PORT })
      : Object.freeze({ mode: 'uds' as const, path: c.AGENT_SOCKET }),
    token,
    ...(c.AGENT_TOKEN_PUBLIC_KEYS_FILE && c.AGENT_POD_UID
      ? { podToken: Object.freeze({ publicKeysFile: c.AGENT_TOKEN_PUBLIC_KEYS_FILE, podUid: c.AGENT_POD_UID }) } : {}),
    workspaceRoot: c.AGENT_WORKSPACE_ROOT,
    maxConcurrent: c.AGENT_MAX_CONCURRENT,
    defaultTimeoutMs: c.AGENT_DEFAULT_TIMEOUT_MS,
    maxTimeoutMs: c.AGENT_MAX_TIMEOUT_MS,
    killGraceMs: c.AGENT_KILL_GRACE_MS,
    drainTimeoutMs: c.AGENT_DRAIN_TIMEOUT_MS,
    outputDrainMs: c.AGENT_OUTPUT_DRAIN_MS,
    defaultMaxOutputBytes: memory.defaultMaxOutputBytes,
    maxOutputBytesLimit: memory.maxOutputBytesLimit,
    outputMemoryBytes: memory.outputMemoryBytes,
    maxRequestBytes: c.AGENT_MAX_REQUEST_BYTES,
    maxFileBytes: c.AGENT_MAX_FILE_BYTES,
    maxUploadBytes: c.AGENT_MAX_UPLOAD_BYTES,
    maxTarEntries: c.AGENT_MAX_TAR_ENTRIES,
    childBaseEnv: Object.freeze(childBaseEnv),
    initReaper: c.AGENT_INIT_REAPER,
    proxyRelay: c.AGENT_PROXY_RELAY,
    processIsolation: c.AGENT_PROCESS_ISOLATION,
    logLevel: c.LOG_LEVEL,
  });
}

/** Environment variables for `--help`: name, default, meaning. */
export const AGENT_ENV_HELP: readonly (readonly [string, string, string])[] = [
  ['AGENT_LISTEN_MODE', 'tcp', 'tcp or uds (Unix socket)'],
  ['AGENT_HOST', '0.0.0.0', 'TCP listen address'],
  ['AGENT_PORT', String(PORTS.agent), 'TCP port'],
  ['AGENT_SOCKET', AGENT_SOCKET_PATH, 'Unix socket path (mode 0660; a stale socket is replaced)'],
  ['AGENT_TOKEN_FILE', '(none)', 'file holding the bearer token required on all but /health'],
  ['AGENT_TOKEN_PUBLIC_KEYS_FILE', '(none)', 'public keys (PEM, several for rotation) of per-pod tokens required on all but /health; set by the webhook'],
  ['AGENT_POD_UID', '(none)', "this Pod's UID (downward API): only tokens minted for it are accepted"],
  ['AGENT_WORKSPACE_ROOT', WORKSPACE_ROOT, 'default cwd of commands and root of /files'],
  ['AGENT_MAX_CONCURRENT', '32', 'running commands before /execute answers 429'],
  ['AGENT_DEFAULT_TIMEOUT_MS', '60000', 'timeout of a command that names none'],
  ['AGENT_MAX_TIMEOUT_MS', '3600000', 'largest timeoutMs a request may ask for'],
  ['AGENT_KILL_GRACE_MS', '2000', 'SIGTERM to SIGKILL delay when a command is ended'],
  ['AGENT_DRAIN_TIMEOUT_MS', '10000', 'shutdown: time to end commands and close connections'],
  ['AGENT_OUTPUT_DRAIN_MS', '100', 'wait for output pipes held by background processes after exit'],
  ['AGENT_MEMORY_LIMIT_BYTES', '(the cgroup limit)', "the container's memory limit (default: read from the cgroup; set it from the container's limits.memory where the cgroup does not show it)"],
  ['AGENT_OUTPUT_MEMORY_BYTES', 'a quarter of the memory limit', `output all running buffered commands keep together; each reserves 2 x its cap, a command that does not fit gets 429 (default: a quarter of the memory limit, ${DEFAULT_OUTPUT_MEMORY_BYTES / MiB} MiB without one; at most half of it)`],
  ['AGENT_MAX_OUTPUT_BYTES', `${MiB}`, 'default per-stream output kept (head + tail) in buffered mode (default: 1 MiB, at most AGENT_MAX_OUTPUT_BYTES_LIMIT)'],
  ['AGENT_MAX_OUTPUT_BYTES_LIMIT', `${64 * MiB}`, 'largest maxOutputBytes a request may ask for (default: 64 MiB, at most half of AGENT_OUTPUT_MEMORY_BYTES)'],
  ['AGENT_MAX_REQUEST_BYTES', String(16 * MiB), 'largest /execute request body (stdin included)'],
  ['AGENT_MAX_FILE_BYTES', String(512 * MiB), 'largest single file written through /files'],
  ['AGENT_MAX_UPLOAD_BYTES', String(2048 * MiB), 'largest tar upload'],
  ['AGENT_MAX_TAR_ENTRIES', '200000', 'most entries in one tar upload'],
  ['AGENT_CHILD_ENV', 'PATH,HOME,LANG,…,HTTP(S)_PROXY,…', 'variables commands inherit from the container environment'],
  ['AGENT_INIT_REAPER', 'auto', 'as PID 1, hand PID 1 to a /bin/sh reaper (auto) or not (off)'],
  ['AGENT_PROXY_RELAY', '(none)', `Unix socket of the credential proxy; 127.0.0.1:${PORTS.proxy} is relayed to it (Docker mode: no network)`],
  ['AGENT_PROCESS_ISOLATION', 'auto', 'how a command\'s tree is ended: pid-namespace (a PID namespace per command; the agent refuses to start without one), sweep (process group + exec-id sweep, escapable with env -i), auto (pid-namespace where the runtime allows user namespaces, else sweep, logged)'],
  ['LOG_LEVEL', 'info', 'fatal, error, warn, info, debug, trace or silent'],
];
