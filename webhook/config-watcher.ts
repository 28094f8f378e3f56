// Hot reload of the injection config file (a ConfigMap mount).
//
// The kubelet updates a ConfigMap volume the way it updates a Secret: a new timestamped directory
// and an atomic swap of the `..data` symlink (kubernetes pkg/volume/util/atomic_writer.go), so the
// directory is watched, not the file. A subPath mount is never updated: mount the whole ConfigMap.
// A bad new file keeps the old config; the failure is reported once per distinct bad content.
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../lib/config.ts';
import { parseInjectionConfig, type InjectionConfig } from './config.ts';

export interface ConfigWatcherEvents {
  reload: [InjectionConfig];
  reloadFailed: [Error];
}

export interface ConfigWatcherOptions {
  pollIntervalMs?: number;
  debounceMs?: number;
}

export class ConfigWatcher extends EventEmitter<ConfigWatcherEvents> {
  readonly file: string;
  #current: InjectionConfig;
  #lastText: string | undefined;
  #watcher: FSWatcher | undefined;
  #poll: NodeJS.Timeout;
  #debounce: NodeJS.Timeout | undefined;
  #reloading: Promise<void> = Promise.resolve();
  #closed = false;
  readonly #debounceMs: number;

  constructor(file: string, initial: InjectionConfig, options: ConfigWatcherOptions = {}) {
    super();
    this.file = file;
    this.#current = initial;
    this.#debounceMs = options.debounceMs ?? 50;
    try {
      this.#watcher = watch(dirname(file), { persistent: false }, () => this.#schedule());
      this.#watcher.on('error', () => { /* the poll still covers us */ });
    } catch {
      // Not watchable: rely on the poll.
    }
    this.#poll = setInterval(() => this.#schedule(), options.pollIntervalMs ?? 10_000);
    this.#poll.unref();
    // The text the initial config came from, so the first poll is a no-op.
    void readFile(file, 'utf8').then((t) => { this.#lastText ??= t; }, () => {});
  }

  get current(): InjectionConfig {
    return this.#current;
  }

  #schedule(): void {
    if (this.#closed) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => void this.reload(), this.#debounceMs);
    this.#debounce.unref();
  }

  /** Re-reads the file now; resolves when done (a no-op when its text did not change). */
  reload(): Promise<void> {
    const run = async () => {
      let text: string;
      try {
        text = await readFile(this.file, 'utf8');
      } catch (err) {
        // Mid-swap or removed: the poll comes back; report only a persistent absence once.
        return this.#fail(`\0unreadable:${(err as NodeJS.ErrnoException).code}`, new ConfigError(`injection config ${this.file}`, [
          { field: '(file)', value: this.file, message: `cannot read: ${(err as Error).message}` },
        ]));
      }
      if (text === this.#lastText) return;
      let next: InjectionConfig;
      try {
        let parsed: unknown;
        try {
          parsed = parseYaml(text, { prettyErrors: true, uniqueKeys: true }) ?? {};
        } catch (err) {
          throw new ConfigError(`injection config ${this.file}`, [{ field: '(file)', value: this.file, message: `not valid YAML: ${(err as Error).message.split('\n')[0]}` }]);
        }
        next = parseInjectionConfig(parsed, `injection config ${this.file}`);
      } catch (err) {
        return this.#fail(text, err as Error);
      }
      this.#lastText = text;
      this.#current = next;
      if (!this.#closed) this.emit('reload', next);
    };
    this.#reloading = this.#reloading.then(run);
    return this.#reloading;
  }

  #fail(key: string, err: Error): void {
    if (key === this.#lastText || this.#closed) return;
    this.#lastText = key;
    this.emit('reloadFailed', err);
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
    this.#watcher?.close();
  }
}
