// Test harness for the agent: an in-process agent on port 0 (with captured logs), a real agent
// process through the bin, and an HTTP client that speaks TCP or a Unix socket.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAgentConfig, type AgentConfig } from '../../agent/config.ts';
import { createAgentServer, type AgentServer } from '../../agent/server.ts';
import { createLogger } from '../../lib/log.ts';
import { captureLogs, type LogCapture } from '../helpers/log-capture.ts';
import { closeServer, listenLocal } from '../helpers/listen.ts';

export const BIN = fileURLToPath(new URL('../../bin/workspace-sandbox.ts', import.meta.url));
export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export type Target = { port: number; host?: string } | { socketPath: string };

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string | object;
}

function requestOptions(target: Target, path: string, opts: RequestOptions) {
  const headers: Record<string, string> = { ...opts.headers };
  let body: Buffer | undefined;
  if (opts.body !== undefined) {
    if (Buffer.isBuffer(opts.body) || typeof opts.body === 'string') body = Buffer.from(opts.body);
    else {
      body = Buffer.from(JSON.stringify(opts.body));
      headers['content-type'] ??= 'application/json';
    }
    headers['content-length'] = String(body.length);
  }
  const base = 'socketPath' in target ? { socketPath: target.socketPath } : { host: target.host ?? '127.0.0.1', port: target.port };
  return { options: { ...base, path, method: opts.method ?? (body ? 'POST' : 'GET'), headers, agent: false as const }, body };
}

/** One request, the whole answer. */
export function call(target: Target, path: string, opts: RequestOptions = {}): Promise<Reply> {
  const { options, body } = requestOptions(target, path, opts);
  return new Promise((resolve, reject) => {
    const req = request(options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const b = Buffer.concat(chunks);
        resolve({ status: res.statusCode!, headers: res.headers, body: b, json: <T>() => JSON.parse(b.toString('utf8')) as T });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Opens a request and hands back the live response (for streaming and disconnect tests). */
export function open(target: Target, path: string, opts: RequestOptions = {}): Promise<{ res: IncomingMessage; destroy: () => void }> {
  const { options, body } = requestOptions(target, path, opts);
  return new Promise((resolve, reject) => {
    const req = request(options, (res) => resolve({ res, destroy: () => req.destroy() }));
    req.on('error', reject);
    req.end(body);
  });
}

export interface Frame {
  type: 'stdout' | 'stderr' | 'exit';
  data?: string;
  offset?: number;
  [k: string]: unknown;
}

/** POST /execute with Accept: application/x-ndjson; resolves with every frame once the stream ends. */
export async function stream(target: Target, body: object, headers: Record<string, string> = {}): Promise<{ status: number; frames: Frame[] }> {
  const r = await call(target, '/execute', { body, headers: { accept: 'application/x-ndjson', ...headers } });
  const text = r.body.toString('utf8');
  if (r.status !== 200) return { status: r.status, frames: [] };
  return { status: r.status, frames: text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Frame) };
}

/** Sends a request without waiting for the answer; `destroy` drops the connection. */
export function begin(target: Target, path: string, opts: RequestOptions = {}): { destroy: () => void; response: Promise<IncomingMessage> } {
  const { options, body } = requestOptions(target, path, opts);
  const req = request(options);
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.on('response', resolve);
    req.on('error', reject);
  });
  response.catch(() => {});
  req.end(body);
  return { destroy: () => req.destroy(), response };
}

/** Splits an NDJSON response into frames as they arrive. */
export async function* frames(res: IncomingMessage): AsyncGenerator<Frame> {
  let buf = '';
  for await (const chunk of res) {
    buf += (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line) yield JSON.parse(line) as Frame;
    }
  }
}

const tempDirs: string[] = [];
process.once('exit', () => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory, removed when the test process exits. */
export function tempDir(prefix = 'ws-agent-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export interface InProcessAgent {
  agent: AgentServer;
  config: AgentConfig;
  target: { port: number };
  logs: LogCapture;
  root: string;
  close(): Promise<void>;
}

/** An agent in this process on 127.0.0.1:0 with a fresh workspace root; env overrides the config. */
export async function startAgent(env: Record<string, string> = {}): Promise<InProcessAgent> {
  const root = env.AGENT_WORKSPACE_ROOT ?? tempDir('ws-root-');
  const config = loadAgentConfig({ AGENT_WORKSPACE_ROOT: root, AGENT_KILL_GRACE_MS: '500', ...env });
  const logs = captureLogs();
  const logger = createLogger({ name: 'agent', level: 'info', destination: logs.destination, secrets: config.token ? [config.token] : [] });
  const agent = createAgentServer(config, { logger });
  const { port } = await listenLocal(agent.server);
  return {
    agent, config, target: { port }, logs, root,
    close: async () => {
      await agent.shutdown('test end');
      await closeServer(agent.server);
      if (!env.AGENT_WORKSPACE_ROOT) rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface AgentProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * tap instruments every Node child it can (it adds NODE_OPTIONS even to an explicit env). A child
 * that loads the sources through Node's own type stripping yields coverage whose ranges do not
 * line up with the test process's (tap's TypeScript loader), and merging the two corrupts the
 * report: real-process agents run without coverage.
 */
export const NO_COVERAGE = { _TAPJS_PROCESSINFO_COVERAGE_: '0' };

/** The real agent through the bin, with a clean environment plus `env`. */
export function spawnAgent(env: Record<string, string>, opts: { command?: string[] } = {}): AgentProcess {
  const argv = opts.command ?? [process.execPath, BIN, 'agent'];
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LOG_LEVEL: 'info', ...NO_COVERAGE, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.on('data', (c: Buffer) => { err += c.toString(); });
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  return { child, stdout: () => out, stderr: () => err, exited };
}

/** Waits until the agent answers /health 200 (or fails with its output when it exits or hangs). */
export async function waitHealthy(target: Target, proc?: AgentProcess, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void proc?.exited.then(() => { exited = true; });
  while (Date.now() < deadline) {
    if (exited) throw new Error(`agent exited early\nstdout:\n${proc!.stdout()}\nstderr:\n${proc!.stderr()}`);
    try {
      const r = await call(target, '/health');
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`agent not healthy after ${timeoutMs} ms\nstdout:\n${proc?.stdout()}\nstderr:\n${proc?.stderr()}`);
}

/**
 * Live (non-zombie) processes whose environment carries the exec id: an independent re-implementation
 * of the agent's sweep, so a bug there cannot hide a survivor here.
 */
export function survivors(execId: string): number[] {
  const needle = `WORKSPACE_SANDBOX_EXEC_ID=${execId}`;
  return liveProcesses((pid) => readFileSync(`/proc/${pid}/environ`).toString('latin1').split('\0').includes(needle));
}

/** Live (non-zombie) processes whose command line contains `marker`. */
export function processesWith(marker: string): number[] {
  return liveProcesses((pid) => readFileSync(`/proc/${pid}/cmdline`).toString('latin1').includes(marker));
}

function liveProcesses(match: (pid: string) => boolean): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (alive(Number(name)) && match(name)) found.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return found;
}

/** True while `pid` exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export { freePort } from '../helpers/listen.ts';
