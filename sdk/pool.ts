// The warm pool (the plan's L1 cold-start layer): `min` ready workspaces kept by a replenisher,
// at most `max` in the pool, claimed atomically in Redis by any number of backend replicas, and
// personalised at claim time without a restart: the claim pushes the conversation's egress rules
// to the workspace's proxy and assigns (labels) it, so a warm workspace becomes the
// conversation's in one round trip. A miss falls back to `create`.
//
//   const pool = new WarmPool({ backend, redis, owner: 'backend', min: 10, max: 50 });
//   pool.start();                                          // replenisher
//   const { workspace, source } = await pool.acquire('conv-42', { rules, allowedDomains });
//   await pool.exec(workspace.id, ['make', 'test']);       // exec + last-use time (idle expiry)
//
// A replica that dies mid-claim leaves the workspace in the claiming set with a deadline; the
// collector (sdk/gc.ts) destroys it after that (never returns it to the pool: it may already carry
// the other conversation's rules). A replica that dies while creating a pool workspace leaves an
// expired slot and an unrecorded workspace, which the collector removes as an orphan.
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { CreateOptions, ExecOptions, ExecResult, Rule, Workspace, WorkspaceBackend } from './backend.ts';
import { checkConversationId } from './agent-backed.ts';
import { WorkspaceError } from './errors.ts';
import { RecordStore } from './records.ts';

export interface AcquireOptions extends Omit<CreateOptions, 'pool' | 'wait'> {
  /** The conversation's egress rules (credential rules name credentials the proxy holds). */
  rules?: Rule[];
  /** Idle expiry: the collector removes the workspace this long after its last exec. */
  idleSeconds?: number;
}

export interface AcquireResult {
  workspace: Workspace;
  /** existing: the conversation had one; pool: a warm one was claimed; created: a miss. */
  source: 'existing' | 'pool' | 'created';
}

export interface WarmPoolOptions {
  backend: WorkspaceBackend;
  redis: Redis;
  /** Namespaces the Redis keys: the backend's owner label. */
  owner: string;
  name?: string;
  min: number;
  max: number;
  /** How pool workspaces are made (image, resources); no conversation, no rules. */
  template?: Omit<CreateOptions, 'pool' | 'wait' | 'allowedDomains'>;
  /** A claim not committed by then is the collector's (its replica is taken for dead). */
  claimTimeoutMs?: number;
  /** A pool workspace not ready by then is given up. */
  createTimeoutMs?: number;
  replenishIntervalMs?: number;
  /** Defaults applied to acquired workspaces. */
  defaults?: { ttlSeconds?: number; idleSeconds?: number };
  metrics?: Registry;
  logger?: Logger;
  /** This replica's name in claim records (default: a random id). */
  replica?: string;
}

const DEFAULT_NAME = 'default';
/** Tried before falling back to create when claimed workspaces turn out dead. */
const CLAIM_ATTEMPTS = 3;

/** ALLOWED_DOMAINS entries (`host`, `*.suffix`, `host:port`) as tunnel-only rules for /rules. */
export function domainRules(domains: readonly string[]): Rule[] {
  return domains.map((d, i) => {
    const m = /^(.*):(\d+)$/.exec(d);
    return m ? { id: `allowed-domain-${i}`, hosts: [m[1]!], ports: [Number(m[2])] } : { id: `allowed-domain-${i}`, hosts: [d] };
  });
}

interface PoolMetrics {
  claims: Counter<'pool' | 'result'>;
  claimSeconds: Histogram<'pool' | 'result'>;
  replenishFailures: Counter<'pool'>;
}

function poolMetrics(registry: Registry | undefined, records: RecordStore, pool: string): PoolMetrics {
  const registers = registry ? [registry] : [];
  new Gauge({
    name: 'workspace_pool_size',
    help: 'Workspaces in the warm pool by state (ready, warming, claiming), read from Redis: all replicas.',
    labelNames: ['pool', 'state'],
    registers,
    async collect() {
      const sizes = await records.sizes(pool);
      for (const [state, n] of Object.entries(sizes)) this.set({ pool, state }, n);
    },
  });
  return {
    claims: new Counter({ name: 'workspace_pool_claims_total', help: 'Acquisitions by result: hit (warm workspace claimed), miss (created), existing.', labelNames: ['pool', 'result'], registers }),
    claimSeconds: new Histogram({
      name: 'workspace_pool_claim_seconds', help: 'Time to hand a conversation its workspace, by result.', labelNames: ['pool', 'result'], registers,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    }),
    replenishFailures: new Counter({ name: 'workspace_pool_replenish_failures_total', help: 'Pool workspaces that could not be created.', labelNames: ['pool'], registers }),
  };
}

export class WarmPool {
  readonly backend: WorkspaceBackend;
  readonly records: RecordStore;
  readonly name: string;
  readonly #o: WarmPoolOptions;
  readonly #replica: string;
  readonly #metrics: PoolMetrics;
  #timer: NodeJS.Timeout | undefined;
  #replenishing: Promise<number> | undefined;

  constructor(options: WarmPoolOptions) {
    if (!(Number.isInteger(options.min) && Number.isInteger(options.max) && options.min >= 0 && options.max >= options.min)) {
      throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', `pool sizes need 0 <= min <= max (got min ${options.min}, max ${options.max})`);
    }
    this.#o = options;
    this.backend = options.backend;
    this.name = options.name ?? DEFAULT_NAME;
    this.records = new RecordStore(options.redis, options.owner);
    this.#replica = options.replica ?? randomUUID();
    this.#metrics = poolMetrics(options.metrics, this.records, this.name);
  }

  get #claimTimeoutMs(): number { return this.#o.claimTimeoutMs ?? 30_000; }
  get #createTimeoutMs(): number { return this.#o.createTimeoutMs ?? 120_000; }

  /** The conversation's workspace: its existing one, else a claimed warm one, else a new one. */
  async acquire(conversationId: string, options: AcquireOptions = {}): Promise<AcquireResult> {
    checkConversationId(conversationId);
    const started = performance.now();
    const done = (result: AcquireResult): AcquireResult => {
      const label = result.source === 'pool' ? 'hit' : result.source === 'created' ? 'miss' : 'existing';
      this.#metrics.claims.inc({ pool: this.name, result: label });
      this.#metrics.claimSeconds.observe({ pool: this.name, result: label }, (performance.now() - started) / 1000);
      return result;
    };
    const existing = await this.#existing(conversationId);
    if (existing) return done({ workspace: existing, source: 'existing' });
    const claimed = await this.claim(conversationId, options);
    if (claimed) return done(claimed);
    return done(await this.#createFor(conversationId, options));
  }

  async #existing(conversationId: string): Promise<Workspace | undefined> {
    const id = await this.records.conversation(conversationId);
    if (id === undefined) return undefined;
    const record = await this.records.get(id);
    return record?.state === 'assigned' ? record.workspace : undefined;
  }

  /**
   * Claims a warm workspace for the conversation and personalises it (rules pushed, assigned,
   * agent answering), or resolves undefined when the pool is empty.
   */
  async claim(conversationId: string, options: AcquireOptions = {}): Promise<AcquireResult | undefined> {
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      const id = await this.records.claim(this.name, Date.now() + this.#claimTimeoutMs, this.#replica);
      if (id === undefined) return undefined;
      let workspace: Workspace;
      try {
        workspace = await this.#personalise(id, conversationId, options);
      } catch (err) {
        this.#o.logger?.warn({ id, err: (err as Error).message }, 'claimed workspace failed personalisation: destroyed');
        await this.#discard(id, undefined);
        continue;
      }
      const result = await this.records.commitClaim(this.name, workspace, conversationId, Date.now());
      if (result === 'ok') return { workspace, source: 'pool' };
      // Expired (the collector took it) or the conversation got another workspace meanwhile.
      await this.#discard(id, undefined);
      if (result !== 'expired') {
        const winner = await this.records.get(result);
        if (winner) return { workspace: winner.workspace, source: 'existing' };
      }
    }
    return undefined;
  }

  /** Rules pushed, labels set and the agent asked, all at once: one round trip's latency. */
  async #personalise(id: string, conversationId: string, options: AcquireOptions): Promise<Workspace> {
    const rules = [...(options.rules ?? []), ...domainRules(options.allowedDomains ?? [])];
    const [, workspace, healthy] = await Promise.all([
      this.backend.setRules(id, rules),
      this.backend.assign(id, conversationId, options.labels),
      this.backend.isHealthy(id, { checkAgent: true }),
    ]);
    if (!healthy) throw new WorkspaceError('WS_ERR_AGENT_NOT_READY', `claimed workspace ${id} is not healthy`);
    return workspace;
  }

  async #createFor(conversationId: string, options: AcquireOptions): Promise<AcquireResult> {
    const { rules, idleSeconds, ...create } = options;
    const workspace = await this.backend.create(conversationId, {
      ...create,
      ttlSeconds: create.ttlSeconds ?? this.#o.defaults?.ttlSeconds,
    });
    try {
      if (rules && rules.length > 0) await this.backend.setRules(workspace.id, rules);
      const result = await this.records.registerAssigned({ workspace, state: 'assigned', idleSeconds: idleSeconds ?? this.#o.defaults?.idleSeconds }, Date.now());
      if (result === 'ok') return { workspace, source: 'created' };
      // Another replica gave the conversation a workspace while this one was being made.
      await this.backend.destroy(workspace.id, { gracePeriodSeconds: 0 });
      const winner = await this.records.get(result);
      if (winner) return { workspace: winner.workspace, source: 'existing' };
      throw new WorkspaceError('WS_ERR_WORKSPACE_GONE', `conversation ${conversationId} lost its workspace while another was being made`);
    } catch (err) {
      await this.backend.destroy(workspace.id, { gracePeriodSeconds: 0 }).catch(() => {});
      throw err;
    }
  }

  /** Destroys a workspace the pool gave up on and forgets it. */
  async #discard(id: string, pool: string | undefined): Promise<void> {
    await this.records.doom(id, pool ?? this.name);
    try {
      await this.backend.destroy(id, { gracePeriodSeconds: 0 });
      await this.records.drop(id);
    } catch (err) {
      // The record stays doomed: the collector tries again.
      this.#o.logger?.warn({ id, err: (err as Error).message }, 'destroy failed; left to the collector');
    }
  }

  /** backend.exec plus the last-use time the idle expiry reads (written without delaying the answer). */
  async exec(id: string, cmd: string[], options?: ExecOptions): Promise<ExecResult> {
    this.records.touch(id, Date.now()).catch((err: unknown) => this.#o.logger?.warn({ id, err: (err as Error).message }, 'last-use time not recorded'));
    return this.backend.exec(id, cmd, options);
  }

  /** Ends a conversation's workspace now. */
  async release(conversationId: string): Promise<void> {
    const id = await this.records.conversation(conversationId);
    if (id === undefined) return;
    await this.#discard(id, undefined);
  }

  /** One replenishment round: creates workspaces (in parallel) while the pool is below min. */
  async replenish(): Promise<number> {
    this.#replenishing ??= this.#replenishRound().finally(() => { this.#replenishing = undefined; });
    return this.#replenishing;
  }

  async #replenishRound(): Promise<number> {
    const jobs: Promise<boolean>[] = [];
    for (;;) {
      const slot = `slot:${randomUUID()}`;
      if (!(await this.records.reserve(this.name, this.#o.min, this.#o.max, slot, Date.now() + this.#createTimeoutMs))) break;
      jobs.push(this.#fill(slot));
    }
    return (await Promise.all(jobs)).filter(Boolean).length;
  }

  async #fill(slot: string): Promise<boolean> {
    let workspace: Workspace;
    try {
      workspace = await this.backend.create(undefined, { ...this.#o.template, pool: this.name, timeoutMs: this.#createTimeoutMs });
    } catch (err) {
      this.#metrics.replenishFailures.inc({ pool: this.name });
      this.#o.logger?.warn({ err: (err as Error).message }, 'pool workspace not created');
      await this.records.redis.zrem(this.records.poolKey(this.name, 'warming'), slot);
      return false;
    }
    if (await this.records.ready(this.name, slot, workspace, Date.now())) return true;
    await this.backend.destroy(workspace.id, { gracePeriodSeconds: 0 }).catch(() => {});
    return false;
  }

  /** Replenishes now and every replenishIntervalMs. */
  start(): void {
    if (this.#timer) return;
    const tick = () => {
      this.replenish().catch((err: unknown) => this.#o.logger?.warn({ err: (err as Error).message }, 'replenish failed'));
    };
    tick();
    this.#timer = setInterval(tick, this.#o.replenishIntervalMs ?? 1_000);
    this.#timer.unref();
  }

  /** Stops the replenisher and waits for the round in progress. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#replenishing?.catch(() => {});
  }
}
