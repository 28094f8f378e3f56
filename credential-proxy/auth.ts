// Bearer tokens for /rules. The workspace shares the Pod's network namespace and can reach the
// admin port, so every rule change needs a token the workspace cannot have.
//
// In a cluster that is a per-pod token (lib/pod-token.ts): an Ed25519-signed JWT for purpose
// `rules` and this pod's UID (RULES_SCOPE), minted by the backend, verified here with public keys
// (POD_TOKEN_PUBLIC_KEYS_FILE). The sidecar holds nothing that mints a token, and a token for one
// pod opens no other pod. The static token file (RULES_TOKEN_FILE) remains for local development
// (`npm start`), where there is one proxy and no backend key: one token for every pod it is
// mounted into, so it is refused together with per-pod tokens.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { PodTokenVerifier } from '../lib/pod-token.ts';

export type AuthResult = { ok: true; who: string } | { ok: false; reason: string };

/** How /rules callers are checked. */
export interface RulesAuth {
  readonly mode: 'pod-token' | 'static-token';
  verify(token: string): Promise<AuthResult>;
  /** Values the logger must scrub. */
  readonly secrets: readonly string[];
}

/** Per-pod tokens: purpose `rules`, subject this pod's UID. */
export function podTokenAuth(publicKeysFile: string, podUid: string): RulesAuth {
  const verifier = new PodTokenVerifier(publicKeysFile);
  return {
    mode: 'pod-token',
    secrets: [],
    async verify(token) {
      const r = await verifier.verify(token, { purpose: 'rules', podUid });
      return r.ok ? { ok: true, who: `pod-token:${r.keyId}` } : { ok: false, reason: r.reason };
    },
  };
}

/** Development only: the lines of RULES_TOKEN_FILE. */
export function staticTokenAuth(path: string): RulesAuth {
  const file = new TokenFile(path);
  return {
    mode: 'static-token',
    get secrets() { return file.secrets; },
    async verify(token) {
      const id = file.verify(token);
      return id === undefined ? { ok: false, reason: 'invalid bearer token' } : { ok: true, who: id };
    },
  };
}

export interface TokenEntry {
  /** Names the caller in the audit log; never the token itself. */
  readonly id: string;
  readonly digest: Buffer;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Lines `id:token`, or a bare token (its id is a short hash). Blank lines and `#` comments skipped. */
export function parseTokens(text: string): TokenEntry[] {
  const out: TokenEntry[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z][A-Za-z0-9._-]{0,63}):(.+)$/.exec(line);
    const token = m ? m[2]!.trim() : line;
    const id = m ? m[1]! : `sha256:${digest(token).toString('hex').slice(0, 12)}`;
    out.push({ id, digest: digest(token) });
  }
  return out;
}

/** The token file, re-read when it changes (a rotated Secret) and kept when it turns unreadable. */
export class TokenFile {
  readonly path: string;
  #tokens: TokenEntry[];
  #mtimeMs: number;
  #secrets: string[];

  constructor(path: string) {
    this.path = path;
    const { tokens, mtimeMs, secrets } = TokenFile.#load(path);
    if (tokens.length === 0) throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `RULES_TOKEN_FILE ${path} holds no token`);
    this.#tokens = tokens;
    this.#mtimeMs = mtimeMs;
    this.#secrets = secrets;
  }

  static #load(path: string): { tokens: TokenEntry[]; mtimeMs: number; secrets: string[] } {
    let text: string;
    let mtimeMs: number;
    try {
      mtimeMs = statSync(path).mtimeMs;
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `cannot read RULES_TOKEN_FILE ${path}: ${(err as Error).message}`, { cause: err });
    }
    const secrets = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
      .map((l) => /^[A-Za-z][A-Za-z0-9._-]{0,63}:(.+)$/.exec(l)?.[1]?.trim() ?? l);
    return { tokens: parseTokens(text), mtimeMs, secrets };
  }

  /** The raw token values, so the logger can scrub them. */
  get secrets(): readonly string[] {
    return this.#secrets;
  }

  #refresh(): void {
    try {
      // Secret volumes swap a symlink: stat follows it, so a new mtime means new content.
      if (statSync(this.path).mtimeMs === this.#mtimeMs) return;
      const next = TokenFile.#load(this.path);
      if (next.tokens.length === 0) return;
      this.#tokens = next.tokens;
      this.#mtimeMs = next.mtimeMs;
      this.#secrets = next.secrets;
    } catch {
      // Keep the last good tokens: a half-written rotation must not lock the backend out.
    }
  }

  /** The id of the matching token, or undefined. */
  verify(presented: string): string | undefined {
    this.#refresh();
    const d = digest(presented);
    let match: string | undefined;
    for (const t of this.#tokens) if (timingSafeEqual(d, t.digest) && match === undefined) match = t.id;
    return match;
  }
}

/** `Authorization: Bearer <token>` → the token; anything else → undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer[ ]+([\x21-\x7e]+)[ ]*$/i.exec(header);
  return m?.[1];
}
