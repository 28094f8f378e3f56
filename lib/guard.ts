// Nothing a client sends may end a program. Every connection and request handler runs inside a
// guard: an error it did not expect (a bug, by definition) is logged with a stable code, counted,
// and answered (500) or its socket closed, while the process keeps serving everyone else. The
// process-level safety net catches what escapes a handler through an event callback; it keeps the
// process up too, but never silently: each catch is an error line and a counter step, so a bug
// shows on the dashboards instead of as restarts.
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { Counter, Registry } from 'prom-client';

/** The `code` field of every line logged for an unexpected error (a handler's or the process's). */
export const UNEXPECTED_ERROR_CODE = 'WS_ERR_INTERNAL';
export const UNEXPECTED_ERROR_MSG = 'unexpected error in a handler';
export const UNCAUGHT_ERROR_MSG = 'uncaught error reached the process';
export const UNEXPECTED_ERRORS_METRIC = 'unexpected_errors_total';
export const UNCAUGHT_ERRORS_METRIC = 'uncaught_errors_total';

export interface Guard {
  /** Logs and counts an unexpected error caught at `where` (a stable handler name). */
  report(where: string, err: unknown, fields?: Record<string, unknown>): void;
  /**
   * Runs `fn`; a throw or a rejection of the promise it returns is reported, then `recover` runs
   * (answer 500, close the socket). A throw from `recover` itself is reported and dropped.
   */
  run(where: string, fn: () => unknown, recover: (err: unknown) => void): void;
  /** `run` as a listener: `server.on('request', guard.wrap('x.request', handle, recover))`. */
  wrap<A extends unknown[]>(where: string, fn: (...args: A) => unknown, recover: (err: unknown, ...args: A) => void): (...args: A) => void;
}

function counter(registry: Registry, name: string, help: string, labelNames: string[]): Counter<string> {
  // One counter per registry however many guards a program builds (the proxy and its interceptor).
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<string>;
  return new Counter({ name, help, labelNames, registers: [registry] });
}

export function createGuard(options: { logger: Logger; registry?: Registry | undefined }): Guard {
  const { logger } = options;
  const errors = counter(options.registry ?? new Registry(), UNEXPECTED_ERRORS_METRIC,
    'Unexpected errors caught by a handler guard (each is a bug: the request got 500 or its connection was closed)', ['where']);
  const report = (where: string, err: unknown, fields: Record<string, unknown> = {}) => {
    errors.inc({ where });
    try {
      logger.error({ ...fields, err, where, code: UNEXPECTED_ERROR_CODE }, UNEXPECTED_ERROR_MSG);
    } catch {
      // A logger that throws (an unserialisable field) must not turn a handled error into a crash.
    }
  };
  const recovered = (where: string, recover: (err: unknown) => void, err: unknown) => {
    report(where, err);
    try {
      recover(err);
    } catch (again) {
      report(`${where}.recover`, again);
    }
  };
  const run = (where: string, fn: () => unknown, recover: (err: unknown) => void) => {
    let result: unknown;
    try {
      result = fn();
    } catch (err) {
      recovered(where, recover, err);
      return;
    }
    if (result instanceof Promise) result.catch((err: unknown) => recovered(where, recover, err));
  };
  return {
    report,
    run,
    wrap: (where, fn, recover) => (...args) => run(where, () => fn(...args), (err) => recover(err, ...args)),
  };
}

/** A failed request handler's answer: 500 with `body` if nothing was sent yet, else the connection is cut. */
export function answerInternalError(res: ServerResponse, contentType: string, body: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(500, { 'content-type': contentType, connection: 'close' }).end(body);
}

/**
 * Last line of defence for errors thrown from event callbacks outside any handler's stack. The
 * process keeps running (one client's bug must not drop every other tunnel), and every catch is
 * logged with the stable code and counted by kind. Returns the function that removes the net.
 */
export function installProcessSafetyNet(options: { logger: Logger; registry?: Registry | undefined; target?: NodeJS.Process }): () => void {
  const target = options.target ?? process;
  const uncaught = counter(options.registry ?? new Registry(), UNCAUGHT_ERRORS_METRIC,
    'Errors that escaped every handler guard and reached the process (uncaught exceptions, unhandled rejections); each is a bug', ['kind']);
  const onException = (err: unknown) => {
    uncaught.inc({ kind: 'exception' });
    options.logger.error({ err, kind: 'exception', code: UNEXPECTED_ERROR_CODE }, UNCAUGHT_ERROR_MSG);
  };
  const onRejection = (err: unknown) => {
    uncaught.inc({ kind: 'rejection' });
    options.logger.error({ err, kind: 'rejection', code: UNEXPECTED_ERROR_CODE }, UNCAUGHT_ERROR_MSG);
  };
  target.on('uncaughtException', onException);
  target.on('unhandledRejection', onRejection);
  return () => {
    target.off('uncaughtException', onException);
    target.off('unhandledRejection', onRejection);
  };
}
