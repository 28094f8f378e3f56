// Rule sets the backend publishes through Redis are signed with the backend's pod-token key
// (Ed25519, lib/pod-token.ts) and verified by the proxy before use, so a rule set in Redis is
// trusted for what it says, not for where it was found: whoever can write Redis (a leaked
// password, an operator's mistake in the ACL) still cannot make a proxy enforce a set the backend
// did not sign, a set signed for another pod, or an older set of its own.
//
// A signed set is a JWS (compact, EdDSA) whose header `typ` and payload `aud` differ from a pod
// token's, so neither can be passed off as the other although the keys are shared.
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { CompactSign, compactVerify } from 'jose';
import { z } from 'zod';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { parsePublicKeys } from '../lib/pod-token.ts';

export const RULE_SET_JWS_TYPE = 'workspace-sandbox-rule-set+jws';
export const RULE_SET_AUDIENCE = 'workspace-sandbox/rule-set';
/** The `scope` of the global default set (pod UIDs are UUIDs, and the claim `set` tells them apart too). */
export const GLOBAL_SET = 'global';

/** Bound on what the proxy parses from Redis: a rule set is a few KiB. */
export const MAX_SIGNED_RULE_SET_BYTES = 1024 * 1024;

export interface RuleSetClaims {
  /** `scope`: one pod's set (scope = its UID); `global`: the default set of every pod. */
  readonly set: 'scope' | 'global';
  readonly scope: string;
  readonly version: number;
  /** Epoch ms after which the set is void (the pod's deadline); absent for the global set. */
  readonly expiresAt?: number;
  readonly rules: readonly unknown[];
}

const claimsSchema = z.object({
  aud: z.literal(RULE_SET_AUDIENCE),
  set: z.enum(['scope', 'global']),
  scope: z.string().min(1),
  version: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  expiresAt: z.number().int().optional(),
  rules: z.array(z.unknown()),
}).strict();

function keyId(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** Signs a rule set with the backend's pod-token private key (PEM). */
export async function signRuleSet(privateKeyPem: string, claims: RuleSetClaims): Promise<string> {
  let key: KeyObject;
  try {
    key = createPrivateKey(privateKeyPem);
  } catch (err) {
    throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `rule set signing key is not a PEM private key: ${(err as Error).message}`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `rule set signing key is ${key.asymmetricKeyType}; it must be the Ed25519 pod-token key`);
  const payload = { aud: RULE_SET_AUDIENCE, ...claims };
  return new CompactSign(Buffer.from(JSON.stringify(payload)))
    .setProtectedHeader({ alg: 'EdDSA', typ: RULE_SET_JWS_TYPE, kid: keyId(createPublicKey(key)) })
    .sign(key);
}

export type RuleSetVerdict = { ok: true; claims: RuleSetClaims } | { ok: false; reason: string };

/** Verifies signed sets against the pod-token public keys file (re-read when it changes). */
export class RuleSetVerifier {
  readonly path: string;
  #mtimeMs: number;
  #keys: Map<string, KeyObject>;

  constructor(publicKeysFile: string) {
    this.path = publicKeysFile;
    const { mtimeMs, keys } = this.#load();
    this.#mtimeMs = mtimeMs;
    this.#keys = keys;
  }

  #load(): { mtimeMs: number; keys: Map<string, KeyObject> } {
    try {
      const mtimeMs = statSync(this.path).mtimeMs;
      return { mtimeMs, keys: parsePublicKeys(readFileSync(this.path, 'utf8'), this.path) };
    } catch (err) {
      if (err instanceof WorkspaceSandboxError) throw err;
      throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `cannot read pod token public keys ${this.path}: ${(err as Error).message}`, { cause: err });
    }
  }

  #refresh(): void {
    try {
      if (statSync(this.path).mtimeMs === this.#mtimeMs) return;
      const next = this.#load();
      this.#mtimeMs = next.mtimeMs;
      this.#keys = next.keys;
    } catch {
      // Keep the last good keys during a half-written rotation.
    }
  }

  /** Whether `jws` is a set signed by the backend for `expected` (and not expired at `now`). */
  async verify(jws: string, expected: { set: 'scope' | 'global'; scope: string }, now = Date.now()): Promise<RuleSetVerdict> {
    if (jws.length > MAX_SIGNED_RULE_SET_BYTES) return { ok: false, reason: 'signed rule set too large' };
    this.#refresh();
    let header: { kid?: unknown; typ?: unknown; alg?: unknown };
    try {
      header = JSON.parse(Buffer.from(jws.split('.')[0] ?? '', 'base64url').toString('utf8')) as typeof header;
    } catch {
      return { ok: false, reason: 'not a signed rule set' };
    }
    if (header?.typ !== RULE_SET_JWS_TYPE) return { ok: false, reason: 'not a signed rule set (wrong type)' };
    const key = typeof header.kid === 'string' ? this.#keys.get(header.kid) : undefined;
    if (!key) return { ok: false, reason: 'signed by an unknown key' };
    let payload: Uint8Array;
    try {
      ({ payload } = await compactVerify(jws, key, { algorithms: ['EdDSA'] }));
    } catch {
      return { ok: false, reason: 'bad signature' };
    }
    let claims: z.output<typeof claimsSchema>;
    try {
      claims = claimsSchema.parse(JSON.parse(Buffer.from(payload).toString('utf8')));
    } catch {
      return { ok: false, reason: 'malformed claims' };
    }
    if (claims.set !== expected.set || claims.scope !== expected.scope) return { ok: false, reason: `signed for ${claims.set} ${claims.scope}, not this pod's ${expected.set} set` };
    if (claims.expiresAt !== undefined && claims.expiresAt <= now) return { ok: false, reason: 'expired' };
    const { aud: _aud, ...rest } = claims;
    return { ok: true, claims: rest };
  }
}
