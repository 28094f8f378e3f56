// Containing a command's process tree so that ending it ends everything it started, whatever the
// tree does to its environment, session or process group (`env -i setsid sleep 300 &`, a daemon's
// double fork, a renamed exec-id variable): a PID namespace per command, which the kernel enforces.
//
// How: the command is spawned as `unshare --user --map-current-user --pid -- /bin/sh -c WRAPPER
// cmd...`. unshare(2) with CLONE_NEWPID (no --fork) leaves the calling process where it is and puts
// every process it creates afterwards in a new PID namespace. The wrapper's first child, the
// holder, becomes that namespace's PID 1; its second is the command, a member like everything the
// command starts, however it detaches. The wrapper itself cannot run the command by exec: a process
// whose children's PID namespace differs from its own may not create threads (clone(2) refuses
// CLONE_THREAD with EINVAL), so Node, Python threads, Java or Go would abort. It waits for the
// command instead and ends the way the command ended (its exit status, or the same signal), so the
// agent still reports the command's exit code or signal; a command that exits with 128+N by itself
// reads as signal N. No member can leave the namespace: setns(2) back into the agent's needs
// CAP_SYS_ADMIN over the user namespace that owns it, which a process in the new user namespace
// never has (that is why the user namespace is there even for a root agent; for a non-root agent
// it is also what allows creating the PID namespace at all).
//
// Ending a command: SIGTERM to its process group and SIGUSR1 to the holder, which sends SIGTERM to
// every member (`kill -TERM -1` from inside); after the grace period SIGKILL to the holder: when a
// namespace's PID 1 dies the kernel SIGKILLs every member and waits for them to be gone, so "the
// holder is dead" means "nothing the command started survives".
//
// The holder also keeps the namespace usable while it is needed (a namespace whose PID 1 is gone
// refuses new processes): it lives while the command runs and, after a normal exit, while
// background processes the command left (`server &` is legitimate) are still there, reaping the
// orphans re-parented to it. It holds none of the command's pipes.
//
// Where user namespaces are refused (a seccomp profile without CAP_SYS_ADMIN, user.max_user_namespaces
// = 0, no util-linux unshare), the agent falls back to the exec-id sweep (sweep.ts), which a process
// that clears its environment escapes; docs/security.md states both guarantees.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export type ProcessIsolation = 'pid-namespace' | 'sweep';

export const UNSHARE = 'unshare';
export const UNSHARE_ARGS = Object.freeze(['--user', '--map-current-user', '--pid', '--']);
export const WRAPPER_SHELL = '/bin/sh';
/** $0 of the wrapper: what the command's process is called until it execs. */
export const WRAPPER_NAME = 'workspace-sandbox-exec';

// $1.. is the command. `$$` is the wrapper's pid in the agent's namespace (the wrapper itself did not
// move), the pid the holder watches in /proc: the wrapper lives exactly as long as the command. `$!`
// is the holder's pid in that namespace too: written to fd 3 for the agent, which is closed before
// the command runs. The holder's `wait` is interrupted by a trapped signal: USR1 (end every member),
// USR2 (the command is done: look again now). The command gets the wrapper's stdin through fd 4 (an
// asynchronous list's own stdin is /dev/null), and the wrapper lets go of it so the command alone
// sees its end. Termination signals reach the command through the process group; the wrapper only
// notes them and keeps waiting, so it ends with the command's real status. No subshell may run
// after the command's end: a `$(...)` there is a member of the group the agent signals, and dies.
export const WRAPPER_SCRIPT = [
  'command_pid=$$',
  '(',
  '  exec </dev/null >/dev/null 2>&1 3>&-',
  "  trap 'kill -TERM -1 2>/dev/null' USR1",
  "  trap ':' USR2",
  '  while :; do',
  '    sleep 1 & wait $!',
  '    [ -d "/proc/$command_pid" ] && continue',
  '    kill -0 -1 2>/dev/null || exit 0',
  '  done',
  ') &',
  'echo "$!" >&3',
  'exec 3>&-',
  "trap ':' TERM INT HUP QUIT",
  'exec 4<&0',
  '"$@" 0<&4 4<&- &',
  'child=$!',
  'exec 4<&- 0</dev/null',
  'while :; do',
  '  wait "$child" 2>/dev/null',
  '  status=$?',
  '  kill -0 "$child" 2>/dev/null || break',
  'done',
  'if [ "$status" -gt 128 ] && [ "$status" -lt 192 ]; then',
  '  trap - TERM INT HUP QUIT',
  '  kill -"$((status - 128))" $$ 2>/dev/null',
  'fi',
  'exit "$status"',
].join('\n');

/** argv for spawning `file args` inside its own PID namespace (fd 3 must be a pipe to read the holder's pid from). */
export function isolatedArgv(file: string, args: readonly string[]): { file: string; args: string[] } {
  return { file: UNSHARE, args: [...UNSHARE_ARGS, WRAPPER_SHELL, '-c', WRAPPER_SCRIPT, WRAPPER_NAME, file, ...args] };
}

/** True when this process can give a command its own PID namespace (tried once, for real). */
export function pidNamespacesAvailable(): boolean {
  const r = spawnSync(UNSHARE, [...UNSHARE_ARGS, WRAPPER_SHELL, '-c', 'exit 0'], { stdio: 'ignore', timeout: 10_000 });
  return r.status === 0;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks) and the state; undefined when gone. */
function procStat(pid: number): { state: string; startTime: string } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: split after its closing one.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0]!, startTime: fields[19]! };
}

/**
 * The holder of one command's namespace, identified by pid and start time, so that a pid reused
 * after the holder exited is never signalled.
 */
export class Holder {
  readonly pid: number;
  readonly #startTime: string | undefined;

  constructor(pid: number) {
    this.pid = pid;
    this.#startTime = procStat(pid)?.startTime;
  }

  /** Still running (a zombie is not: its namespace is empty by then). */
  get alive(): boolean {
    const st = procStat(this.pid);
    return st !== undefined && st.startTime === this.#startTime && st.state !== 'Z' && st.state !== 'X';
  }

  signal(signal: 'SIGUSR1' | 'SIGUSR2' | 'SIGKILL'): void {
    if (!this.alive) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // exited between the check and the signal
    }
  }
}
