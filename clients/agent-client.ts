// A small typed client of the workspace agent (openapi/agent.yaml), over TCP or a Unix socket.
//
//   const agent = new AgentClient({ baseUrl: 'http://10.0.3.7:8081', token });  // or { socketPath }
//   const r = await agent.execute({ cmd: ['python3', '-c', 'print(1+1)'], timeoutMs: 10_000 });
//   for await (const frame of agent.executeStream({ cmd: ['make', 'test'] })) { ... }   // ends with 'exit'
//   await agent.uploadTar('src', tarStream);  await agent.getFile('src/out.log');
//   // errors: AgentApiError { status, code: 'WS_ERR_…', details }
//
// node:http rather than fetch: fetch cannot dial a Unix socket without undici's own Agent (a
// development dependency here), and one transport for both listen modes keeps their behaviour
// identical: streamed request bodies with back-pressure, and a dropped connection when the caller
// stops reading a streamed /execute (which is how the agent learns to end the command).
import { Agent as HttpAgent, request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { AGENT_PATHS } from '../lib/constants.ts';
import type { ErrorCode } from '../lib/errors.ts';
import { failedOnStaleConnection, IDEMPOTENT_METHODS } from '../lib/http.ts';
import type { ExecSummary, ExitReason } from '../agent/execute.ts';
import type { FileEntry } from '../agent/files.ts';

// Wire types the agent itself defines; the rest of this file describes JSON as it travels.
export type { ExecSummary, ExitReason, FileEntry };

// ---- Wire types (openapi/agent.yaml, components.schemas) ----------------------------------------

export interface AgentHealth {
  status: 'ok' | 'shutting_down';
  version: string;
  uptimeMs: number;
  processIsolation: 'pid-namespace' | 'sweep';
}

export interface ExecuteRequest {
  /** argv; with `shell`, cmd[0] is a /bin/sh script and the rest its $1… */
  cmd: string[];
  shell?: boolean;
  /** Absolute, or relative to the workspace root; must exist. Default: the root. */
  cwd?: string;
  /** Merged over the agent's clean base environment. */
  env?: Record<string, string>;
  stdin?: string | { base64: string };
  timeoutMs?: number;
  maxOutputBytes?: number;
  encoding?: 'utf8' | 'base64';
}


export interface ExecuteResult extends ExecSummary {
  encoding: 'utf8' | 'base64';
  stdout: string;
  stderr: string;
}

export interface OutputFrame {
  type: 'stdout' | 'stderr';
  data: string;
  offset: number;
}

export interface ExitFrame extends ExecSummary {
  type: 'exit';
}

export type ExecFrame = OutputFrame | ExitFrame;


export interface FileList {
  path: string;
  entries: FileEntry[];
}

export interface FileWritten {
  path: string;
  size: number;
  mode: string;
  /** true for 201 (new file), false for 200 (replaced). */
  created: boolean;
}

export interface UploadSummary {
  path: string;
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
}

export interface FileStream {
  stream: IncomingMessage;
  size: number;
  mode: string;
  mtime: Date | undefined;
}

export type Body = string | Uint8Array | Readable | AsyncIterable<Uint8Array>;

// ---- Errors -------------------------------------------------------------------------------------

/** Code of an answer that is not the agent's `{error:{code,message}}` body (e.g. a foreign proxy's). */
export const UNEXPECTED_RESPONSE = 'WS_ERR_UNEXPECTED_RESPONSE';

/** An error answer of the agent, carrying its stable code. */
export class AgentApiError extends Error {
  readonly status: number;
  readonly code: ErrorCode | typeof UNEXPECTED_RESPONSE;
  readonly details: unknown;
  /** Seconds from Retry-After (429). */
  readonly retryAfterS: number | undefined;

  constructor(status: number, code: ErrorCode | typeof UNEXPECTED_RESPONSE, message: string, details?: unknown, retryAfterS?: number) {
    super(message);
    this.name = 'AgentApiError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfterS = retryAfterS;
  }
}

/** The NDJSON stream ended without its mandatory exit frame (connection lost, agent killed). */
export class AgentStreamError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AgentStreamError';
  }
}

// ---- Client -------------------------------------------------------------------------------------

export interface AgentClientOptions {
  /** `http://host:port` (TCP). Exactly one of baseUrl and socketPath. */
  baseUrl?: string;
  /** The agent's Unix socket (`AGENT_LISTEN_MODE=uds`). */
  socketPath?: string;
  /**
   * Bearer token. In the cluster: a per-pod token the backend mints for this Pod's UID
   * (`signPodToken(privateKeyPem, { purpose: 'agent', podUid, ttlSeconds })`, lib/pod-token.ts);
   * elsewhere the content of the agent's AGENT_TOKEN_FILE.
   */
  token?: string;
  /** Keep connections open between calls (default true). */
  keepAlive?: boolean;
}

export interface CallOptions {
  signal?: AbortSignal;
}

interface Sent {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Body;
  signal?: AbortSignal | undefined;
}

const JSON_TYPE = 'application/json';
const NDJSON_TYPE = 'application/x-ndjson';
const TAR_TYPE = 'application/x-tar';

/** Each retry takes the next pooled connection, which may have gone idle too; then a new one. */
const MAX_ATTEMPTS = 3;

/** A request that failed on a reused keep-alive connection before any answer arrived. */
class StaleConnection extends Error {
  declare readonly cause: Error;
  constructor(cause: Error) {
    super(cause.message, { cause });
  }
}

/** `a/b c/d` → `a/b%20c/d`: each segment encoded, the separators kept readable. */
export function encodeFilePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

async function readAll(res: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function isStreamBody(body: Body): body is Readable | AsyncIterable<Uint8Array> {
  return typeof body !== 'string' && !(body instanceof Uint8Array);
}

export class AgentClient {
  readonly #target: { host: string; port: number } | { socketPath: string };
  readonly #token: string | undefined;
  readonly #agent: HttpAgent;

  constructor(options: AgentClientOptions) {
    if ((options.baseUrl === undefined) === (options.socketPath === undefined)) {
      throw new TypeError('AgentClient needs exactly one of baseUrl and socketPath');
    }
    if (options.baseUrl !== undefined) {
      const url = new URL(options.baseUrl);
      if (url.protocol !== 'http:') throw new TypeError(`AgentClient speaks plain HTTP; got ${url.protocol}`);
      this.#target = { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 80) };
    } else {
      this.#target = { socketPath: options.socketPath! };
    }
    this.#token = options.token;
    this.#agent = new HttpAgent({ keepAlive: options.keepAlive ?? true });
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.#agent.destroy();
  }

  /**
   * Opens a request and resolves with the response head; error answers become AgentApiError.
   * A kept-alive connection the agent closed as idle can fail the next request before the agent
   * read any of it. Such a request is sent again when repeating it is harmless (an idempotent
   * method and a body still in hand); a POST could have run a command, so its error is the caller's.
   */
  async #send(sent: Sent): Promise<IncomingMessage> {
    const replayable = IDEMPOTENT_METHODS.has(sent.method) && (sent.body === undefined || !isStreamBody(sent.body));
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#sendOnce(sent);
      } catch (err) {
        if (!(err instanceof StaleConnection)) throw err;
        if (!replayable || attempt >= MAX_ATTEMPTS) throw err.cause;
      }
    }
  }

  async #sendOnce(sent: Sent): Promise<IncomingMessage> {
    const headers: Record<string, string> = { ...sent.headers };
    if (this.#token !== undefined) headers.authorization = `Bearer ${this.#token}`;
    const body = sent.body;
    if (body !== undefined && !isStreamBody(body)) headers['content-length'] = String(Buffer.byteLength(body));
    const source = body !== undefined && isStreamBody(body) ? (body instanceof Readable ? body : Readable.from(body)) : undefined;
    const req = request({ ...this.#target, agent: this.#agent, method: sent.method, path: sent.path, headers, signal: sent.signal });
    let responded = false;
    const response = new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', (res) => {
        responded = true;
        // An early answer (413, 400) ends the upload: stop reading the caller's stream.
        if (source && !source.readableEnded) {
          source.unpipe(req);
          source.destroy();
        }
        resolve(res);
      });
      // Kept for the request's life: after an early answer, a late write error (EPIPE) is moot.
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (responded) return;
        reject(failedOnStaleConnection(req, err) ? new StaleConnection(err) : err);
      });
    });
    if (source) {
      // Not pipeline(): it would destroy the request, and with it the answer, when the agent
      // answers early and closes before it has read the whole body.
      source.once('error', (err) => {
        if (!responded) req.destroy(err);
      });
      source.pipe(req);
    } else {
      req.end(body);
    }
    const res = await response;
    if (res.statusCode! >= 400) throw await toApiError(res);
    return res;
  }

  async #json<T>(sent: Sent): Promise<{ body: T; status: number; headers: IncomingHttpHeaders }> {
    const res = await this.#send({ ...sent, headers: { accept: JSON_TYPE, ...sent.headers } });
    const text = (await readAll(res)).toString('utf8');
    return { body: JSON.parse(text) as T, status: res.statusCode!, headers: res.headers };
  }

  /** GET /health. A shutting-down agent answers 503 with the same body: returned, not thrown. */
  async health(options: CallOptions = {}): Promise<AgentHealth> {
    try {
      return (await this.#json<AgentHealth>({ method: 'GET', path: AGENT_PATHS.health, signal: options.signal })).body;
    } catch (err) {
      if (err instanceof AgentApiError && err.status === 503 && isHealth(err.details)) return err.details;
      throw err;
    }
  }

  /** POST /execute, buffered: resolves once the command has ended (whatever its exit code). */
  async execute(req: ExecuteRequest, options: CallOptions = {}): Promise<ExecuteResult> {
    const { body } = await this.#json<ExecuteResult>({
      method: 'POST', path: AGENT_PATHS.execute, headers: { 'content-type': JSON_TYPE }, body: JSON.stringify(req), signal: options.signal,
    });
    return body;
  }

  /**
   * POST /execute, streaming: yields output frames as they arrive and finally the exit frame.
   * Leaving the loop early (break, throw) or aborting drops the connection, which makes the agent
   * end the command and its whole process tree (reason `client_cancel`).
   */
  async *executeStream(req: ExecuteRequest, options: CallOptions = {}): AsyncGenerator<ExecFrame, ExitFrame, undefined> {
    const res = await this.#send({
      method: 'POST', path: AGENT_PATHS.execute,
      headers: { 'content-type': JSON_TYPE, accept: NDJSON_TYPE }, body: JSON.stringify(req), signal: options.signal,
    });
    let exit: ExitFrame | undefined;
    let pending = '';
    try {
      res.setEncoding('utf8');
      for await (const chunk of res as AsyncIterable<string>) {
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf('\n')) !== -1) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line === '') continue;
          const frame = JSON.parse(line) as ExecFrame;
          if (frame.type === 'exit') exit = frame;
          yield frame;
        }
      }
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw new AgentStreamError('the /execute stream broke before its exit frame', { cause: err });
    } finally {
      if (!res.complete) res.destroy();
    }
    if (!exit) throw new AgentStreamError('the /execute stream ended without an exit frame');
    return exit;
  }

  /** GET /files/<path>: the whole file. */
  async getFile(path: string, options: CallOptions = {}): Promise<Buffer> {
    const { stream } = await this.getFileStream(path, options);
    return readAll(stream);
  }

  /** GET /files/<path>, streamed: the caller reads (or destroys) `stream`. */
  async getFileStream(path: string, options: CallOptions = {}): Promise<FileStream> {
    const res = await this.#send({ method: 'GET', path: `${AGENT_PATHS.files}/${encodeFilePath(path)}`, signal: options.signal });
    const modified = res.headers['last-modified'];
    return {
      stream: res,
      size: Number(res.headers['content-length']),
      mode: String(res.headers['x-file-mode'] ?? ''),
      mtime: modified ? new Date(modified) : undefined,
    };
  }

  /** PUT /files/<path>: writes atomically (parents created); `mode` as a number (0o755) or octal text. */
  async putFile(path: string, body: Body, options: CallOptions & { mode?: number | string } = {}): Promise<FileWritten> {
    const mode = options.mode === undefined ? '' : `?mode=${typeof options.mode === 'number' ? options.mode.toString(8).padStart(4, '0') : options.mode}`;
    const r = await this.#json<Omit<FileWritten, 'created'>>({
      method: 'PUT', path: `${AGENT_PATHS.files}/${encodeFilePath(path)}${mode}`,
      headers: { 'content-type': 'application/octet-stream' }, body, signal: options.signal,
    });
    return { ...r.body, created: r.status === 201 };
  }

  /** DELETE /files/<path>; a non-empty directory needs `recursive`. */
  async deleteFile(path: string, options: CallOptions & { recursive?: boolean } = {}): Promise<void> {
    const res = await this.#send({
      method: 'DELETE', path: `${AGENT_PATHS.files}/${encodeFilePath(path)}${options.recursive ? '?recursive' : ''}`, signal: options.signal,
    });
    res.resume();
  }

  /** GET /files/<dir>?list (the root when `dir` is empty). */
  async listFiles(dir = '', options: CallOptions = {}): Promise<FileList> {
    const path = dir === '' ? AGENT_PATHS.files : `${AGENT_PATHS.files}/${encodeFilePath(dir)}`;
    return (await this.#json<FileList>({ method: 'GET', path: `${path}?list`, signal: options.signal })).body;
  }

  /** POST /files/<dir> with a tar stream or buffer: extracts below `dir` (the root when empty). */
  async uploadTar(dir: string, tar: Body, options: CallOptions = {}): Promise<UploadSummary> {
    const path = dir === '' ? AGENT_PATHS.files : `${AGENT_PATHS.files}/${encodeFilePath(dir)}`;
    return (await this.#json<UploadSummary>({ method: 'POST', path, headers: { 'content-type': TAR_TYPE }, body: tar, signal: options.signal })).body;
  }
}

function isHealth(value: unknown): value is AgentHealth {
  return typeof value === 'object' && value !== null && typeof (value as AgentHealth).status === 'string' && 'uptimeMs' in value;
}

async function toApiError(res: IncomingMessage): Promise<AgentApiError> {
  const status = res.statusCode!;
  const text = (await readAll(res).catch(() => Buffer.alloc(0))).toString('utf8');
  const retry = res.headers['retry-after'];
  const retryAfterS = retry === undefined ? undefined : Number(retry);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return new AgentApiError(status, UNEXPECTED_RESPONSE, `HTTP ${status}: ${text.slice(0, 200)}`, undefined, retryAfterS);
  }
  const e = (parsed as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
  if (e && typeof e.code === 'string' && typeof e.message === 'string') {
    return new AgentApiError(status, e.code as ErrorCode, e.message, e.details, retryAfterS);
  }
  // A body that is not an error envelope (a 503 /health) is handed back as details.
  return new AgentApiError(status, UNEXPECTED_RESPONSE, `HTTP ${status}`, parsed, retryAfterS);
}
