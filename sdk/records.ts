// The SDK's shared state in Redis: one record per workspace it manages, the warm pool's sets, and
// the conversation → workspace map. Every change that must not race another replica is one Lua
// script (Redis runs a script atomically), so no workspace is handed out twice and none is
// forgotten when a replica dies between two steps: each in-between state carries a deadline the
// collector acts on.
//
// Keys (all under `workspace-sandbox:{<owner>}:`, one hash slot per owner):
//   records                   SET of the ids of every record
//   ws:<id>                   HASH: state, pool, conversation, createdAt, readyAt, lastUsedAt, ttlSeconds, idleSeconds, ws (JSON)
//   conv:<conversationId>     STRING: the workspace id of the conversation
//   pool:<name>:ready         ZSET id → ready time (claims take the oldest)
//   pool:<name>:warming       ZSET slot → deadline (a replica creating a pool workspace)
//   pool:<name>:claiming      ZSET id → deadline (a replica personalising a claimed workspace)
//   gc-lease                  STRING: the replica running the collector (PX lease)
// States: ready → claiming → assigned; any → doomed (being destroyed; never handed out again).
import type { Redis } from 'ioredis';
import type { Workspace } from './backend.ts';

export type RecordState = 'ready' | 'claiming' | 'assigned' | 'doomed';

export interface WorkspaceRecord {
  id: string;
  state: RecordState;
  pool: string | undefined;
  conversationId: string | undefined;
  createdAt: number;
  readyAt: number | undefined;
  lastUsedAt: number | undefined;
  ttlSeconds: number | undefined;
  idleSeconds: number | undefined;
  workspace: Workspace;
}

// KEYS: ready, claiming. ARGV: deadline, replica, record key prefix.
const CLAIM = `
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then return false end
local id = popped[1]
redis.call('ZADD', KEYS[2], ARGV[1], id)
redis.call('HSET', ARGV[3] .. id, 'state', 'claiming', 'claimedBy', ARGV[2])
return id`;

// KEYS: claiming, record, conv. ARGV: id, conversation, now, workspace JSON.
// 'expired': the claim outlived its deadline (the collector owns the workspace now);
// another id: the conversation got a workspace from another replica meanwhile.
const COMMIT = `
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 'expired' end
local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[1] then
  redis.call('HSET', KEYS[2], 'state', 'doomed')
  return owner
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'assigned', 'conversation', ARGV[2], 'lastUsedAt', ARGV[3], 'ws', ARGV[4])
return 'ok'`;

// KEYS: record, conv, records. ARGV: id, then field/value pairs.
const REGISTER_ASSIGNED = `
local owner = redis.call('GET', KEYS[2])
if owner and owner ~= ARGV[1] then return owner end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 'ok'`;

// KEYS: ready, warming, claiming. ARGV: min, max, slot, deadline.
const RESERVE = `
local pooled = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if pooled >= tonumber(ARGV[1]) then return 0 end
if pooled + redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1`;

// KEYS: warming, ready, record, records. ARGV: slot, id, ready time, then field/value pairs.
const READY = `
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], unpack(ARGV, 4))
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1`;

// KEYS: a pool set (ready or claiming). ARGV: max score, record key prefix.
// Takes every member scored at or below ARGV[1] out of the set and dooms its record.
const DOOM_EXPIRED = `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', ARGV[2] .. id, 'state', 'doomed')
end
return ids`;

// KEYS: record, the pool's ready set. ARGV: id, conversation key prefix.
// Dooms a record whatever its state; the conversation map entry goes only if it still names this id.
const DOOM = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local conv = redis.call('HGET', KEYS[1], 'conversation')
if conv then
  local key = ARGV[2] .. conv
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'doomed')
return 1`;

// KEYS: record, records. ARGV: id.
const DROP = `
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1`;

// KEYS: lease. ARGV: holder, ms. Takes the lease when free, extends it when ours.
const LEASE = `
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`;

// KEYS: lease. ARGV: holder.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`;

function num(v: string | undefined): number | undefined {
  return v === undefined || v === '' ? undefined : Number(v);
}

/** The Workspace as stored (dates as numbers), and back. */
function encodeWorkspace(ws: Workspace): string {
  return JSON.stringify({ ...ws, createdAt: ws.createdAt.getTime(), readyAt: ws.readyAt?.getTime() });
}

function decodeWorkspace(text: string): Workspace {
  const raw = JSON.parse(text) as Omit<Workspace, 'createdAt' | 'readyAt'> & { createdAt: number; readyAt?: number };
  return { ...raw, createdAt: new Date(raw.createdAt), readyAt: raw.readyAt === undefined ? undefined : new Date(raw.readyAt) };
}

export interface RecordInput {
  workspace: Workspace;
  state: RecordState;
  pool?: string | undefined;
  idleSeconds?: number | undefined;
}

function fields(input: RecordInput, now: number): string[] {
  const ws = input.workspace;
  const f: Record<string, string> = {
    state: input.state,
    createdAt: String(ws.createdAt.getTime()),
    ws: encodeWorkspace(ws),
  };
  if (input.pool !== undefined) f.pool = input.pool;
  if (ws.conversationId !== undefined) f.conversation = ws.conversationId;
  if (ws.readyAt !== undefined) f.readyAt = String(ws.readyAt.getTime());
  if (ws.ttlSeconds !== undefined) f.ttlSeconds = String(ws.ttlSeconds);
  if (input.idleSeconds !== undefined) f.idleSeconds = String(input.idleSeconds);
  if (input.state === 'assigned') f.lastUsedAt = String(now);
  return Object.entries(f).flat();
}

export class RecordStore {
  readonly redis: Redis;
  readonly prefix: string;

  constructor(redis: Redis, owner: string) {
    this.redis = redis;
    this.prefix = `workspace-sandbox:{${owner}}:`;
  }

  record(id: string): string { return `${this.prefix}ws:${id}`; }
  conv(conversationId: string): string { return `${this.prefix}conv:${conversationId}`; }
  get records(): string { return `${this.prefix}records`; }
  get lease(): string { return `${this.prefix}gc-lease`; }
  poolKey(pool: string, set: 'ready' | 'warming' | 'claiming'): string { return `${this.prefix}pool:${pool}:${set}`; }

  async #run<T>(script: string, keys: string[], args: (string | number)[]): Promise<T> {
    return await this.redis.eval(script, keys.length, ...keys, ...args.map(String)) as T;
  }

  /** Takes the oldest ready workspace of `pool` into the claiming state; undefined when empty. */
  async claim(pool: string, deadline: number, replica: string): Promise<string | undefined> {
    const id = await this.#run<string | null>(CLAIM, [this.poolKey(pool, 'ready'), this.poolKey(pool, 'claiming')], [deadline, replica, `${this.prefix}ws:`]);
    return id ?? undefined;
  }

  /** 'ok', 'expired', or the id of the workspace another replica gave the conversation. */
  async commitClaim(pool: string, ws: Workspace, conversationId: string, now: number): Promise<string> {
    return this.#run<string>(COMMIT, [this.poolKey(pool, 'claiming'), this.record(ws.id), this.conv(conversationId)], [ws.id, conversationId, now, encodeWorkspace(ws)]);
  }

  /** Records a workspace created for a conversation: 'ok', or the id the conversation already has. */
  async registerAssigned(input: RecordInput, now: number): Promise<string> {
    const ws = input.workspace;
    return this.#run<string>(REGISTER_ASSIGNED, [this.record(ws.id), this.conv(ws.conversationId!), this.records], [ws.id, ...fields(input, now)]);
  }

  /** Reserves a slot for one more pool workspace when the pool is below min and the total below max. */
  async reserve(pool: string, min: number, max: number, slot: string, deadline: number): Promise<boolean> {
    const keys = (['ready', 'warming', 'claiming'] as const).map((s) => this.poolKey(pool, s));
    return (await this.#run<number>(RESERVE, keys, [min, max, slot, deadline])) === 1;
  }

  /** Turns a slot into a ready workspace; false when the slot expired (the caller destroys the workspace). */
  async ready(pool: string, slot: string, ws: Workspace, now: number): Promise<boolean> {
    const keys = [this.poolKey(pool, 'warming'), this.poolKey(pool, 'ready'), this.record(ws.id), this.records];
    return (await this.#run<number>(READY, keys, [slot, ws.id, now, ...fields({ workspace: ws, state: 'ready', pool }, now)])) === 1;
  }

  /** Takes members of a pool set scored at or below `maxScore` out and dooms their records. */
  async doomExpired(pool: string, set: 'ready' | 'claiming', maxScore: number): Promise<string[]> {
    return this.#run<string[]>(DOOM_EXPIRED, [this.poolKey(pool, set)], [maxScore, `${this.prefix}ws:`]);
  }

  /** Drops warming slots past their deadline (their replica died or gave up). */
  async dropExpiredSlots(pool: string, now: number): Promise<number> {
    return this.redis.zremrangebyscore(this.poolKey(pool, 'warming'), '-inf', now);
  }

  /** Marks a record doomed: out of the pool and the conversation map, never handed out again. */
  async doom(id: string, pool: string | undefined): Promise<boolean> {
    const ready = pool === undefined ? `${this.prefix}pool:-:ready` : this.poolKey(pool, 'ready');
    return (await this.#run<number>(DOOM, [this.record(id), ready], [id, `${this.prefix}conv:`])) === 1;
  }

  async drop(id: string): Promise<void> {
    await this.#run(DROP, [this.record(id), this.records], [id]);
  }

  async get(id: string): Promise<WorkspaceRecord | undefined> {
    const h = await this.redis.hgetall(this.record(id));
    if (!h.ws || !h.state) return undefined;
    return {
      id,
      state: h.state as RecordState,
      pool: h.pool,
      conversationId: h.conversation,
      createdAt: Number(h.createdAt),
      readyAt: num(h.readyAt),
      lastUsedAt: num(h.lastUsedAt),
      ttlSeconds: num(h.ttlSeconds),
      idleSeconds: num(h.idleSeconds),
      workspace: decodeWorkspace(h.ws),
    };
  }

  async ids(): Promise<string[]> {
    return this.redis.smembers(this.records);
  }

  async conversation(conversationId: string): Promise<string | undefined> {
    return (await this.redis.get(this.conv(conversationId))) ?? undefined;
  }

  /** Last use of an assigned workspace (idle expiry). */
  async touch(id: string, now: number): Promise<void> {
    await this.redis.hset(this.record(id), 'lastUsedAt', String(now));
  }

  async sizes(pool: string): Promise<{ ready: number; warming: number; claiming: number }> {
    const [ready, warming, claiming] = await Promise.all((['ready', 'warming', 'claiming'] as const).map((s) => this.redis.zcard(this.poolKey(pool, s))));
    return { ready: ready!, warming: warming!, claiming: claiming! };
  }

  async takeLease(holder: string, ms: number): Promise<boolean> {
    return (await this.#run<number>(LEASE, [this.lease], [holder, ms])) === 1;
  }

  async releaseLease(holder: string): Promise<void> {
    await this.#run(RELEASE, [this.lease], [holder]);
  }
}
