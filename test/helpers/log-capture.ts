// An in-memory pino destination: tests assert on the exact lines a program wrote.
import { Writable } from 'node:stream';

export interface LogCapture {
  destination: Writable & { write(chunk: string): boolean };
  /** Every line as written (after redaction). */
  text(): string;
  /** Every line parsed as JSON. */
  lines(): Record<string, unknown>[];
  /** Lines whose `msg` equals `msg`. */
  find(msg: string): Record<string, unknown>[];
  /**
   * Resolves with the first line whose `msg` equals `msg` (and that `match` accepts) once it has
   * been written: a line logged when a connection closes lands a moment after the client sees the close.
   */
  waitFor(msg: string, match?: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** Like waitFor, for `count` such lines; resolves with all of them. */
  waitForLines(msg: string, match: (line: Record<string, unknown>) => boolean, count: number): Promise<Record<string, unknown>[]>;
}

/** How long waitFor looks before it fails: far beyond any normal delay, short of the test timeout. */
const WAIT_MS = 10_000;

export function captureLogs(): LogCapture {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  }) as LogCapture['destination'];
  const text = () => chunks.join('');
  const lines = () => text().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const find = (msg: string) => lines().filter((l) => l.msg === msg);
  const waitForLines = async (msg: string, match: (line: Record<string, unknown>) => boolean, count: number) => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const found = find(msg).filter(match);
      if (found.length >= count) return found;
      if (Date.now() > deadline) throw new Error(`${found.length} of ${count} expected ${JSON.stringify(msg)} log lines after ${WAIT_MS} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const waitFor = async (msg: string, match: (line: Record<string, unknown>) => boolean = () => true) => (await waitForLines(msg, match, 1))[0]!;
  return { destination, text, lines, find, waitFor, waitForLines };
}
