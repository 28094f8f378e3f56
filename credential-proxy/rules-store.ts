// Where the /rules rule set of this pod lives: in the sidecar's memory, persisted (when
// RULES_STATE_DIR is set) to a file on a sidecar-only memory-backed volume so that a restarted
// sidecar comes back with the rules it had acknowledged (rules-state-file.ts). rules-store-redis.ts
// adds rule sets the backend publishes, signed, through Redis.
//
// Versions: one sequence per pod, strictly increasing, never reused. A write answers only after
// the new set is what this proxy enforces (and is on the state volume), so a 200 means "enforced
// now". A set delivered from elsewhere (Redis) is applied only when its version is higher than
// the one enforced: nothing can roll the pod back to an older set.
import { EventEmitter } from 'node:events';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import type { RuleSpec } from './rules.ts';
import type { RuleStateFile } from './rules-state-file.ts';

export interface RuleSetSnapshot {
  readonly version: number;
  readonly rules: readonly RuleSpec[];
}

export interface StoreStatus {
  readonly kind: 'memory' | 'redis';
  /** Reachable now (always true for memory). */
  readonly up: boolean;
  /** The scope's rule set has been read from the store at least once. */
  readonly synced: boolean;
  readonly scope: string;
  /** Where the rule set survives a sidecar restart (RULES_STATE_DIR), if anywhere. */
  readonly stateFile?: string;
  readonly lastError?: string;
  readonly lastSyncAt?: string;
}

export interface WriteResult {
  readonly before: RuleSetSnapshot;
  readonly after: RuleSetSnapshot;
}

/**
 * `mutate` gets the current rules and returns the new list, or throws (validation, 404, 409).
 * It runs once, synchronously, against the set the proxy enforces.
 */
export type Mutation = (current: readonly RuleSpec[]) => RuleSpec[];

export interface RulesStoreEvents {
  /** The scope's or the global rule set changed. */
  change: [];
  /** Reachability changed. */
  status: [];
  /** A remote store was read (the first one ends start()). */
  synced: [];
}

export interface RulesStore extends EventEmitter<RulesStoreEvents> {
  readonly kind: 'memory' | 'redis';
  /** First load. Never rejects for an unreachable store: it keeps retrying in the background. */
  start(): Promise<void>;
  /** This pod's rule set (the /rules API's). */
  scoped(): RuleSetSnapshot;
  /** The optional global default set (read-only here). */
  global(): RuleSetSnapshot;
  /** Throws 412 when `ifMatch` is given and is not the current version, 503 when the set cannot be kept. */
  write(mutate: Mutation, ifMatch?: number): Promise<WriteResult>;
  status(): StoreStatus;
  close(): Promise<void>;
}

export function preconditionFailed(ifMatch: number, current: number): WorkspaceSandboxError {
  return new WorkspaceSandboxError('WS_ERR_PRECONDITION_FAILED', `If-Match ${ifMatch} does not match the current rules version ${current}; GET /rules and retry`, { details: { currentVersion: current } });
}

export const EMPTY: RuleSetSnapshot = Object.freeze({ version: 0, rules: Object.freeze([]) });

export function freezeSnapshot(version: number, rules: readonly RuleSpec[]): RuleSetSnapshot {
  return Object.freeze({ version, rules: Object.freeze([...rules]) });
}

export interface MemoryRulesStoreOptions {
  /** Persists every accepted set; loaded by start(). */
  stateFile?: RuleStateFile;
}

export class MemoryRulesStore extends EventEmitter<RulesStoreEvents> implements RulesStore {
  readonly kind: 'memory' | 'redis' = 'memory';
  readonly #scope: string;
  readonly #stateFile: RuleStateFile | undefined;
  #snapshot: RuleSetSnapshot = EMPTY;
  #global: RuleSetSnapshot = EMPTY;

  constructor(scope = 'local', options: MemoryRulesStoreOptions = {}) {
    super();
    this.#scope = scope;
    this.#stateFile = options.stateFile;
  }

  async start(): Promise<void> {
    const saved = this.#stateFile?.load();
    if (saved) {
      this.#snapshot = saved.scoped;
      this.#global = saved.global;
      this.emit('change');
    }
  }

  get scope(): string {
    return this.#scope;
  }

  scoped(): RuleSetSnapshot {
    return this.#snapshot;
  }

  global(): RuleSetSnapshot {
    return this.#global;
  }

  async write(mutate: Mutation, ifMatch?: number): Promise<WriteResult> {
    // Synchronous from here to the end: no other write can interleave, so no write is lost and
    // no version is handed out twice.
    const before = this.#snapshot;
    if (ifMatch !== undefined && ifMatch !== before.version) throw preconditionFailed(ifMatch, before.version);
    const after = freezeSnapshot(before.version + 1, mutate(before.rules));
    this.#commit(after, this.#global);
    return { before, after };
  }

  /**
   * Applies a set delivered from elsewhere (a signed set from Redis) when it is newer than the one
   * enforced; returns whether it was applied. Never throws for a stale set.
   */
  offerScoped(snapshot: RuleSetSnapshot): boolean {
    if (snapshot.version <= this.#snapshot.version) return false;
    this.#commit(snapshot, this.#global);
    return true;
  }

  /** The same for the global set. */
  offerGlobal(snapshot: RuleSetSnapshot): boolean {
    if (snapshot.version <= this.#global.version) return false;
    this.#commit(this.#snapshot, snapshot);
    return true;
  }

  #commit(scoped: RuleSetSnapshot, global: RuleSetSnapshot): void {
    // On the state volume first: a set that cannot survive a restart is not acknowledged (503).
    this.#stateFile?.save({ scoped, global });
    this.#snapshot = scoped;
    this.#global = global;
    this.emit('change');
  }

  status(): StoreStatus {
    return { kind: 'memory', up: true, synced: true, scope: this.#scope, ...(this.#stateFile ? { stateFile: this.#stateFile.path } : {}) };
  }

  async close(): Promise<void> {}
}
