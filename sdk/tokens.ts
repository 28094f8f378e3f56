// Bearer tokens the SDK presents to a workspace's agent and to its proxy's /rules. With the
// backend's signing key (lib/pod-token.ts) every workspace gets its own tokens, minted on demand
// and reused until shortly before they expire; without one, the cluster-wide static tokens of the
// older deployments are used (one rules token Secret for all sidecars).
import { signPodToken, type PodTokenPurpose } from '../lib/pod-token.ts';

export interface TokenSource {
  token(purpose: PodTokenPurpose, workspaceUid: string): Promise<string | undefined>;
}

/** Minted tokens live this long; one is replaced when less than a tenth of its life is left. */
export const POD_TOKEN_TTL_SECONDS = 3600;
const CACHE_LIMIT = 10_000;

export class PodTokenSource implements TokenSource {
  readonly #key: string;
  readonly #ttlSeconds: number;
  readonly #cache = new Map<string, { token: Promise<string>; renewAt: number }>();

  constructor(privateKeyPem: string, ttlSeconds = POD_TOKEN_TTL_SECONDS) {
    this.#key = privateKeyPem;
    this.#ttlSeconds = ttlSeconds;
  }

  token(purpose: PodTokenPurpose, workspaceUid: string): Promise<string> {
    const key = `${purpose}:${workspaceUid}`;
    const hit = this.#cache.get(key);
    if (hit && hit.renewAt > Date.now()) return hit.token;
    if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    const token = signPodToken(this.#key, { purpose, podUid: workspaceUid, ttlSeconds: this.#ttlSeconds });
    this.#cache.set(key, { token, renewAt: Date.now() + this.#ttlSeconds * 900 });
    token.catch(() => this.#cache.delete(key));
    return token;
  }
}

export class StaticTokenSource implements TokenSource {
  readonly #tokens: Partial<Record<PodTokenPurpose, string>>;

  constructor(tokens: Partial<Record<PodTokenPurpose, string>>) {
    this.#tokens = tokens;
  }

  async token(purpose: PodTokenPurpose): Promise<string | undefined> {
    return this.#tokens[purpose];
  }
}
