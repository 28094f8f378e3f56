// The garbage collector, backend-agnostic: it knows workspaces only through the interface
// (list, destroy) and the records in Redis. Each sweep removes
//   expired  assigned workspaces past their TTL (from creation) or idle too long (since last exec),
//            pool workspaces ready for longer than readyMaxAgeSeconds (images and tokens age);
//   claims   claimed by a replica that did not commit in time (it died mid-claim);
//   doomed   workspaces whose destruction failed before (retried);
//   gone     records whose workspace the orchestrator no longer runs (evicted, node lost, exited);
//   orphans  workspaces of this owner that no record knows (a replica died between create and
//            record), once older than orphanGraceMs so a create in progress is never taken.
// Several replicas may run it: a Redis lease lets one sweep at a time.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import type { WorkspaceBackend } from './backend.ts';
import type { RecordStore } from './records.ts';

export type GcReason = 'ttl' | 'idle' | 'ready-age' | 'claim-expired' | 'doomed' | 'gone' | 'orphan';

export interface GcOptions {
  backend: WorkspaceBackend;
  records: RecordStore;
  /** Pools whose claiming and warming sets are checked. */
  pools: string[];
  /** Default idle expiry of records without their own. */
  idleSeconds?: number;
  readyMaxAgeSeconds?: number;
  /** Unrecorded workspaces younger than this are left alone (creates in progress). */
  orphanGraceMs?: number;
  intervalMs?: number;
  /** Longer than a sweep takes; renewed every sweep. */
  leaseMs?: number;
  metrics?: Registry;
  logger?: Logger;
  replica?: string;
}

export interface SweepResult {
  /** False when another replica holds the lease (nothing done). */
  leader: boolean;
  removed: { id: string; reason: GcReason }[];
  failed: { id: string; error: string }[];
}

export class GarbageCollector {
  readonly #o: GcOptions;
  readonly #replica: string;
  readonly #removed: Counter<'reason'>;
  #timer: NodeJS.Timeout | undefined;
  #sweeping: Promise<SweepResult> | undefined;

  constructor(options: GcOptions) {
    this.#o = options;
    this.#replica = options.replica ?? randomUUID();
    this.#removed = new Counter({
      name: 'workspace_gc_removed_total', help: 'Workspaces the collector removed, by reason.', labelNames: ['reason'],
      registers: options.metrics ? [options.metrics] : [],
    });
  }

  /** One sweep (when this replica holds or takes the lease). */
  sweep(now = Date.now()): Promise<SweepResult> {
    this.#sweeping ??= this.#sweep(now).finally(() => { this.#sweeping = undefined; });
    return this.#sweeping;
  }

  async #sweep(now: number): Promise<SweepResult> {
    const { backend, records } = this.#o;
    const result: SweepResult = { leader: false, removed: [], failed: [] };
    if (!(await records.takeLease(this.#replica, this.#o.leaseMs ?? 60_000))) return result;
    result.leader = true;
    const doomed = new Map<string, GcReason>();

    for (const pool of this.#o.pools) {
      for (const id of await records.doomExpired(pool, 'claiming', now)) doomed.set(id, 'claim-expired');
      if (this.#o.readyMaxAgeSeconds !== undefined) {
        for (const id of await records.doomExpired(pool, 'ready', now - this.#o.readyMaxAgeSeconds * 1000)) doomed.set(id, 'ready-age');
      }
      await records.dropExpiredSlots(pool, now);
    }

    // Records first, then the orchestrator's list: a record made after the list is never taken for gone.
    const ids = await records.ids();
    const recorded = new Map((await Promise.all(ids.map((id) => records.get(id)))).filter((r) => r !== undefined).map((r) => [r.id, r]));
    const live = new Map((await backend.list()).map((w) => [w.id, w]));

    for (const id of ids) {
      const r = recorded.get(id);
      if (!r) {
        await records.drop(id); // a half-written record
        continue;
      }
      if (doomed.has(id)) continue;
      const ws = live.get(id);
      if (r.state === 'doomed') doomed.set(id, 'doomed');
      else if (!ws || ws.status === 'stopped') doomed.set(id, 'gone');
      else if (r.state === 'assigned') {
        const idle = r.idleSeconds ?? this.#o.idleSeconds;
        if (r.ttlSeconds !== undefined && now >= r.createdAt + r.ttlSeconds * 1000) doomed.set(id, 'ttl');
        else if (idle !== undefined && now >= (r.lastUsedAt ?? r.createdAt) + idle * 1000) doomed.set(id, 'idle');
      }
    }
    const grace = this.#o.orphanGraceMs ?? 10 * 60_000;
    for (const [id, ws] of live) {
      if (!ids.includes(id) && now - ws.createdAt.getTime() >= grace) doomed.set(id, 'orphan');
    }

    await Promise.all([...doomed].map(async ([id, reason]) => {
      try {
        if (reason !== 'orphan') await records.doom(id, recorded.get(id)?.pool);
        // Also for `gone`: destroy is idempotent and clears what the orchestrator left (host state, proxy).
        await backend.destroy(id, { gracePeriodSeconds: 0 });
        await records.drop(id);
        this.#removed.inc({ reason });
        result.removed.push({ id, reason });
        this.#o.logger?.info({ id, reason }, 'workspace collected');
      } catch (err) {
        result.failed.push({ id, error: (err as Error).message });
        this.#o.logger?.warn({ id, reason, err: (err as Error).message }, 'workspace not collected; retried next sweep');
      }
    }));
    return result;
  }

  start(): void {
    if (this.#timer) return;
    const tick = () => {
      this.sweep().catch((err: unknown) => this.#o.logger?.warn({ err: (err as Error).message }, 'collector sweep failed'));
    };
    this.#timer = setInterval(tick, this.#o.intervalMs ?? 30_000);
    this.#timer.unref();
  }

  /** Stops sweeping, waits for the sweep in progress and hands the lease on. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#sweeping?.catch(() => {});
    await this.#o.records.releaseLease(this.#replica).catch(() => {});
  }
}
