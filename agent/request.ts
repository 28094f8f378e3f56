// The /execute request: a strict schema (unknown fields are an error, not silently ignored: a
// misspelt `timeoutMS` must not quietly run with the default) and its translation into a spawn.
import { statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { fieldName } from '../lib/config.ts';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { EXEC_ID_VAR, type AgentConfig } from './config.ts';

const noNul = (s: string) => !s.includes('\0');
const arg = z.string().refine(noNul, 'must not contain NUL characters');
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export const SHELL = '/bin/sh';

export function executeRequestSchema(config: Pick<AgentConfig, 'maxTimeoutMs' | 'maxOutputBytesLimit'>) {
  return z.strictObject({
    cmd: z.array(arg).min(1, 'must name a command').refine((c) => c[0] !== '', 'cmd[0] must not be empty'),
    shell: z.boolean().optional(),
    cwd: arg.min(1).optional(),
    env: z.record(
      z.string().regex(/^[^=\0]+$/, 'variable names must be non-empty and hold no = or NUL')
        .refine((k) => k !== EXEC_ID_VAR, `${EXEC_ID_VAR} is set by the agent`),
      arg,
    ).optional(),
    stdin: z.union([z.string(), z.strictObject({
      base64: z.string().refine((s) => s.length % 4 === 0 && BASE64.test(s), 'must be base64'),
    })]).optional(),
    timeoutMs: z.number().int().positive().max(config.maxTimeoutMs, `must be <= ${config.maxTimeoutMs}`).optional(),
    maxOutputBytes: z.number().int().min(0).max(config.maxOutputBytesLimit, `must be <= ${config.maxOutputBytesLimit}`).optional(),
    encoding: z.enum(['utf8', 'base64']).optional(),
  });
}

export type ExecuteRequest = z.output<ReturnType<typeof executeRequestSchema>>;

/** Validates a parsed JSON body; problems name the field, never echo the value (it may be a secret). */
export function parseExecuteRequest(schema: ReturnType<typeof executeRequestSchema>, body: unknown): ExecuteRequest {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const details = r.error.issues.map((i) => ({ field: fieldName(i.path), message: i.message }));
  const summary = details.map((d) => `${d.field}: ${d.message}`).join('; ');
  throw new WorkspaceSandboxError('WS_ERR_VALIDATION', `invalid /execute request: ${summary}`, { details });
}

export interface SpawnPlan {
  file: string;
  args: string[];
  /** What the log line names: argv[0] only (arguments, and shell scripts, may hold secrets). */
  argv0: string;
  cwd: string;
  env: Record<string, string>;
  stdin: Buffer | undefined;
}

/**
 * The error for a failed spawn when the cwd is the culprit (spawn reports a missing cwd as ENOENT,
 * like a missing command); undefined when the cwd is fine. Checked only after a failure, so the
 * common path pays no extra stat.
 */
export function cwdProblem(cwd: string): WorkspaceSandboxError | undefined {
  if (statSync(cwd, { throwIfNoEntry: false })?.isDirectory()) return undefined;
  return new WorkspaceSandboxError('WS_ERR_VALIDATION', `cwd ${JSON.stringify(cwd)} is not an existing directory`, {
    details: [{ field: 'cwd', message: 'must be an existing directory' }],
  });
}

/** Resolves cwd (relative to the workspace root), env and stdin. */
export function planSpawn(req: ExecuteRequest, config: Pick<AgentConfig, 'workspaceRoot' | 'childBaseEnv'>): SpawnPlan {
  const cwd = req.cwd === undefined ? config.workspaceRoot
    : isAbsolute(req.cwd) ? req.cwd : resolve(config.workspaceRoot, req.cwd);
  const [first, ...rest] = req.cmd as [string, ...string[]];
  // With shell, cmd[0] is the script and the rest become $1.. (the `sh` placeholder is $0).
  const file = req.shell ? SHELL : first;
  const args = req.shell ? ['-c', first, 'sh', ...rest] : rest;
  const stdin = req.stdin === undefined ? undefined
    : typeof req.stdin === 'string' ? Buffer.from(req.stdin, 'utf8') : Buffer.from(req.stdin.base64, 'base64');
  return {
    file,
    args,
    argv0: req.shell ? `${SHELL} -c` : first,
    cwd,
    env: { ...config.childBaseEnv, ...req.env },
    stdin,
  };
}
