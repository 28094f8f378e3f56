// Thin helpers for the programs' HTTP layers: one way to answer an error.
import type { ErrorRequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { errorBody, toWorkspaceSandboxError } from './errors.ts';

/** Sends `err` as `{error:{code,message}}` with its mapped status. */
export function sendError(res: Response, err: unknown): void {
  const e = toWorkspaceSandboxError(err);
  if (res.headersSent) {
    res.destroy(e);
    return;
  }
  res.status(e.status).json(errorBody(e));
}

/** Express error middleware: maps, logs server-side failures (never request bodies), answers. */
export function errorMiddleware(logger: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const e = toWorkspaceSandboxError(err);
    if (e.status >= 500) logger.error({ err, method: req.method, path: req.path, code: e.code }, 'request failed');
    sendError(res, e);
  };
}
