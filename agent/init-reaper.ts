// PID 1 duty. In a container the agent is often PID 1, and every orphan in the container (a daemon
// a command double-forked, an escapee the agent killed) is re-parented to it and stays a zombie
// until PID 1 waits for it. Node cannot do that: libuv only calls waitpid() on the pids it spawned,
// and there is no binding for waitpid(-1) or prctl(PR_SET_CHILD_SUBREAPER). A reaper that did call
// waitpid(-1) inside the agent would also race libuv and steal the exit status of a command the
// agent is waiting for.
//
// So as PID 1 the agent hands PID 1 to a reaper and runs as its only child, tini-style: it
// re-executes itself (process.execve, same pid) as a POSIX shell whose script starts the agent in
// the background and sits in `wait`. The shell's wait reaps every child it gets, including adopted
// orphans (dash, bash and busybox ash all call waitpid(-1) under `wait`), forwards SIGTERM/SIGINT/
// SIGHUP to the agent and exits with the agent's status. The agent's own commands are the agent's
// children, not the shell's, so the shell can never reap one of them: no exit code is stolen.
// Needs /bin/sh in the image (the agent needs it for `shell: true` anyway); without it the agent
// stays PID 1 and logs that orphans are not reaped.
import { accessSync, constants } from 'node:fs';
import { isSea } from 'node:sea';
import type { Logger } from 'pino';

export const REAPER_SHELL = '/bin/sh';
export const REAPER_NAME = 'workspace-sandbox-init';

// $1.. is the agent's command line. `wait` returns early (status > 128) when a trapped signal
// arrives; the loop waits again while the agent lives. When the agent is gone, a second `wait`
// fetches its real status if the first one was only interrupted (127: already collected).
export const REAPER_SCRIPT = [
  '"$@" &',
  'child=$!',
  'trap \'kill -TERM "$child" 2>/dev/null\' TERM INT HUP',
  'while :; do',
  '  wait "$child"; status=$?',
  '  kill -0 "$child" 2>/dev/null && continue',
  '  wait "$child" 2>/dev/null; again=$?',
  '  [ "$again" -ne 127 ] && status=$again',
  '  exit "$status"',
  'done',
].join('\n');

/** The command line that starts this same agent again (node + script, or the single executable). */
export function selfCommandLine(): string[] {
  // A single executable's argv is [exe, exe, ...args] and its execArgv come from the blob.
  if (isSea()) return [process.execPath, ...process.argv.slice(2)];
  return [process.execPath, ...process.execArgv, ...process.argv.slice(1)];
}

export function reaperArgv(): string[] {
  return ['sh', '-c', REAPER_SCRIPT, REAPER_NAME, ...selfCommandLine()];
}

/**
 * As PID 1, replaces this process with the reaper (never returns on success). Returns normally
 * when not PID 1, when disabled, or when the reaper cannot start (logged).
 */
export function becomeReaperIfPid1(mode: 'auto' | 'off', logger: Logger): void {
  if (process.pid !== 1) return;
  if (mode === 'off') {
    logger.warn('running as PID 1 with AGENT_INIT_REAPER=off: orphaned processes stay zombies until the container ends');
    return;
  }
  try {
    accessSync(REAPER_SHELL, constants.X_OK);
    logger.info({ reaper: REAPER_SHELL }, 'running as PID 1: handing PID 1 to a reaping shell and continuing as its child');
    process.execve!(REAPER_SHELL, reaperArgv()); // the environment passes unchanged
  } catch (err) {
    logger.warn({ err }, `running as PID 1 without a reaper (${REAPER_SHELL} unusable): orphaned processes stay zombies until the container ends`);
  }
}
