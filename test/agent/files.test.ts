import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync, readdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { call, startAgent, tempDir } from './harness.ts';
import { gnuTar, pythonTar } from './tar-fixtures.ts';

const code = (r: { json: <T>() => T }) => r.json<{ error: { code: string } }>().error.code;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('PUT writes atomically with a mode and creates parents; GET streams it back byte-exact', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const data = randomBytes(3 * 1024 * 1024 + 7);
  const put = await call(a.target, '/files/src/deep/tool.bin?mode=0755', { method: 'PUT', body: data });
  t.equal(put.status, 201);
  t.same(put.json(), { path: 'src/deep/tool.bin', size: data.length, mode: '0755' });
  t.equal(statSync(join(a.root, 'src/deep/tool.bin')).mode & 0o777, 0o755);
  const get = await call(a.target, '/files/src/deep/tool.bin');
  t.equal(get.status, 200);
  t.equal(get.headers['content-length'], String(data.length));
  t.equal(get.headers['x-file-mode'], '0755');
  t.equal(sha256(get.body), sha256(data));

  const again = await call(a.target, '/files/src/deep/tool.bin', { method: 'PUT', body: 'short' });
  t.equal(again.status, 200, 'replacing answers 200');
  t.equal(again.json().mode, '0755', 'an existing file keeps its mode');
  t.equal(readFileSync(join(a.root, 'src/deep/tool.bin'), 'utf8'), 'short');
  t.same(readdirSync(join(a.root, 'src/deep')), ['tool.bin'], 'no temporary file left behind');

  const utf8Name = await call(a.target, `/files/${encodeURIComponent('naïve file.txt')}`, { method: 'PUT', body: 'x' });
  t.equal(utf8Name.status, 201);
  t.ok(existsSync(join(a.root, 'naïve file.txt')));
});

t.test('a failed upload leaves the old file and no temporary file', async (t) => {
  const a = await startAgent({ AGENT_MAX_FILE_BYTES: '1000' });
  t.teardown(a.close);
  writeFileSync(join(a.root, 'keep.txt'), 'original');
  const big = await call(a.target, '/files/keep.txt', { method: 'PUT', body: Buffer.alloc(5000) });
  t.equal(big.status, 413);
  t.equal(code(big), 'WS_ERR_PAYLOAD_TOO_LARGE');
  t.equal(readFileSync(join(a.root, 'keep.txt'), 'utf8'), 'original');
  t.same(readdirSync(a.root), ['keep.txt']);
  // A chunked upload (no content-length) refused part-way still gets its answer, not a reset.
  const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: a.target.port, method: 'PUT', path: '/files/keep.txt', agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    for (let i = 0; i < 20; i++) req.write(Buffer.alloc(500));
    req.end();
  });
  t.equal(chunked.status, 413);
  t.match(JSON.parse(chunked.body), { error: { code: 'WS_ERR_PAYLOAD_TOO_LARGE' } });
  t.equal(readFileSync(join(a.root, 'keep.txt'), 'utf8'), 'original');
  const bad = await call(a.target, '/files/x?mode=4755', { method: 'PUT', body: 'x' });
  t.equal(bad.status, 400, 'setuid refused');
  t.equal(code(bad), 'WS_ERR_VALIDATION');
});

t.test('list, delete, and the type mismatches', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  mkdirSync(join(a.root, 'dir/sub'), { recursive: true });
  writeFileSync(join(a.root, 'dir/a.txt'), 'aaa', { mode: 0o600 });
  symlinkSync('a.txt', join(a.root, 'dir/link'));
  const list = await call(a.target, '/files/dir?list');
  t.equal(list.status, 200);
  const entries = list.json<{ entries: { name: string; type: string; size: number; mode: string; mtime: string }[] }>().entries;
  t.same(entries.map((e) => [e.name, e.type]), [['a.txt', 'file'], ['link', 'symlink'], ['sub', 'directory']]);
  t.match(entries[0], { size: 3, mode: '0600', mtime: /^\d{4}-\d\d-\d\dT/ });
  t.equal((await call(a.target, '/files?list')).json<{ entries: unknown[] }>().entries.length, 1, 'the root lists too');

  t.equal(code(await call(a.target, '/files/dir')), 'WS_ERR_CONFLICT', 'GET on a directory');
  t.equal(code(await call(a.target, '/files/dir/a.txt?list')), 'WS_ERR_CONFLICT', 'list on a file');
  t.equal((await call(a.target, '/files/nope.txt')).status, 404);
  t.equal(code(await call(a.target, '/files/dir', { method: 'PUT', body: 'x' })), 'WS_ERR_CONFLICT', 'PUT over a directory');

  t.equal((await call(a.target, '/files/dir/link', { method: 'DELETE' })).status, 204);
  t.ok(existsSync(join(a.root, 'dir/a.txt')), 'deleting a symlink leaves its target');
  t.equal(code(await call(a.target, '/files/dir', { method: 'DELETE' })), 'WS_ERR_CONFLICT', 'non-empty dir needs ?recursive');
  t.equal((await call(a.target, '/files/dir/sub', { method: 'DELETE' })).status, 204, 'empty dir removed');
  t.equal((await call(a.target, '/files/dir?recursive', { method: 'DELETE' })).status, 204);
  t.notOk(existsSync(join(a.root, 'dir')));
  t.equal((await call(a.target, '/files/dir', { method: 'DELETE' })).status, 404);
  t.equal(code(await call(a.target, '/files/', { method: 'DELETE' })), 'WS_ERR_CONFLICT', 'the root cannot be deleted');
  t.equal((await call(a.target, '/files/x', { method: 'PATCH' })).status, 405);
});

t.test('every confinement escape is refused with WS_ERR_PATH_ESCAPE, and nothing outside changes', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const outside = tempDir('ws-outside-');
  writeFileSync(join(outside, 'secret.txt'), 'outside secret');
  symlinkSync('/etc', join(a.root, 'etc-link'));
  symlinkSync(outside, join(a.root, 'out-dir'));
  symlinkSync(join(outside, 'secret.txt'), join(a.root, 'secret-link'));
  mkdirSync(join(a.root, 'inner'));
  symlinkSync('../../', join(a.root, 'inner/up'));
  symlinkSync('nowhere/at/all', join(a.root, 'dangling'));

  const escapes: [string, string][] = [
    ['..', '/files/../etc/passwd'],
    ['.. in the middle', '/files/inner/../../etc/passwd'],
    ['encoded ..', '/files/%2e%2e/etc/passwd'],
    ['encoded slash and ..', '/files/inner%2F..%2F..%2Fetc%2Fpasswd'],
    ['absolute', '//etc/passwd'.replace(/^/, '/files')],
    ['encoded absolute', '/files/%2Fetc%2Fpasswd'],
    ['symlink to /etc', '/files/etc-link/passwd'],
    ['symlink in a parent directory', '/files/out-dir/secret.txt'],
    ['symlink to a file outside', '/files/secret-link'],
    ['relative symlink climbing out', '/files/inner/up/etc/passwd'],
    ['dangling symlink', '/files/dangling'],
  ];
  // DELETE removes a final symlink itself (its target is never touched), so those two cases are
  // checked for GET and PUT only, and DELETE is checked below.
  const linkItself = new Set(['symlink to a file outside', 'dangling symlink']);
  for (const [name, path] of escapes) {
    for (const method of ['GET', 'PUT', 'DELETE'] as const) {
      if (method === 'DELETE' && linkItself.has(name)) continue;
      const r = await call(a.target, path, { method, body: method === 'PUT' ? 'pwned' : undefined });
      t.equal(r.status, 400, `${name}: ${method} refused`);
      t.equal(code(r), 'WS_ERR_PATH_ESCAPE', `${name}: ${method} code`);
      if (name === 'symlink to /etc') t.match(r.json<{ error: { message: string } }>().error.message, /outside the workspace/);
    }
  }
  for (const path of ['/files/etc-link?list', '/files/out-dir?list', '/files/inner/up?list']) {
    t.equal(code(await call(a.target, path)), 'WS_ERR_PATH_ESCAPE', `list ${path}`);
  }
  t.equal(code(await call(a.target, '/files/out-dir/new/file.txt', { method: 'PUT', body: 'x' })), 'WS_ERR_PATH_ESCAPE', 'no parent created outside');
  t.equal(readFileSync(join(outside, 'secret.txt'), 'utf8'), 'outside secret');
  t.same(readdirSync(outside), ['secret.txt'], 'nothing created outside');
  t.ok(lstatSync(join(a.root, 'secret-link')).isSymbolicLink(), 'the link itself is untouched');
  t.equal((await call(a.target, '/files/secret-link', { method: 'DELETE' })).status, 204, 'DELETE removes the link itself');
  t.equal(readFileSync(join(outside, 'secret.txt'), 'utf8'), 'outside secret', 'its target outside is untouched');
  t.equal((await call(a.target, '/files/dangling', { method: 'DELETE' })).status, 204);

  // Symlinks that stay inside are fine.
  writeFileSync(join(a.root, 'inner/real.txt'), 'inside');
  symlinkSync('inner', join(a.root, 'inner-link'));
  t.equal((await call(a.target, '/files/inner-link/real.txt')).body.toString(), 'inside');
  t.equal((await call(a.target, '/files/inner-link/new.txt', { method: 'PUT', body: 'through a link' })).status, 201);
  t.equal(readFileSync(join(a.root, 'inner/new.txt'), 'utf8'), 'through a link');
});

t.test('batch upload: GNU, pax and ustar archives with long names, modes, symlinks inside', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const src = tempDir('ws-tarsrc-');
  const longDir = 'd'.repeat(120);
  mkdirSync(join(src, 'pkg', longDir), { recursive: true });
  const blob = randomBytes(200_000);
  writeFileSync(join(src, 'pkg', longDir, `${'f'.repeat(130)}.bin`), blob);
  writeFileSync(join(src, 'pkg/run.sh'), '#!/bin/sh\necho ok\n', { mode: 0o755 });
  writeFileSync(join(src, 'pkg/ünïcode.txt'), 'ü');
  symlinkSync('run.sh', join(src, 'pkg/run-link'));
  // Names over 100 bytes need GNU long-name entries or pax headers (plain ustar cannot hold them).
  for (const format of ['gnu', 'pax'] as const) {
    const tar = gnuTar(src, format);
    const dest = `up-${format}`;
    const r = await call(a.target, `/files/${dest}`, { method: 'POST', body: tar, headers: { 'content-type': 'application/x-tar' } });
    t.equal(r.status, 200, `${format}: accepted`);
    t.match(r.json(), { files: 3, symlinks: 1, bytes: blob.length + 18 + 2 });
    t.equal(sha256(readFileSync(join(a.root, dest, 'pkg', longDir, `${'f'.repeat(130)}.bin`))), sha256(blob), `${format}: long path, exact bytes`);
    t.equal(statSync(join(a.root, dest, 'pkg/run.sh')).mode & 0o777, 0o755, `${format}: mode kept`);
    t.equal(readFileSync(join(a.root, dest, 'pkg/ünïcode.txt'), 'utf8'), 'ü', `${format}: UTF-8 name`);
    t.equal(readlinkSync(join(a.root, dest, 'pkg/run-link')), 'run.sh', `${format}: symlink inside kept`);
  }
  const ustar = pythonTar([{ name: `${'p'.repeat(90)}/${'n'.repeat(90)}.txt`, data: 'split name' }, { name: 'exec.sh', data: 'x', mode: 0o700 }], 'ustar');
  t.equal((await call(a.target, '/files/ustar', { method: 'POST', body: ustar, headers: { 'content-type': 'application/x-tar' } })).status, 200, 'ustar: accepted');
  t.equal(readFileSync(join(a.root, 'ustar', 'p'.repeat(90), `${'n'.repeat(90)}.txt`), 'utf8'), 'split name', 'ustar: prefix + name joined');
  t.equal(statSync(join(a.root, 'ustar/exec.sh')).mode & 0o777, 0o700, 'ustar: mode kept');
  const py = pythonTar([{ name: 'x/'.repeat(60) + 'deep.txt', data: 'deep' }, { name: 'top.txt', data: 'top', mtime: 1_600_000_000 }], 'pax');
  const r = await call(a.target, '/files', { method: 'POST', body: py, headers: { 'content-type': 'application/x-tar' } });
  t.equal(r.status, 200);
  t.equal(readFileSync(join(a.root, 'x/'.repeat(60) + 'deep.txt'), 'utf8'), 'deep');
  t.equal(statSync(join(a.root, 'top.txt')).mtimeMs, 1_600_000_000_000, 'mtime applied');
});

t.test('batch upload: every escape and unsafe entry is refused, nothing written outside', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const outside = tempDir('ws-outside-');
  mkdirSync(join(a.root, 'up'));
  symlinkSync(outside, join(a.root, 'up/out-dir'));
  const cases: [string, Parameters<typeof pythonTar>[0], string][] = [
    ['absolute path', [{ name: `${outside}/abs.txt`, data: 'x' }], 'WS_ERR_PATH_ESCAPE'],
    ['.. path', [{ name: '../escape.txt', data: 'x' }], 'WS_ERR_PATH_ESCAPE'],
    ['nested ..', [{ name: 'a/../../escape.txt', data: 'x' }], 'WS_ERR_PATH_ESCAPE'],
    ['through an existing symlink', [{ name: 'out-dir/x.txt', data: 'x' }], 'WS_ERR_PATH_ESCAPE'],
    ['symlink to an absolute path', [{ name: 'l', type: 'symlink', linkname: '/etc' }], 'WS_ERR_PATH_ESCAPE'],
    ['symlink climbing out', [{ name: 'a/l', type: 'symlink', linkname: '../../..' }], 'WS_ERR_PATH_ESCAPE'],
    ['symlink then write through it', [{ name: 'l2', type: 'symlink', linkname: '../..' }, { name: 'l2/x.txt', data: 'x' }], 'WS_ERR_PATH_ESCAPE'],
    ['hard link', [{ name: 'h', type: 'hardlink', linkname: '/etc/passwd' }], 'WS_ERR_INVALID_TAR'],
    ['FIFO', [{ name: 'p', type: 'fifo' }], 'WS_ERR_INVALID_TAR'],
    ['device', [{ name: 'c', type: 'chardev' }], 'WS_ERR_INVALID_TAR'],
  ];
  for (const [name, members, expected] of cases) {
    const r = await call(a.target, '/files/up', { method: 'POST', body: pythonTar(members), headers: { 'content-type': 'application/x-tar' } });
    t.equal(r.status, 400, `${name}: 400`);
    t.equal(code(r), expected, `${name}: ${expected}`);
  }
  t.same(readdirSync(outside), [], 'nothing written outside');
  t.notOk(existsSync(join(a.root, '..', 'escape.txt')));

  const notTar = await call(a.target, '/files/up', { method: 'POST', body: 'hello', headers: { 'content-type': 'application/x-tar' } });
  t.equal(code(notTar), 'WS_ERR_INVALID_TAR');
  const wrongType = await call(a.target, '/files/up', { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } });
  t.equal(wrongType.status, 415);
});

t.test('batch upload: per-file, per-request and entry-count caps', async (t) => {
  const a = await startAgent({ AGENT_MAX_FILE_BYTES: '10000', AGENT_MAX_UPLOAD_BYTES: '60000', AGENT_MAX_TAR_ENTRIES: '5' });
  t.teardown(a.close);
  const post = (body: Buffer) => call(a.target, '/files/up', { method: 'POST', body, headers: { 'content-type': 'application/x-tar' } });
  const bigFile = await post(pythonTar([{ name: 'big', data: Buffer.alloc(20_000) }]));
  t.equal(bigFile.status, 413, 'file over the per-file cap');
  const many = await post(pythonTar(Array.from({ length: 8 }, (_, i) => ({ name: `f${i}`, data: Buffer.alloc(9000) }))));
  t.equal(many.status, 413, 'archive over the per-request cap');
  const count = await post(pythonTar(Array.from({ length: 6 }, (_, i) => ({ name: `n${i}`, data: 'x' }))));
  t.equal(count.status, 400, 'too many entries');
  t.equal(code(count), 'WS_ERR_INVALID_TAR');
  const ok = await post(pythonTar(Array.from({ length: 5 }, (_, i) => ({ name: `ok${i}`, data: Buffer.alloc(9000) }))));
  t.equal(ok.status, 200, 'within every cap');
});

t.test('an invalid tar upload is refused with the connection kept usable (the body is drained, not waited out)', async (t) => {
  const a = await startAgent();
  t.teardown(() => a.close());
  // Garbage that fails on the first header, followed by far more body than one read takes.
  const garbage = Buffer.concat([Buffer.from('garbage'.repeat(200)), Buffer.alloc(512 * 1024, 7)]);
  const res = await call(a.target, '/files/', { method: 'POST', headers: { 'content-type': 'application/x-tar', connection: 'keep-alive' }, body: garbage });
  t.equal(res.status, 400);
  t.equal(res.json<{ error: { code: string } }>().error.code, 'WS_ERR_INVALID_TAR');
  t.not(res.headers.connection, 'close', 'the rest of the body was read, so the connection stays open');
});

// `k/up -> ..` passes the check (it stays inside), and so did `k/esc -> up/..`,
// which the text resolves to `k` but the file system to the root's parent, through `up`.
t.test('tar upload: a symlink chain climbing out through another link is refused, in either order', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const post = (members: Parameters<typeof pythonTar>[0]) => call(a.target, '/files/', { method: 'POST', body: pythonTar(members), headers: { 'content-type': 'application/x-tar' } });
  for (const [name, members] of [
    ['link first', [{ name: 'k/up', type: 'symlink', linkname: '..' }, { name: 'k/esc', type: 'symlink', linkname: 'up/..' }]],
    ['link last', [{ name: 'k/esc', type: 'symlink', linkname: 'up/..' }, { name: 'k/up', type: 'symlink', linkname: '..' }]],
    ['deeper', [{ name: 'k/a/up', type: 'symlink', linkname: '../..' }, { name: 'k/a/esc', type: 'symlink', linkname: 'up/x/../..' }]],
  ] as [string, Parameters<typeof pythonTar>[0]][]) {
    const r = await post(members);
    t.equal(r.status, 400, `${name}: 400`);
    t.equal(code(r), 'WS_ERR_PATH_ESCAPE', `${name}: WS_ERR_PATH_ESCAPE`);
  }
  t.notOk(existsSync(join(a.root, 'k/esc')), 'no escaping link was made');
  const ok = await post([{ name: 'j/up', type: 'symlink', linkname: '..' }, { name: 'j/sib', type: 'symlink', linkname: '../j/up' }, { name: 'j/f', type: 'symlink', linkname: './x/y' }]);
  t.equal(ok.status, 200, 'leading .. and plain names stay accepted');
});

// a name longer than the file system takes was an ENAMETOOLONG from deep inside,
// answered 500.
t.test('very long names answer 400, not 500, on every /files operation', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const long = 'n'.repeat(256);
  const deep = `${'d/'.repeat(2100)}f`;
  for (const [what, path] of [['a 256-byte name', long], ['a 4 KiB path', deep], ['a long parent', `${long}/f`]]) {
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const r = await call(a.target, `/files/${path}`, { method, ...(method === 'PUT' ? { body: 'x' } : {}) });
      t.equal(r.status, 400, `${method} ${what}: 400`);
      t.equal(code(r), 'WS_ERR_VALIDATION');
    }
    const list = await call(a.target, `/files/${path}?list`);
    t.equal(list.status, 400, `list ${what}: 400`);
  }
  const tar = await call(a.target, '/files/', { method: 'POST', body: pythonTar([{ name: `x/${long}`, data: 'x' }]), headers: { 'content-type': 'application/x-tar' } });
  t.equal(tar.status, 400, 'tar entry with a long name: 400');
  t.equal(code(tar), 'WS_ERR_VALIDATION');
});

// a command swapping a directory and a symlink to outside the root in a loop made
// reads return the outside file and writes land outside. The opened file's real location (from the
// kernel, after the open) must be inside, so a swap that wins the race is refused instead.
t.test('a racing swapper (directory <-> symlink to outside) never gets a read or a write outside the root', async (t) => {
  const a = await startAgent();
  t.teardown(a.close);
  const outside = tempDir('ws-outside-');
  writeFileSync(join(outside, 'secret.txt'), 'OUTSIDE');
  mkdirSync(join(a.root, 'real'));
  writeFileSync(join(a.root, 'real', 'secret.txt'), 'inside');
  symlinkSync(outside, join(a.root, 'evil'));
  // `sw` flips between the real directory and the link to outside as fast as mv can.
  // A PUT that finds `sw` missing creates it as a directory: the loop then clears it and goes on.
  const swapper = spawn('sh', ['-c', 'cd "$1"; while :; do [ -d real ] || mkdir real; [ -L evil ] || ln -s "$2" evil; mv -T real sw 2>/dev/null || rm -rf sw; mv -T sw real 2>/dev/null; mv -T evil sw 2>/dev/null || rm -rf sw; mv -T sw evil 2>/dev/null; done', 'sh', a.root, outside], { stdio: 'ignore' });
  t.teardown(() => { swapper.kill('SIGKILL'); });
  const seen = new Map<string, number>();
  const deadline = Date.now() + 3000;
  let writes = 0;
  while (Date.now() < deadline) {
    const r = await call(a.target, '/files/sw/secret.txt');
    const key = r.status === 200 ? r.body.toString() : String(r.status);
    seen.set(key, (seen.get(key) ?? 0) + 1);
    await call(a.target, `/files/sw/w${writes++}.txt`, { method: 'PUT', body: 'x' });
  }
  swapper.kill('SIGKILL');
  t.comment(`reads: ${JSON.stringify(Object.fromEntries(seen))}; writes tried: ${writes}`);
  t.notOk(seen.has('OUTSIDE'), 'no read returned the outside file');
  t.same(readdirSync(outside), ['secret.txt'], 'no write landed outside');
});
