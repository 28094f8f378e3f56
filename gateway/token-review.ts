// Who is asking: the sidecar's projected ServiceAccount token, validated the way Kubernetes defines
// it. We ask the API server (TokenReview with our audience) instead of verifying signatures against
// the issuer's published keys: the API server also checks that the object the token is bound to
// (the pod, and its UID) still exists, so a token copied out of a deleted pod stops working at the
// next review, and key rotation and issuer configuration stay the API server's business. The cost
// is one API call per new token, so results are cached (never past the token's own expiry, and at
// most TOKEN_CACHE_TTL_MS, which bounds how long a deleted pod's token still passes), concurrent
// reviews of one token share one call, and reviews in flight are capped.
//
// A valid token alone is not enough: the connection must also come from one of its pod's IPs
// (read once per token), so a token that leaks to another pod is useless there.
import { createHash } from 'node:crypto';
import type { KubernetesApi } from './kubernetes.ts';

export const EXTRA_POD_NAME = 'authentication.kubernetes.io/pod-name';
export const EXTRA_POD_UID = 'authentication.kubernetes.io/pod-uid';

export interface PodIdentity {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly pod: string;
  readonly podUid: string;
  readonly podIPs: readonly string[];
}

/** Why a credential was refused: the `reason` label of the auth-failure metric. */
export type AuthFailureReason =
  | 'missing' | 'malformed' | 'rejected' | 'audience' | 'not-pod-bound' | 'namespace' | 'pod-gone'
  | 'source-address' | 'overloaded' | 'review-failed';

export const AUTH_FAILURE_REASONS: readonly AuthFailureReason[] = Object.freeze([
  'missing', 'malformed', 'rejected', 'audience', 'not-pod-bound', 'namespace', 'pod-gone', 'source-address', 'overloaded', 'review-failed',
]);

export type AuthResult =
  | { ok: true; identity: PodIdentity; cached: boolean }
  | { ok: false; reason: AuthFailureReason; message: string; status: 403 | 407 | 503; cached: boolean };

export interface TokenValidatorOptions {
  audience: string;
  namespaces: readonly string[];
  bindSourceAddress: boolean;
  cacheTtlMs: number;
  negativeTtlMs: number;
  cacheMax: number;
  maxPending: number;
  timeoutMs: number;
  now?: () => number;
}

type Failure = Extract<AuthResult, { ok: false }>;
type Settled = { ok: true; identity: PodIdentity } | Omit<Failure, 'cached'>;

interface CacheEntry {
  expiresAt: number;
  result: Settled;
}

const fail = (reason: AuthFailureReason, message: string, status: 403 | 407 | 503 = 407): Omit<Failure, 'cached'> => ({ ok: false, reason, message, status });

/** `Proxy-Authorization: Bearer <token>` → the token, or the reason there is none. */
export function proxyBearer(header: string | undefined): { token: string } | Omit<Failure, 'cached'> {
  if (header === undefined) return fail('missing', 'Proxy-Authorization with the pod\'s gateway token is required');
  const m = /^Bearer[ ]+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)[ ]*$/i.exec(header);
  if (!m || m[1]!.length > 16 * 1024) return fail('malformed', 'Proxy-Authorization must be "Bearer <ServiceAccount token>"');
  return { token: m[1]! };
}

/** The `exp` claim (seconds), read without verifying: only to bound how long a result is cached. */
export function tokenExpiry(token: string): number | undefined {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof payload.exp === 'number' ? payload.exp : undefined;
  } catch {
    return undefined;
  }
}

export function normaliseRemote(address: string | undefined): string {
  if (!address) return '';
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; the pod's IPs are written plainly.
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  return mapped ? mapped[1]! : address.toLowerCase();
}

export class TokenValidator {
  readonly #api: KubernetesApi;
  readonly #o: TokenValidatorOptions;
  readonly #now: () => number;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inFlight = new Map<string, Promise<Settled>>();
  /** TokenReviews sent (not answered from the cache): for metrics and tests. */
  reviews = 0;

  constructor(api: KubernetesApi, options: TokenValidatorOptions) {
    this.#api = api;
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  get pending(): number {
    return this.#inFlight.size;
  }

  async validate(header: string | undefined, remoteAddress: string | undefined): Promise<AuthResult> {
    const bearer = proxyBearer(header);
    if (!('token' in bearer)) return { ...bearer, cached: false };
    const key = createHash('sha256').update(bearer.token).digest('base64url');
    const now = this.#now();
    const hit = this.#cache.get(key);
    let settled: Settled;
    let cached = false;
    if (hit && hit.expiresAt > now) {
      settled = hit.result;
      cached = true;
    } else {
      if (hit) this.#cache.delete(key);
      let review = this.#inFlight.get(key);
      if (!review) {
        if (this.#inFlight.size >= this.#o.maxPending) {
          return { ...fail('overloaded', 'too many token reviews in flight; retry shortly', 503), cached: false };
        }
        review = this.#review(bearer.token).then((result) => {
          this.#remember(key, bearer.token, result);
          return result;
        }).finally(() => this.#inFlight.delete(key));
        this.#inFlight.set(key, review);
      }
      settled = await review;
    }
    if (!settled.ok) return { ...settled, cached };
    if (this.#o.bindSourceAddress) {
      const remote = normaliseRemote(remoteAddress);
      if (!settled.identity.podIPs.includes(remote)) {
        return { ...fail('source-address', `the token of pod ${settled.identity.namespace}/${settled.identity.pod} was presented from an address that is not that pod's`, 403), cached };
      }
    }
    return { ok: true, identity: settled.identity, cached };
  }

  #remember(key: string, token: string, result: Settled): void {
    const now = this.#now();
    let expiresAt: number;
    if (result.ok) {
      const exp = tokenExpiry(token);
      expiresAt = Math.min(now + this.#o.cacheTtlMs, exp === undefined ? now : exp * 1000);
    } else {
      // An unavailable API server is not the token's fault: never remember that.
      expiresAt = result.status === 503 ? now : now + this.#o.negativeTtlMs;
    }
    if (expiresAt <= now) return;
    while (this.#cache.size >= this.#o.cacheMax) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(key, { expiresAt, result });
  }

  async #review(token: string): Promise<Settled> {
    this.reviews++;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), this.#o.timeoutMs);
    });
    try {
      const r = await Promise.race([this.#api.reviewToken(token, [this.#o.audience]), timeout]);
      if (!r.authenticated) return fail('rejected', 'the token is not valid (unknown signer, expired, or its pod is gone)');
      // An API server that ignored spec.audiences would answer for its own audience: refuse that.
      if (!r.audiences.includes(this.#o.audience)) return fail('audience', `the token is not for audience ${this.#o.audience}`);
      const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(r.username ?? '');
      const pod = r.extra[EXTRA_POD_NAME]?.[0];
      const podUid = r.extra[EXTRA_POD_UID]?.[0];
      if (!sa || !pod || !podUid) return fail('not-pod-bound', 'the token must be a projected ServiceAccount token bound to a pod');
      const namespace = sa[1]!;
      if (!this.#o.namespaces.includes(namespace)) return fail('namespace', `pods of namespace ${namespace} may not use this gateway`, 403);
      let podIPs: readonly string[] = [];
      if (this.#o.bindSourceAddress) {
        const record = await Promise.race([this.#api.readPod(namespace, pod), timeout]);
        if (!record || record.uid !== podUid) return fail('pod-gone', `pod ${namespace}/${pod} no longer exists`);
        podIPs = record.podIPs.map((ip) => normaliseRemote(ip));
      }
      return { ok: true, identity: Object.freeze({ namespace, serviceAccount: sa[2]!, pod, podUid, podIPs: Object.freeze(podIPs) }) };
    } catch (err) {
      return fail('review-failed', `the token could not be checked: ${(err as Error).message.split('\n')[0]!.slice(0, 200)}`, 503);
    } finally {
      clearTimeout(timer);
    }
  }
}
