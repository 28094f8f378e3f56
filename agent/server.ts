// The agent's HTTP layer: decode, authenticate, call execute.ts / files.ts, encode. Plain node:http
// rather than express: `/execute ["true"]` must stay within a few hundred microseconds of a bare
// spawn (see test/bench/agent.ts), and the agent ships as a single small bundle.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { AGENT_PATHS } from '../lib/constants.ts';
import type { Registry } from 'prom-client';
import { errorBody, isWorkspaceSandboxError, toWorkspaceSandboxError, WorkspaceSandboxError } from '../lib/errors.ts';
import { createGuard } from '../lib/guard.ts';
import { createMetricsRegistry, metricsHandler } from '../lib/metrics.ts';
import { readBody } from '../lib/http.ts';
import { createShutdown, type Shutdown } from '../lib/server.ts';
import { VERSION } from '../lib/version.ts';
import type { AgentConfig } from './config.ts';
import { Execution, newExecId, type ExecResult, type StreamName } from './execute.ts';
import { pidNamespacesAvailable, UNSHARE, UNSHARE_ARGS, type ProcessIsolation } from './isolation.ts';
import { FrameEncoder } from './output.ts';
import { cwdProblem, executeRequestSchema, parseExecuteRequest, planSpawn, type ExecuteRequest, type SpawnPlan } from './request.ts';
import { fileSystemError, octal, Workspace } from './files.ts';
import { podTokenAuth } from './pod-token-auth.ts';

export const NDJSON = 'application/x-ndjson';
export const TAR = 'application/x-tar';
/** Seconds a client is told to wait after a 429. */
const RETRY_AFTER_S = 1;

export interface AgentServer {
  readonly server: Server;
  readonly workspace: Workspace;
  readonly processIsolation: ProcessIsolation;
  /** Commands running now. */
  readonly running: number;
  /** Stop accepting, end running commands with `agent_shutdown`, drain connections. */
  readonly shutdown: Shutdown;
}

export interface AgentDeps {
  logger: Logger;
  /** Where the agent's metrics go (GET /metrics); a private registry when absent. */
  registry?: Registry;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | number> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** A refused upload's remaining body is read and discarded up to this much, so the client gets the answer. */
const DRAIN_LIMIT_BYTES = 64 * 1024 * 1024;
const DRAIN_TIMEOUT_MS = 10_000;

/**
 * Reads and discards what is left of a request body, within limits. A client still sending when
 * the server answers and closes sees a connection reset instead of the answer (the kernel resets a
 * socket closed with unread data), so a refused upload of reasonable size is drained first.
 * Resolves true when the body ended; false when it was too large or too slow (then close).
 */
function drainBody(req: IncomingMessage): Promise<boolean> {
  if (req.complete) return Promise.resolve(true);
  if (req.destroyed || Number(req.headers['content-length']) > DRAIN_LIMIT_BYTES) return Promise.resolve(false);
  return new Promise((resolve) => {
    let drained = 0;
    const done = (ok: boolean) => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onFail);
      req.off('close', onFail);
      resolve(ok);
    };
    const onData = (chunk: Buffer) => {
      drained += chunk.length;
      if (drained > DRAIN_LIMIT_BYTES) done(false);
    };
    const onEnd = () => done(true);
    const onFail = () => done(false);
    const timer = setTimeout(() => done(false), DRAIN_TIMEOUT_MS);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onFail);
    req.once('close', onFail);
    req.resume();
  });
}

async function sendError(req: IncomingMessage, res: ServerResponse, err: unknown, headers: Record<string, string | number> = {}): Promise<void> {
  const e = toWorkspaceSandboxError(err);
  if (res.headersSent) {
    res.destroy(e);
    return;
  }
  if (!(await drainBody(req))) res.setHeader('connection', 'close');
  if (res.destroyed) return;
  sendJson(res, e.status, errorBody(e), headers);
}

function mediaType(req: IncomingMessage): string | undefined {
  return req.headers['content-type']?.split(';')[0]?.trim().toLowerCase();
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** The isolation in effect: what the setting asks for, given what the runtime allows. */
function processIsolation(setting: AgentConfig['processIsolation'], logger: Logger): ProcessIsolation {
  if (setting === 'sweep') return 'sweep';
  if (pidNamespacesAvailable()) return 'pid-namespace';
  const why = `${UNSHARE} ${UNSHARE_ARGS.join(' ')} failed: user namespaces are not allowed here (or util-linux unshare is missing)`;
  if (setting === 'pid-namespace') throw new Error(`AGENT_PROCESS_ISOLATION=pid-namespace but ${why}`);
  logger.warn(`${why}; commands are ended through their process group and the exec-id sweep, which a process that clears its environment escapes`);
  return 'sweep';
}

export function createAgentServer(config: AgentConfig, deps: AgentDeps): AgentServer {
  const { logger } = deps;
  const registry = deps.registry ?? createMetricsRegistry({ program: 'agent', defaultMetrics: false });
  // Every request runs under the guard: an unexpected error is logged with a stable code, counted
  // (unexpected_errors_total), answered 500 or its connection closed, and the agent keeps serving.
  const guard = createGuard({ logger, registry });
  const workspace = new Workspace(config.workspaceRoot);
  const schema = executeRequestSchema(config);
  const startedAt = Date.now();
  const executions = new Set<Execution>();
  let starting = 0; // admitted, not yet spawned: counted against the limit too
  let outputReserved = 0; // bytes of output the running buffered commands may keep
  // Hashing both sides gives equal-length inputs to timingSafeEqual, so the token's length leaks nothing either.
  const tokenDigest = config.token === undefined ? undefined : digest(config.token);
  const isolation = processIsolation(config.processIsolation, logger);
  const execOptions = { killGraceMs: config.killGraceMs, outputDrainMs: config.outputDrainMs, isolation };

  const podTokenCheck = config.podToken ? podTokenAuth(config.podToken) : undefined;

  async function authorized(req: IncomingMessage): Promise<boolean> {
    if (podTokenCheck) {
      const result = await podTokenCheck(req.headers.authorization);
      if (!result.ok) logger.info({ reason: result.reason }, 'agent token refused');
      return result.ok;
    }
    if (!tokenDigest) return true;
    const header = req.headers.authorization;
    const m = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    return m !== null && timingSafeEqual(digest(m[1]!), tokenDigest);
  }

  function logCommand(argv0: string, r: ExecResult, mode: string): void {
    logger.info({
      execId: r.execId, argv0, mode, reason: r.reason, exitCode: r.exitCode, signal: r.signal,
      stdoutBytes: r.stdoutBytes, stderrBytes: r.stderrBytes, durationMs: r.durationMs,
    }, 'command');
  }

  async function execute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (shutdown.started) throw new WorkspaceSandboxError('WS_ERR_UNAVAILABLE', 'the agent is shutting down');
    const type = mediaType(req);
    if (type !== undefined && type !== 'application/json') {
      throw new WorkspaceSandboxError('WS_ERR_UNSUPPORTED_MEDIA_TYPE', `/execute takes application/json, not ${type}`);
    }
    const raw = await readBody(req, config.maxRequestBytes);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (err) {
      throw new WorkspaceSandboxError('WS_ERR_INVALID_JSON', `request body is not valid JSON: ${(err as Error).message}`);
    }
    const request = parseExecuteRequest(schema, body);
    const plan = planSpawn(request, config);
    if (executions.size + starting >= config.maxConcurrent) {
      throw new WorkspaceSandboxError('WS_ERR_TOO_MANY_REQUESTS', `${config.maxConcurrent} commands are already running; retry later`);
    }
    const encoding = request.encoding ?? 'utf8';
    const streaming = (req.headers.accept ?? '').includes(NDJSON);
    const maxOutputBytes = request.maxOutputBytes;
    // Buffered output is kept until the answer: reserve what this command may keep (both streams).
    const reserve = streaming ? 0 : 2 * (maxOutputBytes ?? config.defaultMaxOutputBytes);
    if (outputReserved + reserve > config.outputMemoryBytes) {
      throw new WorkspaceSandboxError('WS_ERR_TOO_MANY_REQUESTS', `running commands already keep ${outputReserved} of ${config.outputMemoryBytes} bytes of output memory; retry later or ask for less maxOutputBytes`);
    }
    outputReserved += reserve;
    try {
      await run(req, res, plan, request, streaming, encoding);
    } finally {
      outputReserved -= reserve;
    }
  }

  async function run(req: IncomingMessage, res: ServerResponse, plan: SpawnPlan, request: ExecuteRequest, streaming: boolean, encoding: 'utf8' | 'base64'): Promise<void> {
    const maxOutputBytes = request.maxOutputBytes;
    const encoders: Record<StreamName, FrameEncoder> | undefined = streaming
      ? { stdout: new FrameEncoder('stdout', encoding), stderr: new FrameEncoder('stderr', encoding) }
      : undefined;
    let exec: Execution | undefined;
    let waitingForDrain = false;
    const execId = newExecId();
    // Output may arrive before Execution.start resolves: the first frame sends the head then.
    const streamHead = () => {
      if (res.headersSent) return;
      res.writeHead(200, { 'content-type': NDJSON, 'cache-control': 'no-store', 'x-exec-id': execId });
      res.flushHeaders();
    };
    const onData = (name: StreamName, chunk: Buffer) => {
      if (res.destroyed) return;
      streamHead();
      const line = encoders![name].encode(chunk);
      // Back-pressure: a slow reader pauses the command's pipes instead of growing our buffers.
      if (line !== undefined && !res.write(line) && exec && !waitingForDrain) {
        waitingForDrain = true;
        exec.pause();
        res.once('drain', () => {
          waitingForDrain = false;
          exec!.resume();
        });
      }
    };
    starting++;
    try {
      exec = await Execution.start({
        file: plan.file,
        args: plan.args,
        cwd: plan.cwd,
        env: plan.env,
        stdin: plan.stdin,
        timeoutMs: request.timeoutMs ?? config.defaultTimeoutMs,
        encoding,
        output: streaming
          ? { mode: 'stream', limitBytes: maxOutputBytes, onData }
          : { mode: 'buffered', maxBytes: maxOutputBytes ?? config.defaultMaxOutputBytes },
      }, execOptions, execId);
    } catch (err) {
      throw cwdProblem(plan.cwd) ?? err;
    } finally {
      starting--;
    }
    const running = exec;
    executions.add(running);
    // The client went away before the answer: end the command (and its whole tree).
    res.once('close', () => {
      if (!res.writableFinished) running.cancel('client_cancel');
    });
    if (streaming) streamHead();
    const result = await running.result;
    executions.delete(running);
    logCommand(plan.argv0, result, streaming ? 'stream' : 'buffered');
    const { stdout, stderr, ...summary } = result;
    if (streaming) {
      // Partial characters left at the end: flushed as-is when the stream really ended there,
      // dropped (and counted) when the agent cut the stream.
      const tail: string[] = [];
      const cut = result.reason === 'output_limit' || result.reason === 'client_cancel';
      for (const name of ['stdout', 'stderr'] as const) {
        const encoder = encoders![name];
        if (cut) summary[`${name}TruncatedBytes`] += encoder.pendingBytes;
        else {
          const line = encoder.flush();
          if (line !== undefined) tail.push(line);
        }
      }
      if (res.destroyed) return;
      res.end(`${tail.join('')}${JSON.stringify({ type: 'exit', ...summary })}\n`);
      return;
    }
    if (res.destroyed) return;
    sendJson(res, 200, {
      ...summary,
      encoding,
      stdout: stdout!.toString(encoding),
      stderr: stderr!.toString(encoding),
    }, { 'x-exec-id': result.execId });
  }

  function filePath(pathname: string): string {
    const rest = pathname === AGENT_PATHS.files ? '' : pathname.slice(AGENT_PATHS.files.length + 1);
    try {
      return decodeURIComponent(rest);
    } catch {
      throw new WorkspaceSandboxError('WS_ERR_VALIDATION', 'path is not valid percent-encoding');
    }
  }

  async function files(req: IncomingMessage, res: ServerResponse, pathname: string, query: URLSearchParams): Promise<void> {
    const path = filePath(pathname);
    try {
      await fileOperation(req, res, path, query);
    } catch (err) {
      throw fileSystemError(err, path);
    }
  }

  async function fileOperation(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams): Promise<void> {
    switch (req.method) {
      case 'GET': {
        if (query.has('list')) {
          sendJson(res, 200, { path, entries: await workspace.list(path) });
          return;
        }
        const file = await workspace.openForRead(path);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': file.size,
          'last-modified': file.mtime.toUTCString(),
          'x-file-mode': octal(file.mode),
        });
        try {
          await pipeline(file.handle.createReadStream({ autoClose: true }), res);
        } catch {
          res.destroy(); // client gone, or the file vanished part-way: the length tells the client
        }
        return;
      }
      case 'PUT': {
        const modeText = query.get('mode');
        let mode: number | undefined;
        if (modeText !== null) {
          if (!/^0?[0-7]{3}$/.test(modeText)) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', 'mode must be octal permission bits such as 0644 (no setuid/setgid/sticky)');
          mode = parseInt(modeText, 8);
        }
        if (Number(req.headers['content-length']) > config.maxFileBytes) {
          throw new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', `file exceeds the size limit of ${config.maxFileBytes} bytes`);
        }
        // destroyOnReturn false: a refused upload leaves the connection to sendError, which drains it.
        const r = await workspace.writeFile(path, req.iterator({ destroyOnReturn: false }), { mode, maxBytes: config.maxFileBytes });
        sendJson(res, r.created ? 201 : 200, { path, size: r.size, mode: octal(r.mode) });
        return;
      }
      case 'DELETE':
        await workspace.remove(path, query.has('recursive'));
        res.writeHead(204).end();
        return;
      case 'POST': {
        if (mediaType(req) !== TAR) {
          throw new WorkspaceSandboxError('WS_ERR_UNSUPPORTED_MEDIA_TYPE', `batch upload takes ${TAR}`);
        }
        if (Number(req.headers['content-length']) > config.maxUploadBytes) {
          throw new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', `upload exceeds the size limit of ${config.maxUploadBytes} bytes`);
        }
        const summary = await workspace.extractTar(path, req.iterator({ destroyOnReturn: false }), {
          maxEntryBytes: config.maxFileBytes,
          maxTotalBytes: config.maxUploadBytes,
          maxEntries: config.maxTarEntries,
        });
        sendJson(res, 200, { path, ...summary });
        return;
      }
      default:
        throw methodNotAllowed(res, 'GET, PUT, DELETE, POST');
    }
  }

  function methodNotAllowed(res: ServerResponse, allow: string): WorkspaceSandboxError {
    res.setHeader('allow', allow);
    return new WorkspaceSandboxError('WS_ERR_METHOD_NOT_ALLOWED', `method not allowed; use ${allow}`);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const pathname = q === -1 ? url : url.slice(0, q);
    if (pathname === AGENT_PATHS.health) {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw methodNotAllowed(res, 'GET');
      sendJson(res, shutdown.started ? 503 : 200, {
        status: shutdown.started ? 'shutting_down' : 'ok',
        version: VERSION,
        uptimeMs: Date.now() - startedAt,
        processIsolation: isolation,
      });
      return;
    }
    if (!(await authorized(req))) {
      throw new WorkspaceSandboxError('WS_ERR_UNAUTHORIZED', 'a valid bearer token is required');
    }
    if (pathname === AGENT_PATHS.metrics) {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw methodNotAllowed(res, 'GET');
      return metricsHandler(registry)(req, res);
    }
    if (pathname === AGENT_PATHS.execute) {
      if (req.method !== 'POST') throw methodNotAllowed(res, 'POST');
      return execute(req, res);
    }
    if (pathname === AGENT_PATHS.files || pathname.startsWith(`${AGENT_PATHS.files}/`)) {
      return files(req, res, pathname, new URLSearchParams(q === -1 ? '' : url.slice(q + 1)));
    }
    throw new WorkspaceSandboxError('WS_ERR_NOT_FOUND', `no route for ${req.method} ${pathname}`);
  }

  const server = createServer({
    // Large uploads may legitimately take long; the backend is the only client.
    requestTimeout: 0,
    // Streaming frames are ~90 KB (64 KiB of output in base64): a larger buffer saves a pause and
    // resume of the command's pipes per frame.
    highWaterMark: 1024 * 1024,
  }, guard.wrap('agent.request', async (req: IncomingMessage, res: ServerResponse) => {
    try {
      await handle(req, res);
    } catch (err) {
      const e = toWorkspaceSandboxError(err);
      // Refusals are ours (typed); anything else is a bug: logged with WS_ERR_INTERNAL and counted.
      if (!isWorkspaceSandboxError(err) || e.code === 'WS_ERR_INTERNAL') guard.report('agent.request', err, { method: req.method, path: req.url?.split('?')[0] });
      const headers: Record<string, string | number> = e.code === 'WS_ERR_TOO_MANY_REQUESTS' ? { 'retry-after': RETRY_AFTER_S } : {};
      if (e.code === 'WS_ERR_UNAUTHORIZED') headers['www-authenticate'] = 'Bearer realm="workspace-sandbox-agent"';
      await sendError(req, res, e, headers);
    }
  }, (_err, _req, res) => {
    if (res.headersSent) return void res.destroy();
    sendJson(res, 500, errorBody(new WorkspaceSandboxError('WS_ERR_INTERNAL', 'internal error')), { connection: 'close' });
  }));

  const shutdown = createShutdown({
    servers: [server],
    drainTimeoutMs: config.drainTimeoutMs,
    logger,
    beforeDrain: async () => {
      const results = [...executions].map((e) => {
        e.cancel('agent_shutdown');
        return e.result;
      });
      await Promise.all(results);
    },
  });

  return {
    server,
    workspace,
    processIsolation: isolation,
    get running() {
      return executions.size;
    },
    shutdown,
  };
}
