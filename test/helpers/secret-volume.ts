// Writes files the way the kubelet updates a mounted Secret or ConfigMap (AtomicWriter,
// kubernetes pkg/volume/util/atomic_writer.go): a new `..<timestamp>` directory, a `..data_tmp`
// symlink to it renamed over `..data` (the atomic step), user-visible names that are symlinks
// through `..data`, then the old directory removed.
import { mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync, existsSync, lstatSync } from 'node:fs';
import { join } from 'node:path';

let counter = 0;

export function writeSecretVolume(dir: string, files: Record<string, string | Buffer>): void {
  mkdirSync(dir, { recursive: true });
  const stamp = `..${new Date().toISOString().replace(/[:.]/g, '_')}.${process.pid}.${counter++}`;
  const tsDir = join(dir, stamp);
  mkdirSync(tsDir);
  for (const [name, content] of Object.entries(files)) writeFileSync(join(tsDir, name), content, { mode: 0o644 });
  const dataLink = join(dir, '..data');
  let old: string | undefined;
  try {
    old = readlinkSync(dataLink);
  } catch {
    old = undefined;
  }
  const tmpLink = join(dir, '..data_tmp');
  rmSync(tmpLink, { force: true });
  symlinkSync(stamp, tmpLink);
  renameSync(tmpLink, dataLink);
  for (const name of Object.keys(files)) {
    const visible = join(dir, name);
    if (!existsSync(visible) && !isLink(visible)) symlinkSync(join('..data', name), visible);
  }
  if (old && old !== stamp) rmSync(join(dir, old), { recursive: true, force: true });
}

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
