// Where the /rules rule set of this pod lives. The memory store is the default (one sidecar, no
// sharing); rules-store-redis.ts shares rule sets between replicas and across sidecar restarts.
// Both keep the same contract: monotonic versions, optimistic concurrency, change events.
import { EventEmitter } from 'node:events';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import type { Rule } from './rules.ts';

export interface RuleSetSnapshot {
  readonly version: number;
  readonly rules: readonly Rule[];
}

export interface StoreStatus {
  readonly kind: 'memory' | 'redis';
  /** Reachable now (always true for memory). */
  readonly up: boolean;
  /** The scope's rule set has been read from the store at least once. */
  readonly synced: boolean;
  readonly scope: string;
  readonly lastError?: string;
  readonly lastSyncAt?: string;
}

export interface WriteResult {
  readonly before: RuleSetSnapshot;
  readonly after: RuleSetSnapshot;
}

/**
 * `mutate` gets the current rules (as the store holds them now) and returns the new list, or
 * throws (validation, 404, 409). It may run more than once when a concurrent writer wins a race.
 */
export type Mutation = (current: readonly Rule[]) => Rule[];

export interface RulesStoreEvents {
  /** The scope's or the global rule set changed. */
  change: [];
  /** Reachability changed. */
  status: [];
}

export interface RulesStore extends EventEmitter<RulesStoreEvents> {
  readonly kind: 'memory' | 'redis';
  /** First load. Never rejects for an unreachable store: it keeps retrying in the background. */
  start(): Promise<void>;
  /** This pod's rule set (the /rules API's). */
  scoped(): RuleSetSnapshot;
  /** The optional global default set (read-only here). */
  global(): RuleSetSnapshot;
  /** Throws 412 when `ifMatch` is given and is not the current version, 503 when the store is down. */
  write(mutate: Mutation, ifMatch?: number): Promise<WriteResult>;
  status(): StoreStatus;
  close(): Promise<void>;
}

export function preconditionFailed(ifMatch: number, current: number): WorkspaceSandboxError {
  return new WorkspaceSandboxError('WS_ERR_PRECONDITION_FAILED', `If-Match ${ifMatch} does not match the current rules version ${current}; GET /rules and retry`, { details: { currentVersion: current } });
}

export const EMPTY: RuleSetSnapshot = Object.freeze({ version: 0, rules: Object.freeze([]) });

export class MemoryRulesStore extends EventEmitter<RulesStoreEvents> implements RulesStore {
  readonly kind = 'memory' as const;
  readonly #scope: string;
  #snapshot: RuleSetSnapshot = EMPTY;

  constructor(scope = 'local') {
    super();
    this.#scope = scope;
  }

  async start(): Promise<void> {}

  scoped(): RuleSetSnapshot {
    return this.#snapshot;
  }

  global(): RuleSetSnapshot {
    return EMPTY;
  }

  async write(mutate: Mutation, ifMatch?: number): Promise<WriteResult> {
    const before = this.#snapshot;
    if (ifMatch !== undefined && ifMatch !== before.version) throw preconditionFailed(ifMatch, before.version);
    const rules = mutate(before.rules);
    const after = Object.freeze({ version: before.version + 1, rules: Object.freeze([...rules]) });
    this.#snapshot = after;
    this.emit('change');
    return { before, after };
  }

  status(): StoreStatus {
    return { kind: 'memory', up: true, synced: true, scope: this.#scope };
  }

  async close(): Promise<void> {}
}
