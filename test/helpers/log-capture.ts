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
}

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
  return { destination, text, lines, find: (msg) => lines().filter((l) => l.msg === msg) };
}
