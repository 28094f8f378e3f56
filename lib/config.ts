// Config loading shared by every program: env (and an optional YAML/JSON file) parsed once by a
// zod schema into one frozen object. Every problem is reported at once, with field, value and why,
// so an operator fixes a bad Deployment in one round trip instead of one error per restart.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';
import { z } from 'zod';
import { WorkspaceSandboxError } from './errors.ts';

export interface ConfigProblem {
  field: string;
  value: unknown;
  message: string;
}

export class ConfigError extends WorkspaceSandboxError {
  readonly problems: readonly ConfigProblem[];

  constructor(source: string, problems: ConfigProblem[]) {
    const lines = problems.map((p) => `  - ${p.field}: ${p.message} (got ${describeValue(p.value)})`);
    super('WS_ERR_CONFIG_INVALID', `invalid ${source}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${lines.join('\n')}`, { details: problems });
    this.name = 'ConfigError';
    this.problems = Object.freeze(problems);
  }
}

const MAX_SHOWN = 80;

function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let cur = input;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[key];
  }
  return cur;
}

export function fieldName(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(root)';
  return path.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`)).join('');
}

/** Turns zod issues into problems; the value shown is the one the user gave. */
export function problemsFromZod(error: z.ZodError, input: unknown): ConfigProblem[] {
  return error.issues.map((issue) => ({
    field: fieldName(issue.path),
    value: valueAt(input, issue.path),
    message: issue.message,
  }));
}

/** Parses `input` with `schema`; throws one ConfigError listing every problem. The result is deep-frozen. */
export function parseConfig<S extends z.ZodType>(schema: S, input: unknown, source = 'configuration'): DeepReadonly<z.output<S>> {
  const result = schema.safeParse(input);
  if (!result.success) throw new ConfigError(source, problemsFromZod(result.error, input));
  return deepFreeze(result.data) as DeepReadonly<z.output<S>>;
}

// yaml is loaded (synchronously, its CommonJS build) on the first YAML text parsed: a program
// started without a YAML config file does not pay for it (bundled: ~1 MiB resident, tens of ms).
let yaml: typeof Yaml | undefined;
export function parseYaml(text: string, options: Yaml.ParseOptions & Yaml.DocumentOptions): unknown {
  yaml ??= createRequire(import.meta.url)('yaml') as typeof Yaml;
  return yaml.parse(text, options);
}

/** Reads a YAML (or JSON, a YAML subset) file; unreadable or unparsable files are config errors. */
export function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`config file ${path}`, [{ field: '(file)', value: path, message: `cannot read: ${(err as Error).message}` }]);
  }
  // A JSON file (JSON is a YAML subset) is read without loading yaml; anything else, or JSON that
  // does not parse, goes to the YAML parser, whose message names the problem. (A key given twice in
  // JSON keeps its last value, as every JSON reader does; YAML files refuse it.)
  if (/^\s*[[{]/.test(text)) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // reported by the YAML parser below
    }
  }
  try {
    return parseYaml(text, { prettyErrors: true, uniqueKeys: true }) ?? {};
  } catch (err) {
    throw new ConfigError(`config file ${path}`, [{ field: '(file)', value: path, message: `not valid YAML: ${(err as Error).message.split('\n')[0]}` }]);
  }
}

export type DeepReadonly<T> = T extends (...args: never[]) => unknown
  ? T
  : T extends readonly (infer U)[]
    ? readonly DeepReadonly<U>[]
    : T extends object
      ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
      : T;

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/**
 * The variables a schema names, taken from an environment. Empty values count as unset, so a
 * Deployment can blank a variable without it turning into port 0 or `false`.
 */
export function pickEnv(schema: z.ZodObject, source: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of Object.keys(schema.shape)) {
    const value = source[name];
    if (value !== undefined && value.trim() !== '') out[name] = value;
  }
  return out;
}

// Env-var field builders: env values are strings, coerced and checked with a message a person can act on.
export const env = {
  string: () => z.string(),
  port: () => z.coerce.number({ message: 'must be a port number' })
    .int('must be a whole number').min(0, 'must be 0-65535').max(65535, 'must be 0-65535'),
  int: (min: number, max: number) => z.coerce.number({ message: 'must be a number' })
    .int('must be a whole number').min(min, `must be >= ${min}`).max(max, `must be <= ${max}`),
  bool: () => z.enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'must be true or false' })
    .transform((v) => v === 'true' || v === '1' || v === 'yes'),
  list: () => z.string().transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean)),
  logLevel: () => z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
    message: 'must be one of fatal, error, warn, info, debug, trace, silent',
  }),
};
