// The store the config asks for: the sidecar's own (memory, kept in RULES_STATE_DIR when set),
// plus signed sets from Redis when REDIS_URL is set.
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import type { ProxyConfig } from './config.ts';
import { RuleSetVerifier } from './rule-set-signature.ts';
import { validateRules } from './rules.ts';
import { RuleStateFile } from './rules-state-file.ts';
import { MemoryRulesStore, type RulesStore } from './rules-store.ts';
import { RedisRulesStore } from './rules-store-redis.ts';

export function createRulesStore(config: ProxyConfig, logger: Logger, registry?: Registry): RulesStore {
  // Sets from Redis and from the state file pass the same checks as a PUT: the credentials they
  // name must be declared here, for hosts their declarations allow.
  const validate = (rules: unknown, source: string) => validateRules(rules, source, new Set(), config.credentials);
  const stateFile = config.RULES_STATE_DIR ? new RuleStateFile(config.RULES_STATE_DIR, config.rulesScope, validate, logger.child({ component: 'rules-store' })) : undefined;
  if (!config.REDIS_URL) return new MemoryRulesStore(config.rulesScope, stateFile ? { stateFile } : {});
  // A rejected set is someone writing Redis who should not (or a backend/sidecar mismatch): alert on it.
  const rejected = registry && new Counter({
    name: 'rules_sets_rejected_total', labelNames: ['set'], registers: [registry],
    help: 'Rule sets found in Redis and ignored: bad or unknown signature, another pod\'s, expired, or rules this sidecar cannot enforce',
  });
  return new RedisRulesStore({
    url: config.REDIS_URL,
    username: config.REDIS_USERNAME,
    password: config.REDIS_PASSWORD_FILE ? readSecret(config.REDIS_PASSWORD_FILE) : undefined,
    caFile: config.REDIS_CA_FILE,
    scope: config.rulesScope,
    prefix: config.RULES_REDIS_PREFIX,
    logger: logger.child({ component: 'rules-store' }),
    verifier: new RuleSetVerifier(config.POD_TOKEN_PUBLIC_KEYS_FILE!),
    validate,
    stateFile,
    ...(rejected ? { onRejected: (set: 'scope' | 'global') => rejected.inc({ set }) } : {}),
  });
}

function readSecret(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `cannot read REDIS_PASSWORD_FILE ${path}: ${(err as Error).message}`, { cause: err });
  }
}
