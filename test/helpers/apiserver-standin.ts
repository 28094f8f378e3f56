// A STAND-IN for the Kubernetes API server: there is no cluster on these machines. It speaks the
// API's JSON for exactly the calls the SDK's Kubernetes backend makes (pods create/get/list/watch/
// patch/delete, pods/log in one namespace) and follows the documented behaviour a real server
// shows, so the backend is tested against the contract rather than against this file:
//   - generateName: the server picks the name; on a collision it answers 409 AlreadyExists
//     (https://kubernetes.io/docs/reference/using-api/api-concepts/#generated-values);
//   - watches: events after the given resourceVersion; BOOKMARK events only when
//     allowWatchBookmarks=true; a resourceVersion older than the compacted history gets an ERROR
//     event carrying a 410 Gone Status (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes);
//   - a merge patch carrying metadata.resourceVersion is a precondition: 409 Conflict when stale;
//   - errors are Status objects (admission denials are 403 with the webhook's message).
// Tests change Pod status with `update` (the kubelet's part) and reject creates with `onCreate`.
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { closeServer, listenLocal } from './listen.ts';

type Pod = { metadata: Record<string, unknown> & { name: string; labels?: Record<string, string>; resourceVersion?: string }; status?: Record<string, unknown>; spec?: unknown };
interface Event { rv: number; type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: Pod }
export interface StatusError { code: number; reason: string; message: string }

export interface ApiServerStandIn {
  readonly url: string;
  readonly token: string;
  readonly pods: Map<string, Pod>;
  /** Bodies of the creates the server accepted or refused, in order. */
  readonly creates: Pod[];
  /** Every request line, for assertions about what the client asked (e.g. bookmarks). */
  readonly requests: string[];
  /** Returns a Status to refuse a create (admission, quota), or undefined to accept it. */
  onCreate: ((pod: Pod) => StatusError | undefined) | undefined;
  /** The next N creates with generateName collide with an existing name (409). */
  collisions: number;
  /** The next N patches find the Pod changed by another writer just before them. */
  concurrentWrites: number;
  /** UIDs the next created Pods get (the API server's are random). */
  nextUids: string[];
  /** Changes a Pod as the kubelet or the scheduler would (new resourceVersion, MODIFIED event). */
  update(name: string, change: (pod: Pod) => void): void;
  /** Sends a BOOKMARK to every watch that asked for them. */
  bookmark(): void;
  /**
   * Writes elsewhere in the cluster advance the resourceVersion, then history is compacted and
   * every open watch ends: a client resuming from what it last saw gets 410 Gone.
   */
  compact(): void;
  close(): Promise<void>;
}

function status(res: ServerResponse, e: StatusError): void {
  res.writeHead(e.code, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: e.message, reason: e.reason, code: e.code }));
}

function json(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function body(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
}

function matches(pod: Pod, selector: string | null): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const [k, v] = term.split('=');
    return pod.metadata.labels?.[k!] === v;
  });
}

function mergePatch(target: Record<string, unknown>, patch: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete target[k];
    else if (typeof v === 'object' && !Array.isArray(v) && typeof target[k] === 'object' && target[k] !== null) mergePatch(target[k] as Record<string, unknown>, v as Record<string, unknown>);
    else target[k] = structuredClone(v);
  }
}

export async function startApiServerStandIn(namespace: string): Promise<ApiServerStandIn> {
  const token = randomBytes(16).toString('hex');
  const pods = new Map<string, Pod>();
  const events: Event[] = [];
  const watches = new Set<{ res: ServerResponse; selector: string | null; bookmarks: boolean }>();
  let rv = 100;
  let compactedAt = 0;
  const base = `/api/v1/namespaces/${namespace}/pods`;

  const emit = (type: Event['type'], pod: Pod) => {
    const event = { rv, type, object: structuredClone(pod) };
    events.push(event);
    for (const w of watches) if (matches(pod, w.selector)) w.res.write(`${JSON.stringify({ type, object: event.object })}\n`);
  };

  const self: ApiServerStandIn = {
    url: '',
    token,
    pods,
    creates: [],
    requests: [],
    onCreate: undefined,
    collisions: 0,
    concurrentWrites: 0,
    nextUids: [],
    update(name, change) {
      const pod = pods.get(name);
      if (!pod) throw new Error(`no pod ${name}`);
      change(pod);
      pod.metadata.resourceVersion = String(++rv);
      emit('MODIFIED', pod);
    },
    bookmark() {
      for (const w of watches) {
        if (w.bookmarks) w.res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(rv) } } })}\n`);
      }
    },
    compact() {
      compactedAt = ++rv;
      for (const w of watches) w.res.end();
      watches.clear();
    },
    close: async () => {
      for (const w of watches) w.res.destroy();
      await closeServer(server);
    },
  };

  const server = createServer(async (req, res) => {
    const url = new URL(req.url!, 'http://x');
    self.requests.push(`${req.method} ${url.pathname}${url.search}`);
    if (req.headers.authorization !== `Bearer ${token}`) return status(res, { code: 401, reason: 'Unauthorized', message: 'Unauthorized' });
    const path = url.pathname;
    if (path === base && req.method === 'GET' && url.searchParams.get('watch') === 'true') {
      const from = Number(url.searchParams.get('resourceVersion') || '0');
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      if (from < compactedAt) {
        // The documented answer to an expired resourceVersion: an ERROR event with a 410 Status.
        res.end(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: `too old resource version: ${from} (${compactedAt})`, reason: 'Expired', code: 410 } })}\n`);
        return;
      }
      const w = { res, selector: url.searchParams.get('labelSelector'), bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true' };
      for (const e of events) if (e.rv > from && matches(e.object, w.selector)) res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
      watches.add(w);
      req.on('close', () => watches.delete(w));
      return;
    }
    if (path === base && req.method === 'GET') {
      const items = [...pods.values()].filter((p) => matches(p, url.searchParams.get('labelSelector')));
      return json(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(rv) }, items });
    }
    if (path === base && req.method === 'POST') {
      const pod = await body(req) as Pod;
      self.creates.push(structuredClone(pod));
      const refusal = self.onCreate?.(pod);
      if (refusal) return status(res, refusal);
      const prefix = pod.metadata.generateName as string | undefined;
      if (prefix && self.collisions > 0) {
        self.collisions--;
        return status(res, { code: 409, reason: 'AlreadyExists', message: `pods "${prefix}xxxxx" already exists` });
      }
      const name = pod.metadata.name ?? `${prefix}${randomBytes(3).toString('hex').slice(0, 5)}`;
      pod.metadata = { ...pod.metadata, name, namespace, uid: self.nextUids.shift() ?? randomUUID(), resourceVersion: String(++rv), creationTimestamp: new Date().toISOString() };
      delete pod.metadata.generateName;
      pod.status = { phase: 'Pending' };
      pods.set(name, pod);
      emit('ADDED', pod);
      return json(res, 201, pod);
    }
    const m = /^([^/]+)(\/log)?$/.exec(path.startsWith(`${base}/`) ? path.slice(base.length + 1) : '');
    if (!m) return status(res, { code: 404, reason: 'NotFound', message: `the server could not find the requested resource` });
    const name = m[1]!;
    const pod = pods.get(name);
    if (!pod) return status(res, { code: 404, reason: 'NotFound', message: `pods "${name}" not found` });
    if (m[2] && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const tail = Number(url.searchParams.get('tailLines') ?? 0);
      const lines = [`log of ${name} container=${url.searchParams.get('container')}`, 'line 2', 'line 3'];
      return res.end(`${(tail > 0 ? lines.slice(-tail) : lines).join('\n')}\n`);
    }
    if (req.method === 'GET') return json(res, 200, pod);
    if (req.method === 'PATCH') {
      if (req.headers['content-type'] !== 'application/merge-patch+json') return status(res, { code: 415, reason: 'UnsupportedMediaType', message: `unsupported patch type ${req.headers['content-type']}` });
      const patch = await body(req) as { metadata?: { resourceVersion?: string } };
      if (self.concurrentWrites > 0) {
        self.concurrentWrites--;
        self.update(name, (p) => { p.metadata.annotations = { ...(p.metadata.annotations as object), 'another-writer': String(rv) }; });
      }
      if (patch.metadata?.resourceVersion !== undefined && patch.metadata.resourceVersion !== pod.metadata.resourceVersion) {
        return status(res, { code: 409, reason: 'Conflict', message: `Operation cannot be fulfilled on pods "${name}": the object has been modified; please apply your changes to the latest version and try again` });
      }
      if (patch.metadata) delete patch.metadata.resourceVersion;
      mergePatch(pod as unknown as Record<string, unknown>, patch as Record<string, unknown>);
      pod.metadata.resourceVersion = String(++rv);
      emit('MODIFIED', pod);
      return json(res, 200, pod);
    }
    if (req.method === 'DELETE') {
      const grace = Number(url.searchParams.get('gracePeriodSeconds') ?? '30');
      pod.metadata.deletionTimestamp = new Date().toISOString();
      pod.metadata.deletionGracePeriodSeconds = grace;
      pod.metadata.resourceVersion = String(++rv);
      emit('MODIFIED', pod);
      const answer = structuredClone(pod);
      const remove = () => {
        if (!pods.has(name)) return;
        pods.delete(name);
        rv++;
        emit('DELETED', pod);
      };
      if (grace === 0) remove();
      else setTimeout(remove, Math.min(grace * 1000, 200)).unref();
      return json(res, 200, answer);
    }
    return status(res, { code: 405, reason: 'MethodNotAllowed', message: 'method not allowed' });
  });
  const { url } = await listenLocal(server);
  (self as { url: string }).url = url;
  return self;
}
