// Benchmarks write their results table into test/bench/README.md, each between its own markers,
// so every script regenerates only its section and the file always shows the latest run.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';

const README = new URL('./README.md', import.meta.url);

export function machineLine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return `Node ${process.version}, ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${new Date().toISOString().slice(0, 10)}`;
}

/**
 * The machine's load while a bench runs (1-minute load average, sampled every second): the bench's
 * own processes keep about as many cores busy as the machine has, so a median above cores + 1
 * means other work shared the machine and the run is marked provisional.
 */
export class LoadSampler {
  readonly #samples: number[] = [];
  readonly #timer = setInterval(() => this.#samples.push(loadavg()[0]!), 1000).unref();

  stop(): { median: number; max: number; provisional: boolean; line: string } {
    clearInterval(this.#timer);
    const m = median(this.#samples);
    const max = Math.max(...this.#samples);
    const provisional = !(m <= cpus().length + 1);
    const line = `load average during the run: median ${m.toFixed(1)}, max ${max.toFixed(1)} on ${cpus().length} cores`
      + (provisional ? ' · **provisional: the machine was shared with other work during the run; read medians and ratios.**' : '');
    return { median: m, max, provisional, line };
  }
}

/** Replaces the section `name` (created at the end when absent). */
export function writeSection(name: string, markdown: string): void {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const text = readFileSync(README, 'utf8');
  const block = `${start}\n${markdown.trim()}\n${end}`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  const next = i >= 0 && j > i ? text.slice(0, i) + block + text.slice(j + end.length) : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(README, next);
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Markdown table from a header row and rows. */
export function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/**
 * One benchmark's scratch directory and child processes: a child that exits early is reported
 * with the tail of its stderr, and at the end (or on failure) every child is killed and the
 * directory removed.
 */
export class BenchRun {
  readonly dir: string;
  readonly #children: ChildProcess[] = [];
  #stopping = false;

  constructor(name: string) {
    this.dir = mkdtempSync(join(tmpdir(), `ws-bench-${name}-`));
  }

  /** Starts `cmd` with exactly `env` as its environment. */
  start(cmd: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let err = '';
    child.stderr!.on('data', (c: Buffer) => { err = (err + c.toString()).slice(-2000); });
    child.on('exit', (code) => { if (code && !this.#stopping) process.stderr.write(`${cmd} exited ${code}: ${err}\n`); });
    this.#children.push(child);
    return child;
  }

  run(main: () => Promise<void>): void {
    main().catch((err: unknown) => {
      process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    }).finally(() => {
      this.#stopping = true;
      for (const c of this.#children) c.kill('SIGKILL');
      rmSync(this.dir, { recursive: true, force: true });
    });
  }
}
