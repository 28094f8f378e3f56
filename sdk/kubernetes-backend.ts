// The Kubernetes backend: a workspace is a *plain* Pod in the sandboxes namespace (one container,
// the workspace image, whose entrypoint is the agent); the admission webhook turns it into the
// hardened gVisor Pod with its credential-proxy sidecar. This backend never renders any of that.
//
// Readiness comes from a watch (client-node's ListWatch: list, then watch from the list's
// resourceVersion, with bookmarks requested so a quiet watch resumes where it was; a 410 Gone
// relists), not from polling. The agent is the Pod IP and agent port; the proxy's /rules the Pod
// IP and admin port, each with a token minted for that Pod (lib/pod-token.ts). Label changes at
// claim time are merge patches carrying the resourceVersion they were computed from: a 409
// Conflict re-reads the Pod and tries again (API conventions, "Concurrency Control and Consistency").
//
// RBAC it needs (manifests/base/backend-rbac.yaml): pods create/get/list/watch/delete/patch and
// pods/log get, in the sandboxes namespace only.
import {
  ApiException, CoreV1Api, KubeConfig, ListWatch, PatchStrategy, setHeaderOptions, Watch, type V1Pod, type V1PodList,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ANNOTATION_ALLOWED_DOMAINS, ANNOTATION_TTL_SECONDS, CONTAINER_WORKSPACE, LABEL_CONVERSATION, LABEL_OWNER, PORTS, SERVICE_ACCOUNT_WORKSPACE } from '../lib/constants.ts';
import { AgentBackedBackend, checkConversationId, type AgentTarget, type RulesTarget } from './agent-backed.ts';
import type { CreateOptions, DestroyOptions, Resources, Workspace, WorkspaceStatus } from './backend.ts';
import { WorkspaceError } from './errors.ts';
import { checkCallerLabels, workspaceLabels } from './labels.ts';
import { resolveResources } from './resources.ts';
import type { TokenSource } from './tokens.ts';

export interface KubernetesBackendOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  owner: string;
  image: string;
  defaultResources: Required<Resources>;
  maxResources: Required<Resources>;
  readyTimeoutMs: number;
  tokens: TokenSource;
  agentPort?: number;
  adminPort?: number;
  logger?: Logger;
}

/** Name prefix of workspace Pods (generateName: the API server appends 5 random characters). */
export const POD_NAME_PREFIX = 'ws-';
const CREATE_ATTEMPTS = 5;
const PATCH_ATTEMPTS = 5;
/** After a watch error that is not a 410, the watch is restarted this much later. */
const WATCH_RESTART_MS = 1_000;
/** Container waiting reasons that will not fix themselves: fail at once rather than at the timeout. */
const FATAL_WAITING = new Set(['InvalidImageName', 'ErrImageNeverPull', 'CreateContainerConfigError', 'CreateContainerError']);
const PULL_WAITING = new Set(['ErrImagePull', 'ImagePullBackOff']);

/** A watch that asks for bookmarks: the server then sends the current resourceVersion now and then. */
class BookmarkWatch extends Watch {
  override watch(path: string, queryParams: Record<string, unknown>, callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void): Promise<AbortController> {
    return super.watch(path, { ...queryParams, allowWatchBookmarks: true }, callback, done);
  }
}

function statusBody(err: ApiException<unknown>): { message?: string; reason?: string } {
  const body = err.body;
  if (typeof body === 'string') {
    try {
      return JSON.parse(body) as { message?: string; reason?: string };
    } catch {
      return { message: body };
    }
  }
  return (body ?? {}) as { message?: string; reason?: string };
}

/** An API error as the SDK's typed error. 404 is GONE; callers handle 409 themselves. */
export function apiFailure(err: unknown, what: string): WorkspaceError {
  if (err instanceof WorkspaceError) return err;
  if (!(err instanceof ApiException)) return new WorkspaceError('WS_ERR_BACKEND_UNAVAILABLE', `${what}: Kubernetes API unreachable: ${(err as Error).message}`, { cause: err });
  const status = statusBody(err);
  const message = status.message ?? err.message;
  const details = { status: err.code, reason: status.reason, message };
  if (err.code === 404) return new WorkspaceError('WS_ERR_WORKSPACE_GONE', `${what}: ${message}`, { details, cause: err });
  if (err.code === 403 && /exceeded quota|maximum .* usage|minimum .* usage|must be less than or equal to .* limit/i.test(message)) {
    return new WorkspaceError('WS_ERR_QUOTA_EXCEEDED', `${what}: ${message}`, { details, cause: err });
  }
  if ((err.code === 403 || err.code === 400 || err.code === 422) && /admission webhook|denied the request|ValidatingAdmissionPolicy|violates PodSecurity/i.test(message)) {
    return new WorkspaceError('WS_ERR_ADMISSION_DENIED', `${what}: ${message}`, { details, cause: err });
  }
  if (err.code === 400 || err.code === 422) return new WorkspaceError('WS_ERR_INVALID_OPTIONS', `${what}: ${message}`, { details, cause: err });
  return new WorkspaceError('WS_ERR_BACKEND_UNAVAILABLE', `${what}: Kubernetes API answered ${err.code}: ${message}`, { details, cause: err });
}

function isCode(err: unknown, code: number): boolean {
  return err instanceof ApiException && err.code === code;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Whether the Pod was evicted, preempted or disrupted (node drain, spot interruption, pressure). */
function disrupted(pod: V1Pod): boolean {
  const s = pod.status;
  return s?.reason === 'Evicted' || s?.reason === 'Preempting' || s?.reason === 'Terminated'
    || (s?.conditions ?? []).some((c) => c.type === 'DisruptionTarget' && c.status === 'True');
}

type Verdict = { ready: true } | { ready: false; fatal: WorkspaceError | undefined; onTimeout: () => WorkspaceError };

/** What a Pod's status means for a create waiting on it. */
export function classifyPod(pod: V1Pod): Verdict {
  const name = pod.metadata?.name ?? '?';
  const s = pod.status ?? {};
  const notReady = (fatal: WorkspaceError | undefined, onTimeout: () => WorkspaceError): Verdict => ({ ready: false, fatal, onTimeout });
  if (disrupted(pod)) {
    const e = new WorkspaceError('WS_ERR_EVICTED', `workspace ${name} was evicted or preempted: ${s.message ?? s.reason ?? 'disruption'}`, { details: { reason: s.reason } });
    return notReady(e, () => e);
  }
  if (pod.metadata?.deletionTimestamp) {
    const e = new WorkspaceError('WS_ERR_WORKSPACE_GONE', `workspace ${name} is being deleted`);
    return notReady(e, () => e);
  }
  if (s.phase === 'Failed' || s.phase === 'Succeeded') {
    const term = s.containerStatuses?.find((c) => c.name === CONTAINER_WORKSPACE)?.state?.terminated;
    const e = new WorkspaceError('WS_ERR_WORKSPACE_FAILED', `workspace ${name} ended (${s.phase}${term ? `: ${term.reason ?? ''} exit ${term.exitCode}` : ''})`, { details: { phase: s.phase, reason: s.reason } });
    return notReady(e, () => e);
  }
  const waiting = [...(s.initContainerStatuses ?? []), ...(s.containerStatuses ?? [])].map((c) => c.state?.waiting).filter((w) => w?.reason);
  const fatal = waiting.find((w) => FATAL_WAITING.has(w!.reason!));
  if (fatal) {
    const code = fatal.reason!.includes('Image') ? 'WS_ERR_IMAGE_PULL_FAILED' : 'WS_ERR_WORKSPACE_FAILED';
    const e = new WorkspaceError(code, `workspace ${name}: ${fatal.reason}: ${fatal.message ?? ''}`, { details: { reason: fatal.reason } });
    return notReady(e, () => e);
  }
  const ready = (s.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
  if (ready && s.podIP) return { ready: true };
  const pull = waiting.find((w) => PULL_WAITING.has(w!.reason!));
  const unschedulable = (s.conditions ?? []).find((c) => c.type === 'PodScheduled' && c.status === 'False' && c.reason === 'Unschedulable');
  return notReady(undefined, () => {
    if (unschedulable) return new WorkspaceError('WS_ERR_UNSCHEDULABLE', `workspace ${name} could not be scheduled: ${unschedulable.message ?? ''}`, { details: { message: unschedulable.message } });
    if (pull) return new WorkspaceError('WS_ERR_IMAGE_PULL_FAILED', `workspace ${name}: ${pull.reason}: ${pull.message ?? ''}`, { details: { reason: pull.reason } });
    return new WorkspaceError('WS_ERR_AGENT_NOT_READY', `workspace ${name} is not ready (${s.phase ?? 'Pending'})`);
  });
}

function statusOf(pod: V1Pod): WorkspaceStatus {
  if (pod.metadata?.deletionTimestamp || pod.status?.phase === 'Failed' || pod.status?.phase === 'Succeeded') return 'stopped';
  return pod.status?.phase === 'Running' ? 'running' : 'starting';
}

export class KubernetesBackend extends AgentBackedBackend {
  readonly kind = 'kubernetes' as const;
  readonly #o: KubernetesBackendOptions;
  readonly #api: CoreV1Api;
  readonly #agentPort: number;
  readonly #adminPort: number;
  #pods: ListWatch<V1Pod> | undefined;
  #synced: Promise<void> | undefined;
  #closed = false;
  readonly #waiters = new Map<string, Set<() => void>>();
  /** Pod IP and UID per workspace, for exec's hot path (dropped when a call fails). */
  readonly #targets = new Map<string, { ip: string; uid: string }>();

  constructor(options: KubernetesBackendOptions) {
    super();
    this.#o = options;
    this.#api = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#agentPort = options.agentPort ?? PORTS.agent;
    this.#adminPort = options.adminPort ?? PORTS.proxyAdmin;
  }

  get #selector(): string { return `${LABEL_OWNER}=${this.#o.owner}`; }

  /** Starts the watch of this owner's Pods (once) and resolves after its first list. */
  #watch(): Promise<void> {
    this.#synced ??= new Promise<void>((resolve, reject) => {
      const path = `/api/v1/namespaces/${this.#o.namespace}/pods`;
      const list = () => this.#api.listNamespacedPod({ namespace: this.#o.namespace, labelSelector: this.#selector }) as Promise<V1PodList & { items: V1Pod[] }>;
      const lw = new ListWatch<V1Pod>(path, new BookmarkWatch(this.#o.kubeConfig), list, false, this.#selector);
      const notify = (pod: V1Pod) => {
        for (const wake of this.#waiters.get(pod.metadata?.name ?? '') ?? []) wake();
      };
      lw.on('add', notify);
      lw.on('update', notify);
      lw.on('delete', notify);
      lw.on('error', (err: unknown) => {
        // ListWatch stops on errors other than 410 Gone and client timeouts: start it again.
        this.#o.logger?.warn({ err: (err as Error)?.message }, 'pod watch failed; restarting');
        if (!this.#closed) setTimeout(() => { if (!this.#closed) lw.start().catch(() => {}); }, WATCH_RESTART_MS).unref();
      });
      this.#pods = lw;
      lw.start().then(resolve, (err: unknown) => {
        this.#synced = undefined;
        reject(apiFailure(err, 'watch pods'));
      });
    });
    return this.#synced;
  }

  #cached(name: string): V1Pod | undefined {
    return this.#pods?.get(name, this.#o.namespace);
  }

  /** Resolves on the next watch event about `name`, or after `ms`. */
  #nextEvent(name: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let set = this.#waiters.get(name);
      if (!set) this.#waiters.set(name, (set = new Set()));
      const wake = () => {
        clearTimeout(timer);
        set.delete(wake);
        if (set.size === 0) this.#waiters.delete(name);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      set.add(wake);
    });
  }

  #toWorkspace(pod: V1Pod): Workspace {
    const labels = { ...pod.metadata?.labels };
    const ttl = pod.metadata?.annotations?.[ANNOTATION_TTL_SECONDS];
    const ip = pod.status?.podIP;
    const host = ip?.includes(':') ? `[${ip}]` : ip;
    return {
      id: pod.metadata!.name!,
      uid: pod.metadata!.uid ?? '',
      backend: 'kubernetes',
      agent: { baseUrl: host ? `http://${host}:${this.#agentPort}` : '' },
      conversationId: labels[LABEL_CONVERSATION],
      labels,
      createdAt: pod.metadata?.creationTimestamp ? new Date(pod.metadata.creationTimestamp) : new Date(),
      readyAt: undefined,
      ttlSeconds: ttl === undefined ? undefined : Number(ttl),
      status: statusOf(pod),
    };
  }

  async create(conversationId: string | undefined, options: CreateOptions = {}): Promise<Workspace> {
    if (conversationId !== undefined) checkConversationId(conversationId);
    checkCallerLabels(options.labels);
    const r = resolveResources(options.resources, this.#o.defaultResources, this.#o.maxResources);
    const ttl = options.ttlSeconds;
    if (ttl !== undefined && (!Number.isInteger(ttl) || ttl <= 0)) throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', 'ttlSeconds must be a positive integer');
    const domains = options.allowedDomains ?? [];
    const body: V1Pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        generateName: POD_NAME_PREFIX,
        namespace: this.#o.namespace,
        labels: workspaceLabels({ owner: this.#o.owner, conversationId, pool: options.pool, labels: options.labels }),
        annotations: {
          ...(ttl !== undefined ? { [ANNOTATION_TTL_SECONDS]: String(ttl) } : {}),
          ...(domains.length > 0 ? { [ANNOTATION_ALLOWED_DOMAINS]: domains.join(',') } : {}),
        },
      },
      spec: {
        restartPolicy: 'Never',
        // The ServiceAccount of the Pod Identity association (infra/): EKS's own admission gives the
        // Pod its token, which the webhook then moves into the sidecar alone. Set at creation,
        // because the ServiceAccount admission and EKS's webhook act on the Pod as it arrives.
        serviceAccountName: SERVICE_ACCOUNT_WORKSPACE,
        containers: [{
          name: CONTAINER_WORKSPACE,
          image: options.image ?? this.#o.image,
          resources: {
            requests: { cpu: r.cpuQuantity, memory: r.memoryQuantity },
            limits: { cpu: r.cpuQuantity, memory: r.memoryQuantity },
          },
        }],
      },
    };
    const watching = options.wait === false ? undefined : this.#watch();
    let pod: V1Pod | undefined;
    for (let attempt = 1; !pod; attempt++) {
      try {
        pod = await this.#api.createNamespacedPod({ namespace: this.#o.namespace, body });
      } catch (err) {
        // generateName can collide with an existing name: the API answers 409 and the documented
        // remedy is to send the create again. 429: the API server asks us to slow down.
        if ((isCode(err, 409) || isCode(err, 429)) && attempt < CREATE_ATTEMPTS) {
          const retryAfter = Number((err as ApiException<unknown>).headers?.['retry-after']);
          await sleep(isCode(err, 429) ? Math.min(5_000, (retryAfter || 1) * 1000) : 0);
          continue;
        }
        throw apiFailure(err, 'create workspace');
      }
    }
    const workspace = this.#toWorkspace(pod);
    if (!watching) return workspace;
    try {
      await watching;
      const timeoutMs = options.timeoutMs ?? this.#o.readyTimeoutMs;
      const ready = await this.#waitForPod(workspace.id, Date.now() + timeoutMs, options.signal);
      const started = this.#toWorkspace(ready);
      return await this.waitForAgentReady(started, { timeoutMs: Math.max(1_000, timeoutMs), ...(options.signal ? { signal: options.signal } : {}) });
    } catch (err) {
      await this.destroy(workspace.id, { gracePeriodSeconds: 0 }).catch(() => {});
      throw err;
    }
  }

  /** Waits, on watch events, until the Pod is Ready; typed errors for what will not heal and at the deadline. */
  async #waitForPod(name: string, deadline: number, signal?: AbortSignal): Promise<V1Pod> {
    let last: V1Pod | undefined;
    for (;;) {
      signal?.throwIfAborted();
      const pod = this.#cached(name);
      if (pod) {
        last = pod;
        const verdict = classifyPod(pod);
        if (verdict.ready) {
          this.#targets.set(name, { ip: pod.status!.podIP!, uid: pod.metadata!.uid! });
          return pod;
        }
        if (verdict.fatal) throw verdict.fatal;
      } else if (last) {
        // Deleted while we waited (the watch saw DELETED).
        throw disrupted(last)
          ? new WorkspaceError('WS_ERR_EVICTED', `workspace ${name} was evicted`)
          : new WorkspaceError('WS_ERR_WORKSPACE_GONE', `workspace ${name} was deleted while starting`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        if (last) {
          const verdict = classifyPod(last);
          throw verdict.ready ? new WorkspaceError('WS_ERR_AGENT_NOT_READY', `workspace ${name} not ready in time`) : verdict.onTimeout();
        }
        throw new WorkspaceError('WS_ERR_AGENT_NOT_READY', `workspace ${name} never appeared in the watch`);
      }
      await this.#nextEvent(name, left);
    }
  }

  async #read(name: string): Promise<V1Pod> {
    try {
      const pod = await this.#api.readNamespacedPod({ name, namespace: this.#o.namespace });
      if (pod.metadata?.labels?.[LABEL_OWNER] !== this.#o.owner) throw new WorkspaceError('WS_ERR_WORKSPACE_GONE', `workspace ${name} belongs to another backend`);
      return pod;
    } catch (err) {
      throw apiFailure(err, `workspace ${name}`);
    }
  }

  async #target(id: string): Promise<{ ip: string; uid: string }> {
    let t = this.#targets.get(id);
    if (!t) {
      const pod = this.#cached(id) ?? await this.#read(id);
      if (!pod.status?.podIP) throw classifyPod(pod).ready ? new WorkspaceError('WS_ERR_AGENT_NOT_READY', `workspace ${id} has no IP`) : (classifyPod(pod) as { fatal?: WorkspaceError }).fatal ?? new WorkspaceError('WS_ERR_AGENT_NOT_READY', `workspace ${id} has no IP yet`);
      t = { ip: pod.status.podIP, uid: pod.metadata!.uid! };
      this.#targets.set(id, t);
    }
    return t;
  }

  protected async agentOf(id: string): Promise<AgentTarget> {
    const t = await this.#target(id);
    const host = t.ip.includes(':') ? `[${t.ip}]` : t.ip;
    return { address: { baseUrl: `http://${host}:${this.#agentPort}` }, token: await this.#o.tokens.token('agent', t.uid) };
  }

  protected async rulesOf(id: string): Promise<RulesTarget> {
    const t = await this.#target(id);
    const host = t.ip.includes(':') ? `[${t.ip}]` : t.ip;
    return { baseUrl: `http://${host}:${this.#adminPort}`, token: await this.#o.tokens.token('rules', t.uid) };
  }

  protected override forget(id: string): void {
    super.forget(id);
    this.#targets.delete(id);
  }

  protected async failureOf(id: string): Promise<WorkspaceError | undefined> {
    let pod: V1Pod;
    try {
      pod = await this.#read(id);
    } catch (err) {
      return err as WorkspaceError;
    }
    const verdict = classifyPod(pod);
    return verdict.ready ? undefined : verdict.fatal;
  }

  protected async runningOf(id: string): Promise<boolean> {
    try {
      return statusOf(await this.#read(id)) === 'running';
    } catch {
      return false;
    }
  }

  async get(id: string): Promise<Workspace> {
    return this.#toWorkspace(await this.#read(id));
  }

  async list(): Promise<Workspace[]> {
    try {
      const list = await this.#api.listNamespacedPod({ namespace: this.#o.namespace, labelSelector: this.#selector });
      return list.items.map((p) => this.#toWorkspace(p));
    } catch (err) {
      throw apiFailure(err, 'list workspaces');
    }
  }

  async assign(id: string, conversationId: string, labels: Record<string, string> = {}): Promise<Workspace> {
    checkConversationId(conversationId);
    checkCallerLabels(labels);
    for (let attempt = 1; ; attempt++) {
      const pod = await this.#read(id);
      const current = pod.metadata?.labels?.[LABEL_CONVERSATION];
      if (current !== undefined && current !== conversationId) {
        throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', `workspace ${id} already belongs to conversation ${current}`);
      }
      // The resourceVersion in a merge patch is a precondition: 409 when the Pod changed since.
      const patch = { metadata: { resourceVersion: pod.metadata!.resourceVersion, labels: { ...labels, [LABEL_CONVERSATION]: conversationId } } };
      try {
        const patched = await this.#api.patchNamespacedPod({ name: id, namespace: this.#o.namespace, body: patch }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
        return this.#toWorkspace(patched);
      } catch (err) {
        if (isCode(err, 409) && attempt < PATCH_ATTEMPTS) continue;
        throw apiFailure(err, `assign ${id}`);
      }
    }
  }

  async logs(id: string, options: { tail?: number } = {}): Promise<string> {
    try {
      return await this.#api.readNamespacedPodLog({ name: id, namespace: this.#o.namespace, container: CONTAINER_WORKSPACE, tailLines: options.tail ?? 1000 });
    } catch (err) {
      throw apiFailure(err, `logs of ${id}`);
    }
  }

  async destroy(id: string, options: DestroyOptions = {}): Promise<void> {
    this.forget(id);
    try {
      await this.#api.deleteNamespacedPod({ name: id, namespace: this.#o.namespace, gracePeriodSeconds: options.gracePeriodSeconds ?? 5 });
    } catch (err) {
      if (isCode(err, 404)) return;
      throw apiFailure(err, `destroy ${id}`);
    }
  }

  override async close(): Promise<void> {
    this.#closed = true;
    await this.#pods?.stop();
    await super.close();
  }
}

export { KubeConfig };
