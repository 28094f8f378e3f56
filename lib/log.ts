// pino factory shared by every program. Two layers keep secrets out of logs:
//  1. `redact` removes credential headers wherever a request/response object is logged;
//  2. a final pass over each serialized line replaces every registered secret *value*, so a
//     token that slips into a message, an error or an unexpected field is still never written.
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';
import { SECRET_HEADERS } from './constants.ts';

export type { Logger } from 'pino';

export const REDACTED = '[REDACTED]';

export interface LoggerOptions {
  name: string;
  level?: LevelWithSilent;
  /** Secret values known at start (tokens, keys); more can be added later with `secrets.add`. */
  secrets?: Iterable<string>;
  /** Where lines go; tests pass a capture stream. Default: stdout, synchronously. */
  destination?: DestinationStream;
  base?: Record<string, unknown>;
}

/** Secret values registered with a logger; shared by its children. */
export class SecretSet {
  #values = new Set<string>();
  #patterns: string[] = [];

  /** Values shorter than 4 characters are ignored: replacing them would mangle ordinary text. */
  add(value: string | undefined | null): void {
    if (!value || value.length < 4 || this.#values.has(value)) return;
    this.#values.add(value);
    // A secret may appear raw or JSON-escaped in a serialized line; longest first so a secret
    // containing another is replaced whole.
    const escaped = JSON.stringify(value).slice(1, -1);
    this.#patterns = [...new Set([...this.#patterns, value, escaped])].sort((a, b) => b.length - a.length);
  }

  get size(): number {
    return this.#values.size;
  }

  scrub(line: string): string {
    let out = line;
    for (const p of this.#patterns) if (out.includes(p)) out = out.split(p).join(REDACTED);
    return out;
  }
}

function redactPaths(): string[] {
  const paths: string[] = [];
  for (const h of SECRET_HEADERS) {
    const key = `["${h}"]`;
    for (const parent of ['headers', 'req.headers', 'res.headers', 'request.headers', 'response.headers', 'upstream.headers']) {
      paths.push(`${parent}${key}`);
    }
    paths.push(`*${key}`);
  }
  return paths;
}

export interface AppLogger extends Logger {
  readonly secrets: SecretSet;
}

export function createLogger(options: LoggerOptions): AppLogger {
  const secrets = new SecretSet();
  for (const s of options.secrets ?? []) secrets.add(s);
  const logger = pino(
    {
      name: options.name,
      level: options.level ?? 'info',
      base: { pid: process.pid, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: redactPaths(), censor: REDACTED },
      formatters: { level: (label) => ({ level: label }) },
      hooks: { streamWrite: (line) => (secrets.size === 0 ? line : secrets.scrub(line)) },
    },
    options.destination ?? pino.destination({ dest: 1, sync: true }),
  );
  return Object.assign(logger, { secrets }) as AppLogger;
}
