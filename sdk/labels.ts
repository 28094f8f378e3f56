// The labels a workspace carries, the same on both backends: who owns it (list and GC see only
// their own), its conversation, its warm pool, and the caller's. Caller labels cannot use our
// prefix, so nobody can make a workspace look like another backend's or another conversation's.
import { LABEL_CONVERSATION, LABEL_OWNER, LABEL_POOL, PREFIX } from '../lib/constants.ts';
import { WorkspaceError } from './errors.ts';

const NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const PREFIXED = /^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/;

export interface LabelInput {
  owner: string;
  conversationId: string | undefined;
  pool: string | undefined;
  labels: Record<string, string> | undefined;
}

/** Checks caller labels (Kubernetes label syntax, our prefix reserved). */
export function checkCallerLabels(labels: Record<string, string> | undefined): void {
  const problems: string[] = [];
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (k.startsWith(PREFIX)) problems.push(`${k}: the ${PREFIX} prefix is reserved`);
    else if (!PREFIXED.test(k)) problems.push(`${JSON.stringify(k)} is not a label name`);
    if (typeof v !== 'string' || !VALUE.test(v)) problems.push(`${k}=${JSON.stringify(v)} is not a label value (63 letters, digits, ".", "_", "-")`);
  }
  if (problems.length > 0) throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', `labels refused: ${problems.join('; ')}`, { details: problems });
}

export function workspaceLabels(input: LabelInput): Record<string, string> {
  checkCallerLabels(input.labels);
  for (const [what, v] of [['owner', input.owner], ['pool', input.pool]] as const) {
    if (v !== undefined && !NAME.test(v)) throw new WorkspaceError('WS_ERR_INVALID_OPTIONS', `${what} ${JSON.stringify(v)} is not a label value`);
  }
  return {
    ...input.labels,
    [LABEL_OWNER]: input.owner,
    ...(input.conversationId !== undefined ? { [LABEL_CONVERSATION]: input.conversationId } : {}),
    ...(input.pool !== undefined ? { [LABEL_POOL]: input.pool } : {}),
  };
}
