// One command: spawn it in its own process group, collect or forward its output, end it on request
// (timeout, client gone, output limit, shutdown) and report how it ended. Knows nothing of HTTP.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsc, statSync } from 'node:fs';
import { delimiter, resolve as resolvePath } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkspaceSandboxError } from '../lib/errors.ts';
import { EXEC_ID_VAR } from './config.ts';
import { Holder, isolatedArgv, type ProcessIsolation } from './isolation.ts';
import { HeadTailBuffer } from './output.ts';
import { findTaggedProcesses, signalEach, signalGroup } from './sweep.ts';

export const EXIT_REASONS = ['exited', 'signal', 'timeout', 'client_cancel', 'output_limit', 'agent_shutdown'] as const;
export type ExitReason = (typeof EXIT_REASONS)[number];
/** Reasons for which the agent ends a command itself. */
export type KillReason = Exclude<ExitReason, 'exited' | 'signal'>;

export type StreamName = 'stdout' | 'stderr';

export type OutputMode =
  /** Keep head + tail of each stream within `maxBytes`; the command runs on past the cap. */
  | { mode: 'buffered'; maxBytes: number }
  /**
   * Hand every chunk to `onData` as it arrives; past `limitBytes` on one stream (when set) the
   * command is ended with `output_limit`.
   */
  | { mode: 'stream'; limitBytes: number | undefined; onData: (stream: StreamName, chunk: Buffer) => void };

export interface ExecSpec {
  file: string;
  args: readonly string[];
  cwd: string;
  env: Readonly<Record<string, string>>;
  stdin?: Buffer;
  timeoutMs: number;
  encoding: 'utf8' | 'base64';
  output: OutputMode;
}

export interface ExecOptions {
  killGraceMs: number;
  outputDrainMs: number;
  /** How a command's tree is contained and ended (isolation.ts). */
  isolation: ProcessIsolation;
}

/** Longest wait, after SIGKILL, for a command's namespace to empty before answering anyway. */
const REAP_WAIT_MS = 10_000;

/** How a command ended: the fields the exit frame and the buffered answer share. */
export interface ExecSummary {
  execId: string;
  exitCode: number | null;
  signal: string | null;
  reason: ExitReason;
  stdoutBytes: number;
  stderrBytes: number;
  stdoutTruncatedBytes: number;
  stderrTruncatedBytes: number;
  durationMs: number;
}

export interface ExecResult extends ExecSummary {
  /** Buffered mode only: the kept bytes (head + tail). */
  stdout?: Buffer;
  stderr?: Buffer;
}

interface StreamState {
  bytes: number;
  /** Bytes read but not kept or forwarded (stream mode past the limit). */
  dropped: number;
  buffer: HeadTailBuffer | undefined;
}

// Exec ids: a random per-process prefix and a counter. Unique across agent restarts and pid reuse,
// and much cheaper than 12 fresh random bytes per command (the RNG call showed in profiles).
const ID_PREFIX = randomBytes(6).toString('hex');
let idCounter = 0;

export function newExecId(): string {
  return `${ID_PREFIX}${(idCounter++).toString(16).padStart(12, '0')}`;
}

export class Execution {
  readonly id: string;
  readonly pid: number;
  readonly result: Promise<ExecResult>;
  readonly #child: ChildProcess;
  /** PID 1 of the command's namespace (pid-namespace isolation), known once the wrapper reported it. */
  #holder: Holder | undefined;
  #holderKnown: Promise<void> = Promise.resolve();
  readonly #spec: ExecSpec;
  readonly #options: ExecOptions;
  readonly #started = performance.now();
  readonly #streams: Record<StreamName, StreamState>;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #closed = false;
  #killReason: KillReason | undefined;
  #terminating: Promise<void> | undefined;
  #paused = false;
  #timer: NodeJS.Timeout | undefined;
  #drainTimer: NodeJS.Timeout | undefined;
  #resolve!: (r: ExecResult) => void;
  #done = false;

  private constructor(id: string, child: ChildProcess, spec: ExecSpec, options: ExecOptions) {
    this.id = id;
    this.#child = child;
    this.pid = child.pid!;
    this.#spec = spec;
    this.#options = options;
    this.result = new Promise((resolve) => { this.#resolve = resolve; });
    const buffered = spec.output.mode === 'buffered';
    const maxBytes = spec.output.mode === 'buffered' ? spec.output.maxBytes : 0;
    this.#streams = {
      stdout: { bytes: 0, dropped: 0, buffer: buffered ? new HeadTailBuffer(maxBytes) : undefined },
      stderr: { bytes: 0, dropped: 0, buffer: buffered ? new HeadTailBuffer(maxBytes) : undefined },
    };
    this.#wire();
  }

  /**
   * Spawns the command and resolves once it runs; a command that cannot start (missing, not
   * executable) rejects with WS_ERR_SPAWN_FAILED and leaves nothing behind.
   */
  static async start(spec: ExecSpec, options: ExecOptions, id: string = newExecId()): Promise<Execution> {
    const isolated = options.isolation === 'pid-namespace';
    // Spawned through unshare and a wrapper, a missing command would only show as exit 127 from
    // the wrapper's exec: look it up first, so the answer stays WS_ERR_SPAWN_FAILED with its errno.
    if (isolated) checkExecutable(spec.file, spec.env.PATH, spec.cwd);
    const argv = isolated ? isolatedArgv(spec.file, spec.args) : { file: spec.file, args: [...spec.args] };
    let child: ChildProcess;
    try {
      child = spawn(argv.file, argv.args, {
        cwd: spec.cwd,
        env: { ...spec.env, [EXEC_ID_VAR]: id },
        // detached = setsid(): the command leads a new session and process group, so kill(-pid)
        // reaches its whole tree and a terminal signal to the agent does not.
        detached: true,
        // fd 3 (isolated): the wrapper writes the holder's pid there and closes it before the exec.
        stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe', ...(isolated ? ['pipe' as const] : [])],
      });
    } catch (err) {
      throw spawnError(spec.file, err);
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(spawnError(spec.file, err));
      child.once('error', onError);
      child.once('spawn', () => {
        child.off('error', onError);
        resolve();
      });
    });
    // Wired at once: the command may exit before the holder's pid arrives. Its output waits (paused
    // pipes) until the caller has the Execution, as it would right after a plain spawn.
    const exec = new Execution(id, child, spec, options);
    if (isolated) {
      exec.pause();
      exec.#holderKnown = readHolderPid(child.stdio[3] as Readable).then((pid) => {
        if (pid !== undefined) exec.#holder = new Holder(pid);
      });
      await exec.#holderKnown;
      exec.resume();
      if (!exec.#holder) {
        exec.cancel('agent_shutdown');
        await exec.result;
        throw new WorkspaceSandboxError('WS_ERR_SPAWN_FAILED', `cannot run ${JSON.stringify(spec.file)}: its PID namespace could not be made`, { details: { errno: null } });
      }
    }
    return exec;
  }

  #wire(): void {
    const child = this.#child;
    // After a successful spawn, 'error' only reports failed kill() calls: nothing to do.
    child.on('error', () => {});
    if (this.#spec.stdin && child.stdin) {
      child.stdin.on('error', () => {}); // EPIPE when the command exits without reading
      child.stdin.end(this.#spec.stdin);
    }
    this.#read('stdout', child.stdout!);
    this.#read('stderr', child.stderr!);
    child.once('exit', (code, signal) => {
      this.#exit = { code, signal };
      this.#scheduleDrain();
    });
    child.once('close', () => {
      this.#closed = true;
      void this.#maybeFinish();
    });
    this.#timer = setTimeout(() => this.cancel('timeout'), this.#spec.timeoutMs);
  }

  #read(name: StreamName, stream: Readable): void {
    const state = this.#streams[name];
    const output = this.#spec.output;
    stream.on('error', () => {});
    stream.on('data', (chunk: Buffer) => {
      state.bytes += chunk.length;
      if (output.mode === 'buffered') {
        state.buffer!.push(chunk);
        return;
      }
      if (this.#killReason === 'client_cancel') {
        state.dropped += chunk.length; // nobody to send it to
        return;
      }
      const limit = output.limitBytes;
      if (limit === undefined || state.bytes <= limit) {
        output.onData(name, chunk);
        return;
      }
      const room = Math.max(0, limit - (state.bytes - chunk.length));
      if (room > 0) output.onData(name, chunk.subarray(0, room));
      state.dropped += chunk.length - room;
      this.cancel('output_limit');
    });
  }

  /**
   * The main process has exited. Its pipes close when every holder is gone; a background process
   * it left behind may hold them for ever, so after a short wait the agent stops reading and
   * answers (the background process keeps running: starting a server with `cmd &` is legitimate).
   * While the client applies back-pressure, unread output is the client's, not a holder's: wait.
   */
  #scheduleDrain(): void {
    if (this.#closed) return;
    clearTimeout(this.#drainTimer);
    this.#drainTimer = setTimeout(() => {
      if (this.#closed) return;
      if (this.#paused) return this.#scheduleDrain();
      this.#child.stdout?.destroy();
      this.#child.stderr?.destroy();
    }, this.#options.outputDrainMs);
  }

  /** Back-pressure from a slow reader: stop reading the pipes (the command blocks on write). */
  pause(): void {
    this.#paused = true;
    this.#child.stdout?.pause();
    this.#child.stderr?.pause();
  }

  resume(): void {
    this.#paused = false;
    this.#child.stdout?.resume();
    this.#child.stderr?.resume();
  }

  get running(): boolean {
    return !this.#done;
  }

  get killReason(): KillReason | undefined {
    return this.#killReason;
  }

  /**
   * Ends the command: SIGTERM to its process group and to every tagged escapee, SIGKILL after the
   * grace period to whatever is left. The first reason wins; the result is reported once nothing
   * tagged survives.
   */
  cancel(reason: KillReason): void {
    if (this.#done || this.#killReason) return;
    this.#killReason = reason;
    clearTimeout(this.#timer);
    if (reason === 'client_cancel') this.resume(); // keep draining the pipes into the void
    this.#terminating = this.#terminate().catch(() => {});
  }

  async #terminate(): Promise<void> {
    await this.#holderKnown;
    if (this.#holder) return this.#terminateNamespace(this.#holder);
    const tagged = () => findTaggedProcesses(EXEC_ID_VAR, this.id);
    signalGroup(this.pid, 'SIGTERM');
    signalEach(await tagged(), 'SIGTERM');
    const deadline = performance.now() + this.#options.killGraceMs;
    for (;;) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) break;
      await sleep(Math.min(20, remaining));
      if (this.#exit && (await tagged()).length === 0) break;
    }
    // Members that cleared their environment are only reachable through the group.
    signalGroup(this.pid, 'SIGKILL');
    for (let round = 0; round < 50; round++) {
      const left = await tagged();
      if (left.length === 0) break;
      signalEach(left, 'SIGKILL'); // repeated: a survivor may have forked between scan and kill
      await sleep(5);
    }
  }

  /** SIGTERM to the group and every namespace member; after the grace, SIGKILL to the namespace. */
  async #terminateNamespace(holder: Holder): Promise<void> {
    signalGroup(this.pid, 'SIGTERM');
    holder.signal('SIGUSR1');
    const deadline = performance.now() + this.#options.killGraceMs;
    for (;;) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) break;
      await sleep(Math.min(20, remaining));
      if (this.#exit && !holder.alive) return;
    }
    holder.signal('SIGKILL');
    signalGroup(this.pid, 'SIGKILL');
    const reaped = performance.now() + REAP_WAIT_MS;
    while (holder.alive && performance.now() < reaped) await sleep(5);
  }

  async #maybeFinish(): Promise<void> {
    if (this.#done || !this.#closed) return;
    if (this.#terminating) await this.#terminating;
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#drainTimer);
    // Done: the holder looks now whether background processes keep the namespace, instead of in up to 1 s.
    this.#holder?.signal('SIGUSR2');
    const exit = this.#exit ?? { code: null, signal: null };
    const utf8 = this.#spec.encoding === 'utf8';
    const out = this.#streams.stdout.buffer?.result(utf8);
    const err = this.#streams.stderr.buffer?.result(utf8);
    const result: ExecResult = {
      execId: this.id,
      exitCode: exit.code,
      signal: exit.signal,
      reason: this.#killReason ?? (exit.signal ? 'signal' : 'exited'),
      stdoutBytes: this.#streams.stdout.bytes,
      stderrBytes: this.#streams.stderr.bytes,
      stdoutTruncatedBytes: out ? out.truncatedBytes : this.#streams.stdout.dropped,
      stderrTruncatedBytes: err ? err.truncatedBytes : this.#streams.stderr.dropped,
      durationMs: Math.round((performance.now() - this.#started) * 1000) / 1000,
    };
    if (out) result.stdout = out.data;
    if (err) result.stderr = err.data;
    this.#resolve(result);
  }
}

/** The holder's pid from the wrapper's fd 3 (undefined when the wrapper failed before writing it). */
function readHolderPid(fd3: Readable): Promise<number | undefined> {
  return new Promise((resolve) => {
    let text = '';
    fd3.setEncoding('utf8');
    fd3.on('data', (d: string) => { text += d; });
    fd3.on('error', () => {});
    fd3.once('close', () => {
      const pid = Number(text.trim());
      resolve(Number.isSafeInteger(pid) && pid > 0 ? pid : undefined);
    });
  });
}

/**
 * What execvp(3) would say about `file`: ENOENT when no executable of that name is found (on PATH
 * unless it holds a slash), EACCES when one is found but cannot be executed.
 */
export function checkExecutable(file: string, path: string | undefined, cwd: string): void {
  const candidates = file.includes('/') ? [resolvePath(cwd, file)]
    : (path ?? '').split(delimiter).map((dir) => resolvePath(cwd, dir || '.', file));
  let code = 'ENOENT';
  for (const candidate of candidates) {
    const st = statSync(candidate, { throwIfNoEntry: false });
    if (!st) continue;
    try {
      if (!st.isFile()) throw new Error('not a file');
      accessSync(candidate, fsc.X_OK);
      return;
    } catch {
      code = 'EACCES';
    }
  }
  throw spawnError(file, Object.assign(new Error(code), { code }));
}

function spawnError(file: string, err: unknown): WorkspaceSandboxError {
  const e = err as NodeJS.ErrnoException;
  const why = e.code === 'ENOENT' ? 'not found'
    : e.code === 'EACCES' ? 'not executable (permission denied)'
      : e.code === 'ENOEXEC' ? 'not an executable format'
        : e.message;
  return new WorkspaceSandboxError('WS_ERR_SPAWN_FAILED', `cannot run ${JSON.stringify(file)}: ${why}`, {
    details: { errno: e.code ?? null },
    cause: err,
  });
}
