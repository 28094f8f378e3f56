// Runs a program inside gVisor the way a workspace Pod runs it: an OCI bundle whose root shows the
// host's / read-only (a private directory holding a read-only bind of each of its top-level
// directories, so the mount points runsc creates for the volumes land there and never in the
// host's /), writable tmpfs volumes only where the Pod has emptyDirs, a numeric
// user, and the host network (no network namespace) so the test reaches the server over loopback
// — or, given a network namespace, gVisor's own network stack in it (runsc --network=sandbox), as
// a Pod's sandbox runs in the Pod's namespace. `execArgs` runs further processes in the sandbox.
// `runsc kill <id> TERM` delivers SIGTERM to the container's PID 1, as containerd's shim does.
// Needs root (runsc's default mode here). A missing runsc skips loudly, or fails with
// REQUIRE_RUNSC=1.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { toolSkipReason } from './tools.ts';

export const RUNSC = process.env.RUNSC_BIN ?? 'runsc';

export function runscSkipReason(): string | undefined {
  const missing = toolSkipReason(RUNSC, 'REQUIRE_RUNSC', 'apt-get install -t bookworm-backports runsc', ['--version']);
  if (missing) return missing;
  if (process.getuid?.() !== 0) {
    const reason = 'gVisor tests need root (runsc run with a host-root bundle): SKIPPED';
    if (process.env.REQUIRE_RUNSC === '1') throw new Error(`REQUIRE_RUNSC=1 but ${reason}`);
    process.stderr.write(`\n!! ${reason}\n\n`);
    return reason;
  }
  return undefined;
}

export interface SandboxMount {
  destination: string;
  /** A host directory (bind) or nothing (a fresh tmpfs, like an emptyDir). */
  source?: string;
  readonly?: boolean;
}

export interface SandboxOptions {
  args: string[];
  cwd: string;
  env: Record<string, string>;
  user: { uid: number; gid: number };
  mounts: SandboxMount[];
  /**
   * A network namespace made with `ip netns` (its name): the sandbox runs its own network stack
   * there, taking over the namespace's interfaces, addresses and routes. Without it: the host network.
   */
  netns?: string;
  /** Every capability set of the container's processes (runsc exec's too); runsc spec's defaults when absent. */
  capabilities?: string[];
}

export interface Sandbox {
  readonly id: string;
  readonly child: ChildProcess;
  /** stdout + stderr so far. */
  output(): string;
  /** Sends a signal to the container's PID 1 through runsc. */
  signal(signal: 'TERM' | 'KILL' | 'INT'): void;
  /** Resolves with the exit code of `runsc run` (the container's exit status). */
  readonly exited: Promise<number | null>;
  /** The command line that runs `args` as another process in the sandbox (runsc exec). */
  execArgs(args: string[], opts?: { user?: { uid: number; gid: number }; env?: Record<string, string> }): string[];
  destroy(): Promise<void>;
  /** What destroy does, synchronously and without waiting: for a process `exit` handler. */
  destroySync(): void;
}

let counter = 0;

/** What the kernel and runsc provide themselves; never taken from the host. */
const NOT_FROM_HOST = new Set(['proc', 'sys', 'dev', 'tmp', 'run', 'lost+found']);

/**
 * A root directory that looks like the host's / (symlinks copied, directories bound read-only)
 * but whose own entries are ours: a volume at a path the host lacks (/workspace) gets its mount
 * point here.
 */
export function hostLikeRoot(root: string): { destination: string; type: string; source: string; options: string[] }[] {
  mkdirSync(root);
  const mounts = [];
  for (const name of readdirSync('/')) {
    if (NOT_FROM_HOST.has(name)) continue;
    const host = `/${name}`;
    const st = lstatSync(host);
    if (st.isSymbolicLink()) symlinkSync(readlinkSync(host), join(root, name));
    else if (st.isDirectory()) mounts.push({ destination: host, type: 'bind', source: host, options: ['rbind', 'ro'] });
  }
  return mounts;
}

export function startSandbox(opts: SandboxOptions): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), 'ws-runsc-'));
  const state = join(dir, 'state');
  const bundle = join(dir, 'bundle');
  mkdirSync(state);
  mkdirSync(bundle);
  const spec = spawnSync(RUNSC, ['spec', '--bundle', bundle], { encoding: 'utf8' });
  if (spec.status !== 0) throw new Error(`runsc spec failed: ${spec.stderr}`);
  const config = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as {
    root: { path: string; readonly: boolean };
    process: { args: string[]; cwd: string; env: string[]; terminal: boolean; user: { uid: number; gid: number }; capabilities?: Record<string, string[]> };
    mounts: { destination: string; type: string; source: string; options: string[] }[];
    linux: { namespaces: { type: string; path?: string }[] };
    hostname?: string;
  };
  const rootfs = join(dir, 'rootfs');
  config.mounts.push(...hostLikeRoot(rootfs));
  config.root = { path: rootfs, readonly: true };
  config.process.args = opts.args;
  config.process.cwd = opts.cwd;
  config.process.terminal = false;
  config.process.user = { uid: opts.user.uid, gid: opts.user.gid };
  config.process.env = Object.entries(opts.env).map(([k, v]) => `${k}=${v}`);
  if (opts.capabilities) {
    const caps = opts.capabilities;
    config.process.capabilities = Object.fromEntries(['bounding', 'effective', 'inheritable', 'permitted', 'ambient'].map((set) => [set, caps]));
  }
  // Host network (the test's client connects over loopback, runsc --network=host), or the given namespace.
  config.linux.namespaces = config.linux.namespaces.filter((n) => n.type !== 'network');
  if (opts.netns) config.linux.namespaces.push({ type: 'network', path: `/var/run/netns/${opts.netns}` });
  delete config.hostname;
  for (const m of opts.mounts) {
    config.mounts.push(m.source
      ? { destination: m.destination, type: 'bind', source: m.source, options: ['rbind', m.readonly === false ? 'rw' : 'ro'] }
      : { destination: m.destination, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] });
  }
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(config, null, 2));

  const id = `ws-test-${process.pid}-${counter++}`;
  const runArgs = [RUNSC, '--root', state, `--network=${opts.netns ? 'sandbox' : 'host'}`, 'run', '--bundle', bundle, id];
  // This runsc (20240729) refuses its own network stack when /proc/sys/net/core is visible (it takes
  // that for the root network namespace; newer kernels show it in every namespace, fixed upstream in
  // 20240807): it starts in a private mount namespace where that directory is hidden.
  const hideNetCore = (ns: string) => ['unshare', '-m', '--propagation', 'slave', 'sh', '-c',
    `nsenter --net=/var/run/netns/${ns} mount -t tmpfs -o size=4k,mode=555 hidden /proc/sys/net/core && exec "$@"`, '--'];
  const argv = opts.netns ? [...hideNetCore(opts.netns), ...runArgs] : runArgs;
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const runsc = (...args: string[]) => spawnSync(RUNSC, ['--root', state, ...args], { stdio: 'ignore', timeout: 30_000 });

  return {
    id,
    child,
    output: () => out,
    signal: (signal) => { runsc('kill', id, signal); },
    exited,
    execArgs: (args, o = {}) => [
      RUNSC, '--root', state, 'exec',
      ...(o.user ? ['--user', `${o.user.uid}:${o.user.gid}`] : []),
      ...Object.entries(o.env ?? {}).flatMap(([k, v]) => ['--env', `${k}=${v}`]),
      id, ...args,
    ],
    destroy: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        runsc('kill', id, 'KILL');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      }
      runsc('delete', '-force', id);
      rmSync(dir, { recursive: true, force: true });
    },
    destroySync: () => {
      runsc('delete', '-force', id);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
