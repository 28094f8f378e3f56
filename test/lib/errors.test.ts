import t from 'tap';
import { ERROR_STATUS, WorkspaceSandboxError, errorBody, httpStatusOf, toWorkspaceSandboxError } from '../../lib/errors.ts';

t.test('every code maps to an HTTP status and follows the naming rule', async (t) => {
  for (const [code, status] of Object.entries(ERROR_STATUS)) {
    t.match(code, /^WS_ERR_[A-Z_]+$/);
    t.ok(status >= 400 && status < 600, `${code} → ${status}`);
  }
});

t.test('typed errors carry code, status, details and cause', async (t) => {
  const cause = new Error('root');
  const e = new WorkspaceSandboxError('WS_ERR_PRECONDITION_FAILED', 'version mismatch', { details: { expected: '3' }, cause });
  t.equal(e.status, 412);
  t.equal(e.cause, cause);
  t.same(errorBody(e), { error: { code: 'WS_ERR_PRECONDITION_FAILED', message: 'version mismatch', details: { expected: '3' } } });
  t.same(errorBody(new WorkspaceSandboxError('WS_ERR_NOT_FOUND', 'no such rule')), { error: { code: 'WS_ERR_NOT_FOUND', message: 'no such rule' } });
});

t.test('foreign errors map onto stable codes', async (t) => {
  const parse = Object.assign(new Error('Unexpected token'), { type: 'entity.parse.failed', status: 400 });
  t.equal(toWorkspaceSandboxError(parse).code, 'WS_ERR_INVALID_JSON');
  const big = Object.assign(new Error('too large'), { type: 'entity.too.large', status: 413 });
  t.equal(toWorkspaceSandboxError(big).code, 'WS_ERR_PAYLOAD_TOO_LARGE');
  t.equal(toWorkspaceSandboxError(Object.assign(new Error('x'), { status: 415 })).code, 'WS_ERR_UNSUPPORTED_MEDIA_TYPE');
  t.equal(toWorkspaceSandboxError(Object.assign(new Error('x'), { statusCode: 404 })).code, 'WS_ERR_BAD_REQUEST');
  const internal = toWorkspaceSandboxError(new Error('secret internal detail'));
  t.equal(internal.code, 'WS_ERR_INTERNAL');
  t.equal(internal.message, 'internal error', 'internal details are not echoed to clients');
  t.equal(httpStatusOf('a string'), 500);
  t.equal(httpStatusOf({ status: 200 }), 500);
});
