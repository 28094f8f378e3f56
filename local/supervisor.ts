// A small process supervisor for the local stack: each program is its own process, its JSON log
// lines are printed readable with a name prefix, a crash is reported and restarted with backoff,
// and stop() ends every child with SIGTERM (their own graceful shutdown) before SIGKILL.
// Not every exit is a crash: a program that ends before it was ever ready (a port taken, a bad
// setting) would fail the same way on every restart, and one that was told to stop (exit 0, or
// SIGTERM/SIGINT/SIGHUP from someone) means the stack should stop. Both are reported to the owner.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

export interface ProgramSpec {
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  /** Resolves true once the program answers its readiness endpoint. */
  probe: () => Promise<boolean>;
}

export interface SupervisorOptions {
  restartBackoffMs: number;
  maxBackoffMs?: number;
  /** A child that stayed up this long has its backoff reset. */
  stableAfterMs?: number;
  stopTimeoutMs?: number;
  write?: (line: string) => void;
  color?: boolean;
  /** A program exited before its probe ever answered; `lastLines` is what it printed last. */
  onStartupFailure?: (name: string, how: string, lastLines: string[]) => void;
  /** A program ended because it was asked to (exit 0 or a stop signal), not by crashing. */
  onStopped?: (name: string, how: string) => void;
}

/** Signals by which a person or a service manager asks a program to stop. */
const STOP_SIGNALS: ReadonlySet<string> = new Set(['SIGTERM', 'SIGINT', 'SIGHUP']);
const LAST_LINES = 8;

const COLORS = ['\x1b[36m', '\x1b[35m', '\x1b[33m', '\x1b[32m', '\x1b[34m'];
const RESET = '\x1b[0m';
const LEVEL_WIDTH = 5;

/** One pino JSON line → `HH:MM:SS LEVEL msg key=value …`; anything else is printed as is. */
export function formatLogLine(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) return line;
  const { level, time, msg, pid: _pid, hostname: _hostname, name: _name, ...rest } = rec;
  const t = typeof time === 'string' ? time.slice(11, 19) : typeof time === 'number' ? new Date(time).toISOString().slice(11, 19) : '';
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`)
    .join(' ');
  return `${t} ${String(level ?? '').toUpperCase().padEnd(LEVEL_WIDTH)} ${String(msg ?? '')}${fields ? ` ${fields}` : ''}`;
}

interface Running {
  spec: ProgramSpec;
  child?: ChildProcess;
  ready: boolean;
  lastLines: string[];
  startedAt: number;
  backoffMs: number;
  restarts: number;
  timer?: NodeJS.Timeout;
}

export class Supervisor {
  #programs = new Map<string, Running>();
  #stopping = false;
  readonly #options: Required<Omit<SupervisorOptions, 'write' | 'color' | 'onStartupFailure' | 'onStopped'>> & SupervisorOptions;
  readonly #write: (line: string) => void;

  constructor(options: SupervisorOptions) {
    this.#options = { maxBackoffMs: 30_000, stableAfterMs: 30_000, stopTimeoutMs: 10_000, ...options };
    this.#write = options.write ?? ((line) => process.stdout.write(`${line}\n`));
    // However the supervisor ends (an uncaught error, process.exit), no child outlives it.
    process.once('exit', () => {
      for (const running of this.#programs.values()) running.child?.kill('SIGTERM');
    });
  }

  #prefix(name: string): string {
    const names = [...this.#programs.keys()];
    const width = Math.max(...names.map((n) => n.length), 'stack'.length);
    const label = `[${name}]`.padEnd(width + 2);
    if (!this.#options.color) return label;
    const i = Math.max(0, names.indexOf(name));
    return `${COLORS[i % COLORS.length]}${label}${RESET}`;
  }

  say(name: string, text: string): void {
    for (const line of text.split('\n')) this.#write(`${this.#prefix(name)} ${line}`);
  }

  start(spec: ProgramSpec): void {
    const running: Running = { spec, ready: false, lastLines: [], startedAt: 0, backoffMs: this.#options.restartBackoffMs, restarts: 0 };
    this.#programs.set(spec.name, running);
    this.#launch(running);
  }

  #launch(running: Running): void {
    const { spec } = running;
    running.startedAt = Date.now();
    const child = spawn(spec.command, spec.args, { env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] });
    running.child = child;
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        const text = formatLogLine(line);
        running.lastLines.push(text);
        if (running.lastLines.length > LAST_LINES) running.lastLines.shift();
        this.say(spec.name, text);
      });
    }
    child.on('error', (err) => this.say(spec.name, `failed to start: ${err.message}`));
    child.on('exit', (code, signal) => {
      if (running.child !== child) return;
      running.child = undefined;
      if (this.#stopping) return;
      const how = signal ?? `code ${code}`;
      if (!running.ready && this.#options.onStartupFailure) {
        this.#options.onStartupFailure(spec.name, how, [...running.lastLines]);
        return;
      }
      if ((code === 0 || (signal !== null && STOP_SIGNALS.has(signal))) && this.#options.onStopped) {
        this.#options.onStopped(spec.name, how);
        return;
      }
      if (Date.now() - running.startedAt >= this.#options.stableAfterMs) running.backoffMs = this.#options.restartBackoffMs;
      const delay = running.backoffMs;
      running.backoffMs = Math.min(running.backoffMs * 2, this.#options.maxBackoffMs);
      running.restarts++;
      this.say('stack', `${spec.name} exited (${how}); restarting in ${delay} ms (restart #${running.restarts})`);
      running.timer = setTimeout(() => this.#launch(running), delay);
    });
  }

  /** Polls every program's probe until all answer or the timeout passes; resolves the laggards' names. */
  async waitReady(timeoutMs: number): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    const pending = new Set(this.#programs.keys());
    while (pending.size > 0 && Date.now() < deadline) {
      for (const name of [...pending]) {
        const running = this.#programs.get(name)!;
        const ok = await running.spec.probe().catch(() => false);
        if (ok) {
          running.ready = true;
          pending.delete(name);
        }
      }
      if (pending.size > 0) await new Promise((r) => setTimeout(r, 100));
    }
    return [...pending];
  }

  restarts(name: string): number {
    return this.#programs.get(name)?.restarts ?? 0;
  }

  pid(name: string): number | undefined {
    return this.#programs.get(name)?.child?.pid;
  }

  /** SIGTERM to every child (each drains), SIGKILL after the stop timeout. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const waits: Promise<unknown>[] = [];
    for (const running of this.#programs.values()) {
      clearTimeout(running.timer);
      const child = running.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) continue;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), this.#options.stopTimeoutMs);
      waits.push(exited.finally(() => clearTimeout(killer)));
    }
    await Promise.all(waits);
  }
}
