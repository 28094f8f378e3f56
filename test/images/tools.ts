// External tools the image and packer checks drive (packer, shellcheck, runsc). A missing tool
// skips its checks loudly, or fails them when the matching REQUIRE_* variable is 1, so a CI
// machine without the tool cannot pass silently.
import { spawnSync } from 'node:child_process';

const warned = new Set<string>();

export function toolPresent(command: string, versionArgs: string[] = ['--version']): boolean {
  const r = spawnSync(command, versionArgs, { stdio: 'ignore', timeout: 30_000 });
  return r.error === undefined && r.status === 0;
}

/**
 * `undefined` when `command` can run, else the skip reason (printed once, framed, on stderr).
 * Throws when `requireEnv` is set to 1.
 */
export function toolSkipReason(command: string, requireEnv: string, installHint: string, versionArgs?: string[]): string | undefined {
  if (toolPresent(command, versionArgs)) return undefined;
  const reason = `${command} not found: its checks are SKIPPED (${installHint})`;
  if (process.env[requireEnv] === '1') throw new Error(`${requireEnv}=1 but ${reason}`);
  if (!warned.has(command)) {
    warned.add(command);
    process.stderr.write(`\n${'!'.repeat(72)}\n!! ${reason}\n${'!'.repeat(72)}\n\n`);
  }
  return reason;
}
