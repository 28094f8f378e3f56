// The store the config asks for: Redis when REDIS_URL is set, else in memory.
import type { Logger } from 'pino';
import type { ProxyConfig } from './config.ts';
import { MemoryRulesStore, type RulesStore } from './rules-store.ts';
import { RedisRulesStore } from './rules-store-redis.ts';

export function createRulesStore(config: ProxyConfig, logger: Logger): RulesStore {
  if (!config.REDIS_URL) return new MemoryRulesStore(config.rulesScope);
  return new RedisRulesStore({ url: config.REDIS_URL, scope: config.rulesScope, prefix: config.RULES_REDIS_PREFIX, logger: logger.child({ component: 'rules-store' }) });
}
