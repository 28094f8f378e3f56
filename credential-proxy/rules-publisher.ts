// The backend's side of Redis-delivered rule sets: sign with the pod-token private key, store
// under the pod's key (or the global key) only if newer, expire with the pod's deadline, and
// announce on the key's own channel. The backend is the only writer: its Redis user
// (`ws-rules-writer` in manifests/redis/users.acl) is the only one allowed to write these keys.
//
// Versions never go backwards and are never reused, even across a Redis that restarted empty:
// a new version is above both the stored one and the current time in microseconds (epoch ms x
// 1000), and the store's script refuses a version that is not above the stored one. The floor is
// in microseconds because a pod's own /rules writes count up by one from the last set it applied:
// a burst of them (a write takes well over a microsecond) cannot run ahead of that floor, so a
// set published after Redis restarted empty is still newer than everything the pod acknowledged.
import type { Redis } from 'ioredis';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { GLOBAL_SET, signRuleSet } from './rule-set-signature.ts';
import { ruleSetKeys } from './rules-store-redis.ts';
import { validateRules, type RuleInput } from './rules.ts';

export const DEFAULT_RULES_REDIS_PREFIX = 'workspace-sandbox:rules';

export interface PublishRuleSetOptions {
  /** The backend's pod-token signing key (PEM, Ed25519: the Secret POD_TOKEN_SIGNING_SECRET). */
  signingKeyPem: string;
  /** The pod UID (the sidecar's RULES_SCOPE); omit for the global default set. */
  scope?: string;
  rules: readonly RuleInput[];
  /** The pod's deadline: the key and the signature expire then. Required for a pod's set. */
  expiresAt?: Date;
  /** Key prefix (the sidecar's RULES_REDIS_PREFIX). */
  prefix?: string;
  /** Default Date.now; tests pin it. */
  now?: () => number;
}

// KEYS[1] = the set's key; ARGV = version, signed doc, expiry (epoch ms or ''), channel.
// Returns the version stored, or -1 - current when the stored version is not lower.
const PUBLISH_SCRIPT = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if cur >= tonumber(ARGV[1]) then return -1 - cur end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'doc', ARGV[2])
if ARGV[3] ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
redis.call('PUBLISH', ARGV[4], ARGV[1])
return tonumber(ARGV[1])
`;

const MAX_ATTEMPTS = 8;

/**
 * Publishes a rule set; resolves with its version once it is stored and announced. Proxies apply
 * it asynchronously: GET /rules on the pod (ETag) shows when it is in force. The rules are checked
 * against the schema here; each proxy also checks the credentials they name against its own
 * CREDENTIALS_FILE and ignores (and logs) a set it cannot enforce whole.
 */
export async function publishRuleSet(redis: Redis, options: PublishRuleSetOptions): Promise<{ version: number; key: string }> {
  const prefix = options.prefix ?? DEFAULT_RULES_REDIS_PREFIX;
  const now = options.now ?? Date.now;
  const global = options.scope === undefined;
  if (!global && !options.expiresAt) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', 'a pod\'s rule set needs expiresAt (the pod\'s deadline)');
  const rules = validateRules(options.rules, global ? 'global rule set' : `rule set of ${options.scope}`);
  const key = global ? ruleSetKeys(prefix, '').global : ruleSetKeys(prefix, options.scope!).scope;
  const expiresAt = options.expiresAt?.getTime();
  if (expiresAt !== undefined && expiresAt <= now()) throw new WorkspaceSandboxError('WS_ERR_VALIDATION', 'expiresAt is in the past');
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    const stored = Number(await redis.hget(key, 'version') ?? 0);
    const version = Math.max(stored + 1, now() * 1000);
    const doc = await signRuleSet(options.signingKeyPem, {
      set: global ? 'global' : 'scope', scope: global ? GLOBAL_SET : options.scope!, version, rules,
      ...(expiresAt !== undefined ? { expiresAt } : {}),
    });
    const result = Number(await redis.eval(PUBLISH_SCRIPT, 1, key, version, doc, expiresAt ?? '', key));
    if (result > 0) return { version: result, key };
    // Another backend replica published in between: go above it.
  }
  throw new WorkspaceSandboxError('WS_ERR_CONFLICT', `the rule set at ${key} kept changing under concurrent publications; retry`);
}
