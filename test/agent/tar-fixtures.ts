// Tar archives for tests, written by real tar writers: Python's tarfile (any member, including the
// malicious ones a careful writer refuses to produce from a real tree) and GNU tar.
import { spawnSync } from 'node:child_process';

export interface Member {
  name: string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo' | 'chardev';
  data?: string | Buffer;
  linkname?: string;
  mode?: number;
  mtime?: number;
  /** Extra pax records of this member's extended header. */
  pax?: Record<string, string>;
}

const SCRIPT = `
import io, json, sys, tarfile, base64
spec = json.load(sys.stdin)
fmt = {'pax': tarfile.PAX_FORMAT, 'gnu': tarfile.GNU_FORMAT, 'ustar': tarfile.USTAR_FORMAT}[spec['format']]
out = io.BytesIO()
types = {'file': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE, 'symlink': tarfile.SYMTYPE, 'hardlink': tarfile.LNKTYPE, 'fifo': tarfile.FIFOTYPE, 'chardev': tarfile.CHRTYPE}
with tarfile.open(fileobj=out, mode='w', format=fmt, pax_headers=spec.get('global') or None) as tar:
    for m in spec['members']:
        info = tarfile.TarInfo(m['name'])
        info.type = types[m.get('type', 'file')]
        info.mode = m.get('mode', 0o644)
        info.mtime = m.get('mtime', 1700000000)
        if 'linkname' in m: info.linkname = m['linkname']
        if 'pax' in m: info.pax_headers = m['pax']
        data = base64.b64decode(m.get('data', ''))
        info.size = len(data) if info.type == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
sys.stdout.buffer.write(out.getvalue())
`;

/** `global`: records of a pax global header written before the members. */
export function pythonTar(members: Member[], format: 'pax' | 'gnu' | 'ustar' = 'pax', global?: Record<string, string>): Buffer {
  const spec = {
    format,
    global,
    members: members.map((m) => ({ ...m, data: m.data === undefined ? '' : Buffer.from(m.data).toString('base64') })),
  };
  const r = spawnSync('python3', ['-c', SCRIPT], { input: JSON.stringify(spec), maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`python tarfile failed: ${r.stderr.toString()}`);
  return r.stdout;
}

/** GNU tar over a real directory. */
export function gnuTar(dir: string, format: 'gnu' | 'pax' | 'ustar' = 'gnu'): Buffer {
  const r = spawnSync('tar', ['-C', dir, `--format=${format}`, '-cf', '-', '.'], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`tar failed: ${r.stderr.toString()}`);
  return r.stdout;
}
