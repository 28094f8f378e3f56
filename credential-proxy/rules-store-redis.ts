// Redis-backed rule sets: `<prefix>:scope:<scope>` (this pod's, a hash {version, rules}) and
// `<prefix>:global` (an optional default set, written by the backend). A write goes to Redis
// first (a Lua script: compare version, bump, store, publish, all atomic) and only then applies
// locally; the pub/sub message on `<prefix>:changed` makes every other subscriber (a restarted
// sidecar, another replica) reload.
//
// Outage contract: unreachable at start → the file/env rules serve and we retry in the
// background; lost later → the last known rules keep serving; a write while down → 503, never a
// silently lost update; on reconnect → resync (and re-seed a Redis that came back empty, so the
// pod's rules and their version survive a Redis restart without persistence).
import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { ruleListSchema } from './rules.ts';
import {
  EMPTY, preconditionFailed,
  type Mutation, type RuleSetSnapshot, type RulesStore, type RulesStoreEvents, type StoreStatus, type WriteResult,
} from './rules-store.ts';

export interface RedisRulesStoreOptions {
  url: string;
  scope: string;
  prefix: string;
  logger: Logger;
  /** How long start() waits for the first connection before serving without Redis. */
  startTimeoutMs?: number;
}

const GLOBAL_MESSAGE = '*global*';
const MAX_RETRIES = 8;

// KEYS[1] = scope key; ARGV = expected version, new rules JSON, channel, message.
// Returns the new version, or -1 - current when the expected version is stale.
const WRITE_SCRIPT = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if cur ~= tonumber(ARGV[1]) then return -1 - cur end
local nextv = cur + 1
redis.call('HSET', KEYS[1], 'version', nextv, 'rules', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return nextv
`;

// Re-seed after Redis lost the key: only when it is still absent.
const SEED_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'rules', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`;

function unavailable(err: unknown): WorkspaceSandboxError {
  return new WorkspaceSandboxError('WS_ERR_UNAVAILABLE', 'the rules store (Redis) is unreachable: the change was NOT applied; retry later', { cause: err });
}

export class RedisRulesStore extends EventEmitter<RulesStoreEvents> implements RulesStore {
  readonly kind = 'redis' as const;
  readonly #opts: RedisRulesStoreOptions;
  #client!: Redis;
  #sub!: Redis;
  readonly #key: string;
  readonly #globalKey: string;
  readonly #channel: string;
  #scoped: RuleSetSnapshot = EMPTY;
  #global: RuleSetSnapshot = EMPTY;
  #up = false;
  #synced = false;
  #lastError: string | undefined;
  #lastSyncAt: string | undefined;
  #closed = false;
  #syncing: Promise<void> | undefined;

  constructor(options: RedisRulesStoreOptions) {
    super();
    this.#opts = options;
    this.#key = `${options.prefix}:scope:${options.scope}`;
    this.#globalKey = `${options.prefix}:global`;
    this.#channel = `${options.prefix}:changed`;
  }

  // ioredis is loaded only when REDIS_URL is set: the memory-store sidecar does not pay for it.
  async #connectClients(): Promise<void> {
    const { Redis: RedisClient } = await import('ioredis');
    const options = this.#opts;
    const retryStrategy = (attempt: number) => Math.min(50 * attempt, 1000);
    // No offline queue on the command connection: a write while Redis is down must fail now
    // (503), not sit in a queue and land later behind the caller's back.
    this.#client = new RedisClient(options.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy, connectionName: `ws-proxy:${options.scope}` });
    this.#sub = new RedisClient(options.url, { lazyConnect: true, retryStrategy, connectionName: `ws-proxy-sub:${options.scope}` });
    this.#client.on('ready', () => {
      this.#setUp(true);
      void this.#resync('connected');
    });
    this.#client.on('close', () => this.#setUp(false));
    this.#client.on('error', (err: Error) => {
      this.#lastError = err.message;
    });
    this.#sub.on('error', () => { /* reported through the command connection */ });
    // Messages may have been missed while the subscriber was away: resync after it comes back.
    this.#sub.on('ready', () => {
      if (this.#synced) void this.#resync('subscriber reconnected');
    });
    this.#sub.on('message', (_channel: string, message: string) => {
      if (message === this.#opts.scope || message === GLOBAL_MESSAGE) void this.#resync('change published');
    });
  }

  #setUp(up: boolean): void {
    if (this.#up === up) return;
    this.#up = up;
    if (!up && !this.#closed) this.#opts.logger.warn({ store: 'redis', lastError: this.#lastError }, 'rules store unreachable; serving the last known rules');
    if (up) this.#opts.logger.info({ store: 'redis' }, 'rules store reachable');
    this.emit('status');
  }

  async start(): Promise<void> {
    await this.#connectClients();
    const first = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, this.#opts.startTimeoutMs ?? 2000);
      timer.unref();
      this.once('change', () => resolve());
      this.#client.once('error', () => resolve());
      this.once('status', () => { if (!this.#up) resolve(); });
    });
    this.#client.connect().catch(() => { /* retried by retryStrategy */ });
    this.#sub.connect().then(() => this.#sub.subscribe(this.#channel)).catch(() => { /* resubscribes on reconnect */ });
    await first;
  }

  scoped(): RuleSetSnapshot {
    return this.#scoped;
  }

  global(): RuleSetSnapshot {
    return this.#global;
  }

  status(): StoreStatus {
    return {
      kind: 'redis', up: this.#up, synced: this.#synced, scope: this.#opts.scope,
      ...(this.#lastError ? { lastError: this.#lastError } : {}),
      ...(this.#lastSyncAt ? { lastSyncAt: this.#lastSyncAt } : {}),
    };
  }

  async #read(key: string): Promise<RuleSetSnapshot | undefined> {
    const doc = await this.#client.hgetall(key);
    if (doc.version === undefined) return undefined;
    const version = Number(doc.version);
    const parsed = ruleListSchema.safeParse(JSON.parse(doc.rules ?? '[]'));
    if (!Number.isSafeInteger(version) || !parsed.success) {
      throw new Error(`${key} holds an invalid rule set${parsed.success ? '' : `: ${parsed.error.issues.length} problems`}`);
    }
    return Object.freeze({ version, rules: Object.freeze(parsed.data) });
  }

  #resync(why: string): Promise<void> {
    // Coalesce: one resync at a time, and one more after it if asked meanwhile.
    const run = async () => {
      if (this.#closed || !this.#up) return;
      try {
        let scoped = await this.#read(this.#key);
        if (!scoped && this.#scoped.version > 0) {
          const seeded = await this.#client.eval(SEED_SCRIPT, 1, this.#key, this.#scoped.version, JSON.stringify(this.#scoped.rules), this.#channel, this.#opts.scope);
          if (seeded === 1) this.#opts.logger.warn({ version: this.#scoped.version }, 'rules store had lost this pod\'s rule set; re-seeded it from the last known rules');
          scoped = await this.#read(this.#key);
        }
        const global = await this.#read(this.#globalKey).catch((err: Error) => {
          this.#opts.logger.error({ err: err.message }, 'ignoring the global rule set');
          return this.#global;
        });
        const next = scoped ?? EMPTY;
        const nextGlobal = global ?? EMPTY;
        const same = (a: RuleSetSnapshot, b: RuleSetSnapshot) => a.version === b.version && JSON.stringify(a.rules) === JSON.stringify(b.rules);
        const changed = !same(next, this.#scoped) || !same(nextGlobal, this.#global);
        this.#scoped = next;
        this.#global = nextGlobal;
        this.#synced = true;
        this.#lastSyncAt = new Date().toISOString();
        this.#opts.logger.debug({ why, version: next.version }, 'rules store synced');
        if (changed) this.emit('change');
      } catch (err) {
        this.#lastError = (err as Error).message;
        this.#opts.logger.error({ err: (err as Error).message, why }, 'rules store sync failed; keeping the last known rules');
      }
    };
    const p = (this.#syncing ?? Promise.resolve()).then(run);
    this.#syncing = p;
    return p;
  }

  async write(mutate: Mutation, ifMatch?: number): Promise<WriteResult> {
    if (!this.#up || !this.#client) throw unavailable(new Error(this.#lastError ?? 'not connected'));
    for (let attempt = 0; attempt < MAX_RETRIES; attempt++) {
      let before: RuleSetSnapshot;
      try {
        before = (await this.#read(this.#key)) ?? EMPTY;
      } catch (err) {
        throw unavailable(err);
      }
      if (ifMatch !== undefined && ifMatch !== before.version) throw preconditionFailed(ifMatch, before.version);
      const rules = mutate(before.rules);
      let result: number;
      try {
        result = Number(await this.#client.eval(WRITE_SCRIPT, 1, this.#key, before.version, JSON.stringify(rules), this.#channel, this.#opts.scope));
      } catch (err) {
        throw unavailable(err);
      }
      if (result < 0) {
        // Someone wrote between our read and the script. With If-Match the caller's view is
        // stale: 412. Without, re-read and re-apply the mutation.
        if (ifMatch !== undefined) throw preconditionFailed(ifMatch, -1 - result);
        continue;
      }
      const after = Object.freeze({ version: result, rules: Object.freeze([...rules]) });
      if (after.version > this.#scoped.version) {
        this.#scoped = after;
        this.emit('change');
      }
      return { before, after };
    }
    throw new WorkspaceSandboxError('WS_ERR_CONFLICT', 'the rule set kept changing under concurrent writes; retry');
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#client?.disconnect();
    this.#sub?.disconnect();
  }
}
