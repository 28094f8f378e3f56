// Finding a command's escaped descendants. Killing the process group covers ordinary trees, but a
// process can leave the group (`setsid`, a daemon's double fork) and then nothing ties it to the
// command any more except what it inherited. Every command is started with a unique exec id in its
// environment, and environments are inherited by default, so a scan of /proc/*/environ finds the
// escapees. A process that clears its environment (`env -i`) evades the scan: inside a container
// the container's own teardown (or the pod's) is the final backstop.
import { readdir, readFile } from 'node:fs/promises';

const PROC = '/proc';

/** Pids (other than ours) whose environment holds `name=value`. Zombies have an empty environ and never match. */
export async function findTaggedProcesses(name: string, value: string): Promise<number[]> {
  const entry = Buffer.from(`${name}=${value}\0`);
  const inside = Buffer.from(`\0${name}=${value}\0`);
  let names: string[];
  try {
    names = await readdir(PROC);
  } catch {
    return [];
  }
  const self = process.pid;
  const found: number[] = [];
  await Promise.all(names.map(async (n) => {
    const c = n.charCodeAt(0);
    if (c < 48 || c > 57) return; // not a pid
    const pid = Number(n);
    if (pid === self) return;
    let environ: Buffer;
    try {
      environ = await readFile(`${PROC}/${n}/environ`);
    } catch {
      return; // gone, or not ours to read
    }
    if (environ.subarray(0, entry.length).equals(entry) || environ.includes(inside)) found.push(pid);
  }));
  return found.sort((a, b) => a - b);
}

/** Sends `signal` to each pid, ignoring those that are already gone. */
export function signalEach(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // ESRCH: exited between the scan and the signal.
    }
  }
}

/** Sends `signal` to a whole process group; false when the group is empty. */
export function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}
