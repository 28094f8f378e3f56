// Rule sets the backend publishes through Redis: `<prefix>:global` (the default set of every pod)
// and `<prefix>:scope:<pod UID>` (one pod's set), each a hash {version, doc} where doc is the set
// signed by the backend (rule-set-signature.ts). The proxy only reads: its Redis user may read
// those keys and subscribe to their channels (one channel per key, named like the key), nothing
// else. The backend is the only writer (rules-publisher.ts).
//
// Trust: a set is used only when its signature verifies against the pod-token public keys, it is
// for this pod (or the global set), it has not expired, its rules pass this sidecar's checks
// (credentials it declares, for hosts they allow), and its version is higher than the one
// enforced. So whoever reaches Redis (a workspace, with the NetworkPolicy open to it) can neither
// change a pod's rules nor, without the reader password mounted only into sidecars, read them.
//
// The pod's /rules set and a set published for it are one sequence of versions: the higher wins,
// an older one is ignored whatever the order it arrives in. Redis is a delivery path, not the
// source of truth: the enforced sets live in the sidecar (and its state volume), so a Redis that
// restarts empty changes nothing, and an outage only delays new publications.
import { readFileSync } from 'node:fs';
import type { Redis, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { GLOBAL_SET, MAX_SIGNED_RULE_SET_BYTES, type RuleSetVerifier } from './rule-set-signature.ts';
import type { RuleListValidator, RuleStateFile } from './rules-state-file.ts';
import { freezeSnapshot, MemoryRulesStore, type StoreStatus } from './rules-store.ts';

export interface RedisConnectionOptions {
  /** redis:// or rediss:// (TLS); no password in it. */
  url: string;
  /** ACL user (REDIS_USERNAME). */
  username?: string | undefined;
  /** ACL password (read from REDIS_PASSWORD_FILE). */
  password?: string | undefined;
  /** CA bundle that signs the server's certificate (REDIS_CA_FILE); default: the system's. */
  caFile?: string | undefined;
}

export interface RedisRulesStoreOptions extends RedisConnectionOptions {
  scope: string;
  prefix: string;
  logger: Logger;
  verifier: RuleSetVerifier;
  /** This sidecar's checks of a delivered rule list (schema, credentials). */
  validate: RuleListValidator;
  stateFile?: RuleStateFile | undefined;
  /** How long start() waits for the first sync before serving without Redis. */
  startTimeoutMs?: number;
  /** Called for every set found in Redis and not trusted (metrics). */
  onRejected?: (set: 'scope' | 'global') => void;
}

export const ruleSetKeys = (prefix: string, scope: string) => ({ scope: `${prefix}:scope:${scope}`, global: `${prefix}:global` });

/** ioredis options for a URL, an ACL user and TLS: shared by the proxy's reader and the backend's publisher. */
export function redisClientOptions(options: RedisConnectionOptions): RedisOptions {
  const url = new URL(options.url);
  if (url.password) throw new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', 'REDIS_URL must not carry a password: put it in REDIS_PASSWORD_FILE');
  const tls = url.protocol === 'rediss:'
    ? { servername: url.hostname, ...(options.caFile ? { ca: readFileSync(options.caFile, 'utf8') } : {}), minVersion: 'TLSv1.2' as const }
    : undefined;
  return {
    ...(options.username ?? url.username ? { username: options.username ?? decodeURIComponent(url.username) } : {}),
    ...(options.password ? { password: options.password } : {}),
    ...(tls ? { tls } : {}),
  };
}

export class RedisRulesStore extends MemoryRulesStore {
  override readonly kind = 'redis' as const;
  readonly #opts: RedisRulesStoreOptions;
  readonly #keys: { scope: string; global: string };
  #client: Redis | undefined;
  #sub: Redis | undefined;
  #up = false;
  #synced = false;
  #rejected = 0;
  #lastError: string | undefined;
  #lastSyncAt: string | undefined;
  #closed = false;
  #syncing: Promise<void> | undefined;
  #again = false;

  constructor(options: RedisRulesStoreOptions) {
    super(options.scope, options.stateFile ? { stateFile: options.stateFile } : {});
    this.#opts = options;
    this.#keys = ruleSetKeys(options.prefix, options.scope);
  }

  // ioredis is loaded only when REDIS_URL is set: the memory-store sidecar does not pay for it.
  async #connectClients(): Promise<{ client: Redis; sub: Redis }> {
    const { Redis: RedisClient } = await import('ioredis');
    const options = this.#opts;
    const base = redisClientOptions(options);
    const retryStrategy = (attempt: number) => Math.min(50 * attempt, 1000);
    const client = new RedisClient(options.url, { ...base, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, retryStrategy, connectionName: `ws-proxy:${options.scope}` });
    const sub = new RedisClient(options.url, { ...base, lazyConnect: true, retryStrategy, connectionName: `ws-proxy-sub:${options.scope}` });
    client.on('ready', () => {
      this.#setUp(true);
      this.#sync('connected');
    });
    client.on('close', () => this.#setUp(false));
    client.on('error', (err: Error) => {
      this.#lastError = err.message;
    });
    sub.on('error', () => { /* reported through the command connection */ });
    // Publications may have been missed while the subscriber was away: sync after it comes back.
    sub.on('ready', () => {
      if (this.#synced) this.#sync('subscriber reconnected');
    });
    sub.on('message', () => this.#sync('published'));
    this.#client = client;
    this.#sub = sub;
    return { client, sub };
  }

  #setUp(up: boolean): void {
    if (this.#up === up) return;
    this.#up = up;
    if (!up && !this.#closed) this.#opts.logger.warn({ store: 'redis', lastError: this.#lastError }, 'rules store unreachable; serving the rules in force');
    if (up) this.#opts.logger.info({ store: 'redis' }, 'rules store reachable');
    this.emit('status');
  }

  override async start(): Promise<void> {
    await super.start();
    const { client, sub } = await this.#connectClients();
    const first = new Promise<void>((resolve) => {
      // Unreachable by then: the proxy logs and counts it (server.ts) and serves without Redis.
      const timer = setTimeout(resolve, this.#opts.startTimeoutMs ?? 2000);
      timer.unref();
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.once('synced', done);
    });
    client.connect().catch(() => { /* retried by retryStrategy */ });
    sub.connect().then(() => sub.subscribe(this.#keys.scope, this.#keys.global)).catch(() => { /* resubscribes on reconnect */ });
    await first;
  }

  override status(): StoreStatus & { rejectedSets: number } {
    return {
      ...super.status(),
      kind: 'redis', up: this.#up, synced: this.#synced, rejectedSets: this.#rejected,
      ...(this.#lastError ? { lastError: this.#lastError } : {}),
      ...(this.#lastSyncAt ? { lastSyncAt: this.#lastSyncAt } : {}),
    };
  }

  /** Reads, verifies and offers one published set; `undefined` when there is none. */
  async #fetch(key: string, set: 'scope' | 'global'): Promise<void> {
    const doc = await this.#client!.hget(key, 'doc');
    if (doc === null) return;
    const scope = set === 'global' ? GLOBAL_SET : this.#opts.scope;
    const verdict = doc.length > MAX_SIGNED_RULE_SET_BYTES ? { ok: false as const, reason: 'too large' } : await this.#opts.verifier.verify(doc, { set, scope });
    let problem = verdict.ok ? undefined : verdict.reason;
    let applied = false;
    if (verdict.ok) {
      const { version, rules } = verdict.claims;
      try {
        const accepted = this.#opts.validate(rules, `${set} rule set v${version} from Redis`);
        const snapshot = freezeSnapshot(version, accepted);
        applied = set === 'global' ? this.offerGlobal(snapshot) : this.offerScoped(snapshot);
        if (!applied) this.#opts.logger.debug({ key, version, enforced: set === 'global' ? this.global().version : this.scoped().version }, 'published rule set is not newer than the one enforced; ignored');
      } catch (err) {
        problem = (err as Error).message;
      }
    }
    if (problem !== undefined) {
      this.#rejected++;
      this.#opts.onRejected?.(set);
      this.#opts.logger.error({ key, reason: problem }, 'ignored a rule set in Redis that this proxy does not trust; the rules in force are unchanged');
    } else if (applied) {
      this.#opts.logger.info({ key, set, version: set === 'global' ? this.global().version : this.scoped().version }, 'applied a published rule set');
    }
  }

  #sync(why: string): void {
    // One sync at a time, and one more after it when asked meanwhile (a publication during a
    // sync must not be missed).
    if (this.#syncing) {
      this.#again = true;
      return;
    }
    const run = async () => {
      do {
        this.#again = false;
        if (this.#closed || !this.#up || !this.#client) return;
        try {
          await this.#fetch(this.#keys.scope, 'scope');
          await this.#fetch(this.#keys.global, 'global');
          this.#synced = true;
          this.#lastSyncAt = new Date().toISOString();
          this.#opts.logger.debug({ why }, 'rules store synced');
          this.emit('synced');
        } catch (err) {
          this.#lastError = (err as Error).message;
          this.#opts.logger.error({ err: (err as Error).message, why }, 'rules store sync failed; the rules in force are unchanged');
        }
      } while (this.#again);
    };
    this.#syncing = run().finally(() => {
      this.#syncing = undefined;
    });
  }

  override async close(): Promise<void> {
    this.#closed = true;
    this.#client?.disconnect();
    this.#sub?.disconnect();
    await this.#syncing;
  }
}
