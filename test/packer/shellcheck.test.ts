// shellcheck on every shell script in the repository: files ending in .sh and files whose first
// line is a sh/bash shebang (e.g. .ci/run), outside node_modules, .git and build output.
import t from 'tap';
import { execFile } from 'node:child_process';
import { openSync, readSync, closeSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { toolSkipReason } from '../images/tools.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const IGNORED_DIRS = new Set(['node_modules', '.git', 'dist', '.tap', 'coverage']);

const skip = toolSkipReason('shellcheck', 'REQUIRE_SHELLCHECK', 'apt-get install shellcheck');

function firstLine(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(128);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).toString('latin1').split('\n')[0] ?? '';
  } finally {
    closeSync(fd);
  }
}

function shellScripts(dir = ROOT): string[] {
  const found: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) {
      if (!IGNORED_DIRS.has(e.name)) found.push(...shellScripts(path));
    } else if (e.isFile() && (e.name.endsWith('.sh') || /^#!.*\b(ba|da)?sh\b/.test(firstLine(path)))) {
      found.push(path);
    }
  }
  return found.sort();
}

t.test('every shell script passes shellcheck', { skip }, async (t) => {
  const scripts = shellScripts();
  const names = scripts.map((s) => relative(ROOT, s));
  for (const expected of ['packer/scripts/install-gvisor.sh', 'packer/scripts/configure-containerd-runsc.sh']) {
    t.ok(names.includes(expected), `${expected} is checked`);
  }
  for (const script of scripts) {
    const r = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile('shellcheck', ['--external-sources', script], { timeout: 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: `${stdout}${stderr}` });
      });
    });
    t.equal(r.code, 0, `${relative(ROOT, script)}\n${r.out}`);
  }
});

t.test('shellcheck does flag a broken script (the check can fail)', { skip }, async (t) => {
  const r = await new Promise<number>((resolve) => {
    const child = execFile('shellcheck', ['-s', 'bash', '-'], (err) => resolve(err ? (typeof err.code === 'number' ? err.code : 1) : 0));
    child.stdin!.end('#!/bin/bash\nrm -rf $DIR/*\n');
  });
  t.not(r, 0);
});
