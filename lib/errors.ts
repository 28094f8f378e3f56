// Typed errors with stable codes. The code is the contract (clients and tests match on it);
// the message is for a person. HTTP status comes from this one table, nowhere else.

export const ERROR_STATUS = Object.freeze({
  WS_ERR_CONFIG_INVALID: 500,
  WS_ERR_BAD_REQUEST: 400,
  WS_ERR_INVALID_JSON: 400,
  WS_ERR_VALIDATION: 400,
  WS_ERR_UNAUTHORIZED: 401,
  WS_ERR_FORBIDDEN: 403,
  WS_ERR_NOT_FOUND: 404,
  WS_ERR_METHOD_NOT_ALLOWED: 405,
  WS_ERR_CONFLICT: 409,
  WS_ERR_PRECONDITION_FAILED: 412,
  WS_ERR_PAYLOAD_TOO_LARGE: 413,
  WS_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  WS_ERR_MISDIRECTED_REQUEST: 421,
  WS_ERR_HEADERS_TOO_LARGE: 431,
  WS_ERR_TOO_MANY_REQUESTS: 429,
  WS_ERR_INTERNAL: 500,
  WS_ERR_BAD_GATEWAY: 502,
  WS_ERR_UNAVAILABLE: 503,
  WS_ERR_GATEWAY_TIMEOUT: 504,
  WS_ERR_TLS: 500,
  WS_ERR_USAGE: 400,
  // agent: a path that leaves the workspace root, a command that cannot start, a malformed tar upload
  WS_ERR_PATH_ESCAPE: 400,
  WS_ERR_SPAWN_FAILED: 400,
  WS_ERR_INVALID_TAR: 400,
} as const);

export type ErrorCode = keyof typeof ERROR_STATUS;

/** An error with a stable code and optional details; each family's table gives the HTTP status. */
export abstract class CodedError<Code extends string> extends Error {
  readonly code: Code;
  readonly details: unknown;

  constructor(code: Code, message: string, options: { details?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details;
  }

  abstract get status(): number;
}

export class WorkspaceSandboxError extends CodedError<ErrorCode> {
  override name = 'WorkspaceSandboxError';

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

export function isWorkspaceSandboxError(err: unknown): err is WorkspaceSandboxError {
  return err instanceof WorkspaceSandboxError;
}

/** Status for any thrown value: ours by table, body-parser style errors by their own status, else 500. */
export function httpStatusOf(err: unknown): number {
  if (err instanceof WorkspaceSandboxError) return err.status;
  const status = (err as { status?: unknown; statusCode?: unknown } | null)?.status
    ?? (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === 'number' && status >= 400 && status < 600 ? status : 500;
}

/** Maps a foreign error (body-parser, node:http) onto a stable code. */
export function toWorkspaceSandboxError(err: unknown): WorkspaceSandboxError {
  if (err instanceof WorkspaceSandboxError) return err;
  const type = (err as { type?: unknown } | null)?.type;
  const status = httpStatusOf(err);
  if (type === 'entity.parse.failed') return new WorkspaceSandboxError('WS_ERR_INVALID_JSON', `request body is not valid JSON: ${(err as Error).message}`, { cause: err });
  if (type === 'entity.too.large' || status === 413) return new WorkspaceSandboxError('WS_ERR_PAYLOAD_TOO_LARGE', 'request body exceeds the size limit', { cause: err });
  if (status === 415) return new WorkspaceSandboxError('WS_ERR_UNSUPPORTED_MEDIA_TYPE', (err as Error).message, { cause: err });
  if (status >= 400 && status < 500) return new WorkspaceSandboxError('WS_ERR_BAD_REQUEST', (err as Error)?.message ?? 'bad request', { cause: err });
  return new WorkspaceSandboxError('WS_ERR_INTERNAL', 'internal error', { cause: err });
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}

export function errorBody(err: WorkspaceSandboxError): ErrorBody {
  return { error: err.details === undefined
    ? { code: err.code, message: err.message }
    : { code: err.code, message: err.message, details: err.details } };
}
