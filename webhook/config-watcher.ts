// Hot reload of the injection config file (a ConfigMap mount, watched as lib/watch.ts describes).
// A subPath mount is never updated: mount the whole ConfigMap. A bad new file keeps the old config;
// the failure is reported once per distinct bad content.
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ConfigError, parseYaml } from '../lib/config.ts';
import { ReloadSchedule, type ReloadScheduleOptions } from '../lib/watch.ts';
import { parseInjectionConfig, type InjectionConfig } from './config.ts';

export interface ConfigWatcherEvents {
  reload: [InjectionConfig];
  reloadFailed: [Error];
}

export class ConfigWatcher extends EventEmitter<ConfigWatcherEvents> {
  readonly file: string;
  #current: InjectionConfig;
  #lastText: string | undefined;
  readonly #schedule: ReloadSchedule;

  constructor(file: string, initial: InjectionConfig, options: ReloadScheduleOptions = {}) {
    super();
    this.file = file;
    this.#current = initial;
    this.#schedule = new ReloadSchedule([dirname(file)], () => this.#reloadNow(), options);
    // The text the initial config came from, so the first poll is a no-op.
    void readFile(file, 'utf8').then((t) => { this.#lastText ??= t; }, () => {});
  }

  get current(): InjectionConfig {
    return this.#current;
  }

  /** Re-reads the file now; resolves when done (a no-op when its text did not change). */
  reload(): Promise<void> {
    return this.#schedule.run();
  }

  async #reloadNow(): Promise<void> {
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
    if (!this.#schedule.closed) this.emit('reload', next);
  }

  #fail(key: string, err: Error): void {
    if (key === this.#lastText || this.#schedule.closed) return;
    this.#lastText = key;
    this.emit('reloadFailed', err);
  }

  close(): void {
    this.#schedule.close();
  }
}
