// The SDK's typed errors. A caller branches on `code` (stable, part of the contract), never on the
// message. One code per failure a backend must handle differently: retry later (quota,
// unschedulable), fix the request (admission, invalid options), start over (evicted, gone), wait
// (agent not ready). The HTTP status of each code (for a backend's own API, see
// examples/backend/) comes from this one table.
import { CodedError } from '../lib/errors.ts';

export const WORKSPACE_ERROR_STATUS = Object.freeze({
  /** The admission webhook (or a policy) refused the Pod; `details.message` is its message. */
  WS_ERR_ADMISSION_DENIED: 422,
  /** A ResourceQuota or LimitRange refused the Pod: retry later or ask for less. */
  WS_ERR_QUOTA_EXCEEDED: 429,
  /** No node could take the Pod before the timeout (capacity, taints, selectors). */
  WS_ERR_UNSCHEDULABLE: 503,
  /** The image could not be pulled (or found) before the timeout. */
  WS_ERR_IMAGE_PULL_FAILED: 502,
  /** The workspace was evicted or preempted (spot interruption, node pressure): create a new one. */
  WS_ERR_EVICTED: 410,
  /** The agent did not answer /health in time. */
  WS_ERR_AGENT_NOT_READY: 503,
  /** The workspace does not exist (any more). */
  WS_ERR_WORKSPACE_GONE: 404,
  /** The workspace ended (its container or Pod failed or exited) before it was ready. */
  WS_ERR_WORKSPACE_FAILED: 502,
  /** Options the backend refuses (limits above the allowed ones, a bad label, a bad rule). */
  WS_ERR_INVALID_OPTIONS: 400,
  /** The orchestrator (Docker engine, Kubernetes API) could not be reached or failed. */
  WS_ERR_BACKEND_UNAVAILABLE: 503,
  /** The agent or the proxy answered with an error of its own; `details` carries its code. */
  WS_ERR_AGENT_ERROR: 502,
  WS_ERR_RULES_ERROR: 502,
} as const);

export type WorkspaceErrorCode = keyof typeof WORKSPACE_ERROR_STATUS;

export class WorkspaceError extends CodedError<WorkspaceErrorCode> {
  override name = 'WorkspaceError';

  get status(): number {
    return WORKSPACE_ERROR_STATUS[this.code];
  }
}

export function isWorkspaceError(err: unknown, code?: WorkspaceErrorCode): err is WorkspaceError {
  return err instanceof WorkspaceError && (code === undefined || err.code === code);
}
