// The workspace SDK's one interface: what a backend service needs from a workspace, whichever
// orchestrator runs it. Two implementations: KubernetesBackend (a plain Pod the webhook hardens)
// and DockerBackend (the local and rollback mode), chosen by one setting (CONTAINER_BACKEND, see
// sdk/config.ts). The warm pool (sdk/pool.ts) and the collector (sdk/gc.ts) use nothing else.
//
//   const backend = createBackend(loadSdkConfig());
//   const ws = await backend.create('conv-42', { allowedDomains: ['api.github.com'], ttlSeconds: 3600 });
//   const r = await backend.exec(ws.id, ['git', 'status']);     // { exitCode, stdout, stderr }
//   await backend.destroy(ws.id);
import type { ExecFrame, ExitFrame, ExitReason } from '../clients/agent-client.ts';
import type { Rule, RuleSet } from '../clients/proxy-admin-client.ts';

export type { ExecFrame, ExitFrame, Rule, RuleSet };

export type BackendKind = 'docker' | 'kubernetes';

/** How the agent is reached: a Unix socket on this host (Docker) or the Pod IP (Kubernetes). */
export type AgentAddress = { socketPath: string } | { baseUrl: string };

/** Labels the SDK sets and reads (prefix workspace-sandbox.io/); caller labels go beside them. */
export interface Workspace {
  /** The Pod's or container's name: what every other call takes. */
  readonly id: string;
  /** The orchestrator's unique id (Pod UID, container id): the subject of per-workspace tokens. */
  readonly uid: string;
  readonly backend: BackendKind;
  readonly agent: AgentAddress;
  /** The conversation it belongs to; undefined for a warm-pool workspace not yet claimed. */
  readonly conversationId: string | undefined;
  readonly labels: Readonly<Record<string, string>>;
  readonly createdAt: Date;
  /** When the agent first answered /health; undefined until then. */
  readonly readyAt: Date | undefined;
  readonly ttlSeconds: number | undefined;
  /** The orchestrator's view when it was read: `stopped` covers exited, failed, evicted and terminating. */
  readonly status: WorkspaceStatus;
}

export type WorkspaceStatus = 'starting' | 'running' | 'stopped';

export interface Resources {
  /** Kubernetes quantity (`500m`, `2`). Docker: NanoCPUs. */
  cpu?: string;
  /** Kubernetes quantity (`512Mi`, `2Gi`). Docker: Memory. */
  memory?: string;
}

export interface CreateOptions {
  /** Default: the backend's configured workspace image. */
  image?: string;
  /** Limits (and requests) of the workspace container, within the backend's configured maximum. */
  resources?: Resources;
  /** The collector destroys the workspace this long after creation. */
  ttlSeconds?: number;
  /** Hosts the workspace may reach through its proxy (tunnel-only rules), like ALLOWED_DOMAINS. */
  allowedDomains?: string[];
  /** Caller labels (names without our prefix; values as Kubernetes label values). */
  labels?: Record<string, string>;
  /** Set by the warm pool: the pool this workspace is made for. */
  pool?: string;
  /** Wait until the agent answers (default true); the timeout covers scheduling and image pull. */
  wait?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ExecOptions {
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string | Uint8Array;
  timeoutMs?: number;
  maxOutputBytes?: number;
  signal?: AbortSignal;
}

export interface ExecSummary {
  exitCode: number | null;
  signal: string | null;
  reason: ExitReason;
  durationMs: number;
  /** Bytes dropped from the middle of each stream when over maxOutputBytes. */
  stdoutTruncatedBytes: number;
  stderrTruncatedBytes: number;
}

export interface ExecResult extends ExecSummary {
  stdout: string;
  stderr: string;
}

export interface BinaryExecResult extends ExecSummary {
  stdout: Buffer;
  stderr: Buffer;
}

export interface HealthOptions {
  /** Also ask the agent (/health), not only the orchestrator. Default true. */
  checkAgent?: boolean;
}

export interface DestroyOptions {
  /** Seconds the workspace gets between SIGTERM and SIGKILL (default 5; 0: at once). */
  gracePeriodSeconds?: number;
}

export interface WorkspaceBackend {
  readonly kind: BackendKind;
  /**
   * Creates a workspace. `conversationId` undefined makes an unassigned one (the warm pool's);
   * `claim` assigns it later.
   */
  create(conversationId: string | undefined, options?: CreateOptions): Promise<Workspace>;
  /** Idempotent: a workspace already gone is not an error. */
  destroy(id: string, options?: DestroyOptions): Promise<void>;
  /** Throws WS_ERR_WORKSPACE_GONE when it does not exist. */
  get(id: string): Promise<Workspace>;
  isHealthy(id: string, options?: HealthOptions): Promise<boolean>;
  /** Runs `cmd` (argv) to completion; output as UTF-8 text. */
  exec(id: string, cmd: string[], options?: ExecOptions): Promise<ExecResult>;
  /** Same, output as bytes. */
  execBinary(id: string, cmd: string[], options?: ExecOptions): Promise<BinaryExecResult>;
  /** Same, streamed: output frames as they come, then the exit frame. Breaking out ends the command. */
  execStream(id: string, cmd: string[], options?: ExecOptions): AsyncGenerator<ExecFrame, ExitFrame, undefined>;
  /** Workspaces this backend owns (its labels), including unassigned ones. */
  list(): Promise<Workspace[]>;
  /** Resolves once the agent answers /health; typed errors when the workspace fails or the time is up. */
  waitForAgentReady(workspace: Workspace, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<Workspace>;
  /** The workspace container's log (the agent's own lines). */
  logs(id: string, options?: { tail?: number }): Promise<string>;
  /** Replaces the workspace's egress rules (its proxy's /rules), returning the stored set. */
  setRules(id: string, rules: readonly Rule[]): Promise<RuleSet>;
  getRules(id: string): Promise<RuleSet>;
  /**
   * Assigns a workspace to a conversation and merges `labels`: the warm pool's claim-time
   * personalisation (no restart). Kubernetes: a label patch with a resourceVersion precondition.
   */
  assign(id: string, conversationId: string, labels?: Record<string, string>): Promise<Workspace>;
  /** Releases connections and watches. */
  close(): Promise<void>;
}
