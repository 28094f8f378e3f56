// What the hot-reloaded files (the serving key pair, the webhook's injection config) share: the
// kubelet updates a Secret or ConfigMap volume by swapping its `..data` symlink, so the directory is
// watched, not the file; fs.watch can miss events (some filesystems, the swap itself), so a poll
// backs it up; a burst of events is coalesced; and reloads never overlap.
import { watch, type FSWatcher } from 'node:fs';

export interface ReloadScheduleOptions {
  /** Fallback poll; fs.watch usually reacts first. */
  pollIntervalMs?: number;
  /** Coalesces the burst of events of one volume update. */
  debounceMs?: number;
}

export class ReloadSchedule {
  readonly #reload: () => Promise<void>;
  readonly #watchers: FSWatcher[] = [];
  readonly #poll: NodeJS.Timeout;
  readonly #debounceMs: number;
  #debounce: NodeJS.Timeout | undefined;
  #running: Promise<void> = Promise.resolve();
  #closed = false;

  /** Runs `reload` (see run()) when something in `dirs` changes and on every poll. */
  constructor(dirs: Iterable<string>, reload: () => Promise<void>, options: ReloadScheduleOptions = {}) {
    this.#reload = reload;
    this.#debounceMs = options.debounceMs ?? 50;
    for (const dir of new Set(dirs)) {
      try {
        const w = watch(dir, { persistent: false }, () => this.#schedule());
        w.on('error', () => { /* the poll still covers us */ });
        this.#watchers.push(w);
      } catch {
        // Not watchable (some network filesystems): rely on the poll.
      }
    }
    this.#poll = setInterval(() => this.#schedule(), options.pollIntervalMs ?? 10_000);
    this.#poll.unref();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Runs the reload now, after any in progress: the latest files win. */
  run(): Promise<void> {
    this.#running = this.#running.then(this.#reload);
    return this.#running;
  }

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.run(), this.#debounceMs);
    this.#debounce.unref();
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
    for (const w of this.#watchers) w.close();
  }
}
