// The rule sets this sidecar enforces, kept in RULES_STATE_DIR so that a restarted sidecar (OOM,
// crash, kubelet restart of the native sidecar) comes back with exactly what it had acknowledged,
// at the same version, instead of an empty set (the workspace loses its egress) or, with Redis, an
// older one. The directory is a memory-backed emptyDir mounted into the sidecar alone: it lives as
// long as the Pod, is never on a node's disk, and the workspace container cannot read or write it.
//
// Writes are atomic (temporary file, fsync, rename): a crash mid-write leaves the old file. A file
// of another scope (another pod's) is refused, as is one that does not parse: the sidecar does not
// start rather than start with a version it might hand out again. Rules this sidecar no longer
// accepts (its CREDENTIALS_FILE changed before the restart) are dropped, loudly, keeping their
// version, so egress fails closed and the next write still gets a new version.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from 'pino';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { ruleListSchema, type RuleSpec } from './rules.ts';
import { freezeSnapshot, type RuleSetSnapshot } from './rules-store.ts';

export const RULES_STATE_FILE = 'rules.json';

const snapshotSchema = z.object({ version: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), rules: z.array(z.unknown()) }).strict();
const stateSchema = z.object({ format: z.literal(1), scope: z.string(), scoped: snapshotSchema, global: snapshotSchema, savedAt: z.string() }).strict();

export interface SavedRuleState {
  readonly scoped: RuleSetSnapshot;
  readonly global: RuleSetSnapshot;
}

/** Checks (and may reject) saved rules as the store checks delivered ones; default: schema only. */
export type RuleListValidator = (rules: unknown, source: string) => RuleSpec[];

const schemaOnly: RuleListValidator = (rules, source) => {
  const parsed = ruleListSchema.safeParse(rules);
  if (!parsed.success) throw new Error(`${source}: ${parsed.error.issues.length} invalid rules`);
  return parsed.data;
};

export class RuleStateFile {
  readonly path: string;
  readonly #dir: string;
  readonly #scope: string;
  readonly #validate: RuleListValidator;
  readonly #logger: Logger | undefined;

  constructor(dir: string, scope: string, validate: RuleListValidator = schemaOnly, logger?: Logger) {
    this.#dir = dir;
    this.path = join(dir, RULES_STATE_FILE);
    this.#scope = scope;
    this.#validate = validate;
    this.#logger = logger;
  }

  /** The saved state, or undefined when there is none yet (a new Pod). */
  load(): SavedRuleState | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw this.#error(`cannot be read: ${(err as Error).message}`, err);
    }
    let doc: z.output<typeof stateSchema>;
    try {
      doc = stateSchema.parse(JSON.parse(text));
    } catch (err) {
      throw this.#error('is not a saved rule state', err);
    }
    if (doc.scope !== this.#scope) throw this.#error(`belongs to scope ${JSON.stringify(doc.scope)}, not this pod's ${JSON.stringify(this.#scope)}`);
    const accepted = (rules: unknown[], which: string, version: number): RuleSpec[] => {
      try {
        return this.#validate(rules, `${this.path} (${which})`);
      } catch (err) {
        this.#logger?.error({ stateFile: this.path, set: which, version, err: (err as Error).message }, 'saved rule set no longer accepted by this sidecar; dropped (its hosts are denied) until the next write');
        return [];
      }
    };
    return {
      scoped: freezeSnapshot(doc.scoped.version, accepted(doc.scoped.rules, 'scoped', doc.scoped.version)),
      global: freezeSnapshot(doc.global.version, accepted(doc.global.rules, 'global', doc.global.version)),
    };
  }

  /** Atomically replaces the saved state; throws 503 (the change is then not applied). */
  save(state: SavedRuleState): void {
    const text = JSON.stringify({ format: 1, scope: this.#scope, scoped: state.scoped, global: state.global, savedAt: new Date().toISOString() });
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
    } catch (err) {
      throw new WorkspaceSandboxError('WS_ERR_UNAVAILABLE', `the rule set could not be saved to ${this.path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): the change was NOT applied`, { cause: err });
    }
  }

  #error(what: string, cause?: unknown): WorkspaceSandboxError {
    return new WorkspaceSandboxError('WS_ERR_CONFIG_INVALID', `RULES_STATE_DIR: ${this.path} ${what}; remove it to start this pod with an empty rule set`, cause === undefined ? {} : { cause });
  }
}
