// What both backends share once a workspace exists: its agent (exec, health) and its proxy's
// /rules, reached with the workspace's own credentials. A backend supplies where they are
// (`agentOf`, `rulesOf`) and what the orchestrator says when they do not answer (`failureOf`).
import { AgentApiError, AgentClient, type ExecFrame, type ExecuteRequest, type ExitFrame } from '../clients/agent-client.ts';
import { ProxyAdminApiError, ProxyAdminClient, type Rule, type RuleSet } from '../clients/proxy-admin-client.ts';
import type {
  AgentAddress, BackendKind, BinaryExecResult, CreateOptions, DestroyOptions, ExecOptions, ExecResult, HealthOptions, Workspace, WorkspaceBackend,
} from './backend.ts';
import { WorkspaceError } from './errors.ts';

export interface AgentTarget {
  address: AgentAddress;
  token: string | undefined;
}

export interface RulesTarget {
  baseUrl: string;
  token: string | undefined;
  fetch?: typeof fetch;
}

/** First /health retries come fast (a runc container answers in ~0.3 s), then back off to this. */
const MAX_POLL_MS = 200;
const DEFAULT_READY_TIMEOUT_MS = 60_000;

const CONVERSATION_ID = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

/** Conversation ids become label values (Kubernetes: 63 characters, alphanumeric ends). */
export function checkConversationId(id: string): void {
  if (!CONVERSATION_ID.test(id)) {
    throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', `conversation id ${JSON.stringify(id)} must be 1-63 letters, digits, ".", "_" or "-", starting and ending with a letter or digit`);
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

function toRequest(cmd: string[], options: ExecOptions, encoding: 'utf8' | 'base64'): ExecuteRequest {
  if (!Array.isArray(cmd) || cmd.length === 0) throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', 'cmd must be a non-empty argv array');
  const req: ExecuteRequest = { cmd, encoding };
  if (options.cwd !== undefined) req.cwd = options.cwd;
  if (options.env !== undefined) req.env = options.env;
  if (options.timeoutMs !== undefined) req.timeoutMs = options.timeoutMs;
  if (options.maxOutputBytes !== undefined) req.maxOutputBytes = options.maxOutputBytes;
  if (options.stdin !== undefined) req.stdin = typeof options.stdin === 'string' ? options.stdin : { base64: Buffer.from(options.stdin).toString('base64') };
  return req;
}

export abstract class AgentBackedBackend implements WorkspaceBackend {
  abstract readonly kind: BackendKind;
  readonly #agents = new Map<string, AgentClient>();

  abstract create(conversationId: string | undefined, options?: CreateOptions): Promise<Workspace>;
  abstract destroy(id: string, options?: DestroyOptions): Promise<void>;
  abstract get(id: string): Promise<Workspace>;
  abstract list(): Promise<Workspace[]>;
  abstract logs(id: string, options?: { tail?: number }): Promise<string>;
  abstract assign(id: string, conversationId: string, labels?: Record<string, string>): Promise<Workspace>;
  /** Where the agent of `id` listens and the token it wants (cached by the backend: exec's hot path). */
  protected abstract agentOf(id: string): Promise<AgentTarget>;
  protected abstract rulesOf(id: string): Promise<RulesTarget>;
  /** The orchestrator's view when the agent does not answer: an error to throw, or undefined (still starting). */
  protected abstract failureOf(id: string): Promise<WorkspaceError | undefined>;
  /** Whether the orchestrator runs it (container running, Pod Running and not terminating). */
  protected abstract runningOf(id: string): Promise<boolean>;

  protected async agent(id: string): Promise<AgentClient> {
    let client = this.#agents.get(id);
    if (!client) {
      const target = await this.agentOf(id);
      client = new AgentClient({ ...target.address, ...(target.token ? { token: target.token } : {}) });
      this.#agents.set(id, client);
    }
    return client;
  }

  /** Drops the cached client of a destroyed workspace. */
  protected forget(id: string): void {
    this.#agents.get(id)?.close();
    this.#agents.delete(id);
  }

  /** Agent errors keep the agent's code; a dead connection is explained by the orchestrator. */
  protected async agentFailure(id: string, err: unknown): Promise<unknown> {
    if (err instanceof WorkspaceError) return err;
    if (err instanceof AgentApiError) {
      return new WorkspaceError('WS_ERR_AGENT_ERROR', `agent of ${id}: ${err.message}`, { details: { status: err.status, code: err.code, details: err.details }, cause: err });
    }
    if ((err as Error)?.name === 'AbortError') return err;
    this.forget(id);
    const failure = await this.failureOf(id).catch((e: unknown) => e);
    if (failure) return failure;
    return new WorkspaceError('WS_ERR_AGENT_NOT_READY', `agent of ${id} did not answer: ${(err as Error).message}`, { cause: err });
  }

  async exec(id: string, cmd: string[], options: ExecOptions = {}): Promise<ExecResult> {
    const req = toRequest(cmd, options, 'utf8');
    try {
      const r = await (await this.agent(id)).execute(req, options.signal ? { signal: options.signal } : {});
      return {
        exitCode: r.exitCode, signal: r.signal, reason: r.reason, durationMs: r.durationMs,
        stdoutTruncatedBytes: r.stdoutTruncatedBytes, stderrTruncatedBytes: r.stderrTruncatedBytes, stdout: r.stdout, stderr: r.stderr,
      };
    } catch (err) {
      throw await this.agentFailure(id, err);
    }
  }

  async execBinary(id: string, cmd: string[], options: ExecOptions = {}): Promise<BinaryExecResult> {
    const req = toRequest(cmd, options, 'base64');
    try {
      const r = await (await this.agent(id)).execute(req, options.signal ? { signal: options.signal } : {});
      return {
        exitCode: r.exitCode, signal: r.signal, reason: r.reason, durationMs: r.durationMs,
        stdoutTruncatedBytes: r.stdoutTruncatedBytes, stderrTruncatedBytes: r.stderrTruncatedBytes,
        stdout: Buffer.from(r.stdout, 'base64'), stderr: Buffer.from(r.stderr, 'base64'),
      };
    } catch (err) {
      throw await this.agentFailure(id, err);
    }
  }

  async *execStream(id: string, cmd: string[], options: ExecOptions = {}): AsyncGenerator<ExecFrame, ExitFrame, undefined> {
    const req = toRequest(cmd, options, 'utf8');
    let stream: AsyncGenerator<ExecFrame, ExitFrame, undefined>;
    try {
      stream = (await this.agent(id)).executeStream(req, options.signal ? { signal: options.signal } : {});
    } catch (err) {
      throw await this.agentFailure(id, err);
    }
    try {
      return yield* stream;
    } catch (err) {
      throw await this.agentFailure(id, err);
    }
  }

  /** With checkAgent (the default) an answering agent is the proof: its container runs; no orchestrator call. */
  async isHealthy(id: string, options: HealthOptions = {}): Promise<boolean> {
    if (options.checkAgent === false) return this.runningOf(id);
    try {
      return (await (await this.agent(id)).health({ signal: AbortSignal.timeout(5_000) })).status === 'ok';
    } catch {
      this.forget(id);
      return false;
    }
  }

  async waitForAgentReady(workspace: Workspace, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Workspace> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    let delay = 5;
    let last: unknown;
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        const client = await this.agent(workspace.id);
        const health = await client.health({ signal: AbortSignal.timeout(Math.max(1, Math.min(2_000, deadline - Date.now()))) });
        if (health.status === 'ok') return { ...workspace, readyAt: workspace.readyAt ?? new Date(), status: 'running' };
        last = new Error(`agent status ${health.status}`);
      } catch (err) {
        last = err;
        this.forget(workspace.id);
        const failure = await this.failureOf(workspace.id);
        if (failure) throw failure;
      }
      if (Date.now() >= deadline) {
        throw new WorkspaceError('WS_ERR_AGENT_NOT_READY', `agent of ${workspace.id} not ready after ${timeoutMs} ms: ${(last as Error)?.message ?? 'no answer'}`, { cause: last });
      }
      await sleep(Math.min(delay, Math.max(1, deadline - Date.now())), options.signal);
      delay = Math.min(delay * 2, MAX_POLL_MS);
    }
  }

  protected async rulesClient(id: string): Promise<ProxyAdminClient> {
    const target = await this.rulesOf(id);
    return new ProxyAdminClient({ baseUrl: target.baseUrl, ...(target.token ? { token: target.token } : {}), ...(target.fetch ? { fetch: target.fetch } : {}) });
  }

  async setRules(id: string, rules: readonly Rule[]): Promise<RuleSet> {
    try {
      const r = await (await this.rulesClient(id)).putRules(rules);
      return { version: r.version, rules: r.rules };
    } catch (err) {
      throw await this.rulesFailure(id, err);
    }
  }

  async getRules(id: string): Promise<RuleSet> {
    try {
      const r = await (await this.rulesClient(id)).getRules();
      return { version: r.version, rules: r.rules };
    } catch (err) {
      throw await this.rulesFailure(id, err);
    }
  }

  protected async rulesFailure(id: string, err: unknown): Promise<unknown> {
    if (err instanceof WorkspaceError) return err;
    if (err instanceof ProxyAdminApiError) {
      const code = err.status === 400 ? 'WS_ERR_INVALID_OPTIONS' : 'WS_ERR_RULES_ERROR';
      return new WorkspaceError(code, `rules of ${id}: ${err.message}`, { details: { status: err.status, code: err.code, details: err.details }, cause: err });
    }
    const failure = await this.failureOf(id).catch((e: unknown) => e);
    return failure ?? new WorkspaceError('WS_ERR_RULES_ERROR', `proxy of ${id} did not answer: ${(err as Error).message}`, { cause: err });
  }

  async close(): Promise<void> {
    for (const id of [...this.#agents.keys()]) this.forget(id);
  }
}
