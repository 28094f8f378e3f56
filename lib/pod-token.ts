// Per-pod bearer tokens: the backend can mint one for any pod, a pod can check the one it is shown,
// and nothing a pod holds lets it mint one for another pod. A shared secret cannot give all three
// (whoever verifies an HMAC can also mint it), and the webhook cannot hand a pod its own secret
// because admission runs before the API server assigns the UID. So the tokens are JWTs signed with
// Ed25519 (RFC 8037): the private key stays with the backend; sidecars and agents mount only public
// keys and learn their own UID from the downward API.
//
// Claims: iss `workspace-sandbox`, aud `workspace-sandbox/<purpose>` (a token for the agent is no
// token for /rules), sub the pod UID (a token for one pod is no token for another), exp (required).
// Several public keys in the file allow rotation: add the new key, switch the signer, drop the old.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';
import { WorkspaceSandboxError } from './errors.ts';

export const POD_TOKEN_PURPOSES = ['agent', 'rules'] as const;
export type PodTokenPurpose = (typeof POD_TOKEN_PURPOSES)[number];

export const POD_TOKEN_ISSUER = 'workspace-sandbox';
export const podTokenAudience = (purpose: PodTokenPurpose): string => `workspace-sandbox/${purpose}`;

/** Longer than any JWT we mint by far; a bound so a hostile header cannot make us parse megabytes. */
const MAX_TOKEN_LENGTH = 2048;
/** Verified tokens kept so the hot path skips the signature check; bounded, dropped on key change. */
const CACHE_SIZE = 1024;
/** A token minted with a lifetime beyond this is refused: a leaked token must age out. */
export const MAX_POD_TOKEN_TTL_SECONDS = 7 * 24 * 3600;

export interface PodTokenKeys {
  privateKeyPem: string;
  publicKeyPem: string;
}

/** A new Ed25519 key pair in PEM (PKCS#8 private, SPKI public). */
export function generatePodTokenKeys(): PodTokenKeys {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** Key id: the first 16 hex digits of the SHA-256 of the SPKI DER, so signer and verifier agree without configuration. */
function keyId(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

const signingKeys = new Map<string, { key: KeyObject; kid: string }>();

/** The imported signing key of a PEM (imported once: minting sits on the backend's hot path). */
function signingKey(privateKeyPem: string): { key: KeyObject; kid: string } {
  let entry = signingKeys.get(privateKeyPem);
  if (!entry) {
    let key: KeyObject;
    try {
      key = createPrivateKey(privateKeyPem);
    } catch (err) {
      throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `pod token signing key is not a PEM private key: ${(err as Error).message}`, { cause: err });
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `pod token signing key is ${key.asymmetricKeyType}; pod tokens are Ed25519`);
    entry = { key, kid: keyId(createPublicKey(key)) };
    if (signingKeys.size >= 16) signingKeys.clear();
    signingKeys.set(privateKeyPem, entry);
  }
  return entry;
}

export interface SignPodTokenOptions {
  purpose: PodTokenPurpose;
  podUid: string;
  ttlSeconds: number;
}

/** A token for one pod and one purpose, valid for `ttlSeconds`. */
export async function signPodToken(privateKeyPem: string, options: SignPodTokenOptions): Promise<string> {
  const { purpose, podUid, ttlSeconds } = options;
  if (!POD_TOKEN_PURPOSES.includes(purpose)) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', `unknown pod token purpose ${String(purpose)}`);
  if (!podUid) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', 'a pod token needs the pod UID');
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_POD_TOKEN_TTL_SECONDS) {
    throw new WorkspaceSandboxError('WS_ERR_VALIDATION', `pod token ttlSeconds must be an integer from 1 to ${MAX_POD_TOKEN_TTL_SECONDS}`);
  }
  const { key, kid } = signingKey(privateKeyPem);
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid })
    .setIssuer(POD_TOKEN_ISSUER)
    .setAudience(podTokenAudience(purpose))
    .setSubject(podUid)
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds)
    .sign(key);
}

export type PodTokenResult = { ok: true; keyId: string } | { ok: false; reason: string };

interface LoadedKeys {
  mtimeMs: number;
  byKid: Map<string, KeyObject>;
}

/** Parses every `PUBLIC KEY` block of a PEM file; anything that is not an Ed25519 key is an error. */
export function parsePublicKeys(pem: string, source: string): Map<string, KeyObject> {
  const blocks = pem.match(/-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/g) ?? [];
  if (blocks.length === 0) throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `${source} holds no PEM public key`);
  const byKid = new Map<string, KeyObject>();
  for (const block of blocks) {
    let key: KeyObject;
    try {
      key = createPublicKey(block);
    } catch (err) {
      throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `${source} holds an unreadable public key: ${(err as Error).message}`, { cause: err });
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `${source} holds a ${key.asymmetricKeyType} key; pod tokens are Ed25519`);
    byKid.set(keyId(key), key);
  }
  return byKid;
}

/**
 * Checks tokens against the public keys in one file, re-read when the file changes (a rotated
 * ConfigMap or Secret volume); a file that turns unreadable or empty keeps the last good keys.
 */
export class PodTokenVerifier {
  readonly path: string;
  #keys: LoadedKeys;
  readonly #cache = new Map<string, { purpose: PodTokenPurpose; podUid: string; exp: number; keyId: string }>();

  /** Throws WS_ERR_CONFIG_INVALID when the file cannot be read or holds no usable key. */
  constructor(publicKeysFile: string) {
    this.path = publicKeysFile;
    this.#keys = this.#load();
  }

  #load(): LoadedKeys {
    let text: string;
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.path).mtimeMs;
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `cannot read pod token public keys ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    return { mtimeMs, byKid: parsePublicKeys(text, this.path) };
  }

  #refresh(): void {
    try {
      // Volumes swap a symlink: stat follows it, so a new mtime means new content.
      if (statSync(this.path).mtimeMs === this.#keys.mtimeMs) return;
      this.#keys = this.#load();
      this.#cache.clear();
    } catch {
      // Keep the last good keys: a half-written rotation must not lock the backend out.
    }
  }

  /** Whether `token` is a current token for `purpose` on the pod `podUid`; the reason when not. */
  async verify(token: string | undefined, expected: { purpose: PodTokenPurpose; podUid: string }): Promise<PodTokenResult> {
    if (!token) return { ok: false, reason: 'no token' };
    if (token.length > MAX_TOKEN_LENGTH) return { ok: false, reason: 'token too long' };
    this.#refresh();
    const now = Math.floor(Date.now() / 1000);
    const cached = this.#cache.get(token);
    if (cached) {
      if (cached.exp <= now) {
        this.#cache.delete(token);
        return { ok: false, reason: 'token expired' };
      }
      if (cached.purpose !== expected.purpose) return { ok: false, reason: `token is for ${cached.purpose}, not ${expected.purpose}` };
      if (cached.podUid !== expected.podUid) return { ok: false, reason: 'token is for another pod' };
      return { ok: true, keyId: cached.keyId };
    }
    const result = await this.#verifySignature(token, expected);
    if (result.ok) {
      if (this.#cache.size >= CACHE_SIZE) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(token, { ...expected, exp: result.exp, keyId: result.keyId });
      return { ok: true, keyId: result.keyId };
    }
    return result;
  }

  async #verifySignature(token: string, expected: { purpose: PodTokenPurpose; podUid: string }): Promise<{ ok: true; keyId: string; exp: number } | { ok: false; reason: string }> {
    const keys = this.#keys.byKid;
    const verifyWith = async (kid: string, key: KeyObject) => {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ['EdDSA'],
        issuer: POD_TOKEN_ISSUER,
        requiredClaims: ['exp', 'sub', 'aud'],
      });
      if (typeof payload.exp !== 'number') throw new joseErrors.JWTClaimValidationFailed('missing exp', payload, 'exp', 'missing');
      if (typeof payload.iat === 'number' && payload.exp - payload.iat > MAX_POD_TOKEN_TTL_SECONDS) {
        throw new joseErrors.JWTClaimValidationFailed('lifetime too long', payload, 'exp', 'check_failed');
      }
      const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
      const purpose = POD_TOKEN_PURPOSES.find((p) => aud.includes(podTokenAudience(p)));
      if (purpose !== expected.purpose) return { ok: false as const, reason: purpose ? `token is for ${purpose}, not ${expected.purpose}` : 'token has no workspace-sandbox audience' };
      if (payload.sub !== expected.podUid) return { ok: false as const, reason: 'token is for another pod' };
      return { ok: true as const, keyId: kid, exp: payload.exp };
    };
    let header: { kid?: unknown };
    try {
      header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as { kid?: unknown };
    } catch {
      return { ok: false, reason: 'malformed token' };
    }
    const kid = typeof header?.kid === 'string' ? header.kid : undefined;
    const candidates = kid !== undefined ? (keys.has(kid) ? [[kid, keys.get(kid)!] as const] : []) : [...keys];
    if (candidates.length === 0) return { ok: false, reason: 'token signed by an unknown key' };
    let reason = 'bad signature';
    for (const [k, key] of candidates) {
      try {
        return await verifyWith(k, key);
      } catch (err) {
        reason = describe(err);
        if (!(err instanceof joseErrors.JWSSignatureVerificationFailed)) break;
      }
    }
    return { ok: false, reason };
  }
}

function describe(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token expired';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad signature';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `token claim ${err.claim} ${err.reason === 'missing' ? 'missing' : 'invalid'}`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm not allowed';
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return 'malformed token';
  return 'token rejected';
}
