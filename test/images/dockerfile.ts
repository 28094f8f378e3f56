// A small Dockerfile reader and linter for the checks that can run without a Docker engine (no
// hadolint on these machines): stages, their instructions with continuation lines joined, ARG
// substitution in FROM, and the rules our images must meet.

export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface Stage {
  /** `FROM` image as written, and with global ARG defaults substituted. */
  from: string;
  image: string;
  name: string | undefined;
  instructions: Instruction[];
}

export interface Dockerfile {
  /** ARGs declared before the first FROM, with their defaults. */
  globalArgs: Record<string, string | undefined>;
  stages: Stage[];
}

/** Joins `\` continuations and drops comments and blank lines. */
export function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  let buf = '';
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    if (buf === '' && (trimmed === '' || trimmed.startsWith('#'))) continue;
    // Comment lines inside a continued instruction are skipped by Docker too.
    if (buf !== '' && trimmed.startsWith('#')) continue;
    if (buf === '') start = i + 1;
    if (trimmed.endsWith('\\')) {
      buf += `${trimmed.slice(0, -1)} `;
      continue;
    }
    buf += trimmed;
    const m = /^(\S+)\s*(.*)$/s.exec(buf)!;
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start });
    buf = '';
  }
  return out;
}

function parseArg(args: string): [string, string | undefined] {
  const eq = args.indexOf('=');
  return eq < 0 ? [args.trim(), undefined] : [args.slice(0, eq).trim(), args.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1')];
}

export function substitute(value: string, vars: Record<string, string | undefined>): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a: string | undefined, b: string | undefined) => vars[(a ?? b)!] ?? '');
}

export function parseDockerfile(text: string): Dockerfile {
  const globalArgs: Record<string, string | undefined> = {};
  const stages: Stage[] = [];
  for (const ins of instructions(text)) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`line ${ins.line}: cannot read FROM ${ins.args}`);
      stages.push({ from: m[1]!, image: substitute(m[1]!, globalArgs), name: m[2], instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword === 'ARG') {
        const [k, v] = parseArg(ins.args);
        globalArgs[k] = v;
      }
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { globalArgs, stages };
}

/** The JSON array of an exec-form CMD/ENTRYPOINT/RUN, or undefined for shell form. */
export function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    const v = JSON.parse(args) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined;
  } catch {
    return undefined;
  }
}

/** `COPY [--from=x] [--chown=..] src... dest` → { from, sources, dest }. */
export function copyArgs(args: string): { from: string | undefined; sources: string[]; dest: string } {
  const words = execForm(args) ?? args.split(/\s+/);
  let from: string | undefined;
  const rest: string[] = [];
  for (const w of words) {
    if (w.startsWith('--from=')) from = w.slice('--from='.length);
    else if (!w.startsWith('--')) rest.push(w);
  }
  return { from, sources: rest.slice(0, -1), dest: rest.at(-1)! };
}

export function labels(stage: Stage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const ins of stage.instructions.filter((i) => i.keyword === 'LABEL')) {
    for (const m of ins.args.matchAll(/([A-Za-z0-9_.\-/]+)=("(?:[^"\\]|\\.)*"|\S+)/g)) {
      out[m[1]!] = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!;
    }
  }
  return out;
}

const SECRET_NAME = /(SECRET|TOKEN|PASSW(OR)?D|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL|AUTH)/i;
const SECRET_VALUE = /(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|gh[pousr]_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9]{20,})/;

/** ENV lines: `ENV A=1 B=2` or the legacy `ENV A 1`. */
function envPairs(args: string): [string, string][] {
  if (!/^[^\s=]+=/.test(args)) {
    const m = /^(\S+)\s+(.*)$/.exec(args);
    return m ? [[m[1]!, m[2]!]] : [];
  }
  return [...args.matchAll(/([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)/g)].map((m) => [m[1]!, m[2]!]);
}

/**
 * The rules every image Dockerfile meets; returns the problems found (empty: compliant).
 *  - every FROM is an earlier stage, or an image pinned by digest or by an exact version tag;
 *  - the final stage runs as a numeric, non-zero USER (uid and gid);
 *  - no ADD of a URL (unverified download into the image);
 *  - no ENV or ARG that looks like a secret (image layers are public to whoever pulls them);
 *  - CMD and ENTRYPOINT in exec form (so the program is PID 1 and gets SIGTERM).
 */
export function lintDockerfile(text: string): string[] {
  const problems: string[] = [];
  const df = parseDockerfile(text);
  if (df.stages.length === 0) return ['no FROM'];
  const names = new Set<string>();
  for (const [k, v] of Object.entries(df.globalArgs)) {
    if (SECRET_NAME.test(k) || (v && SECRET_VALUE.test(v))) problems.push(`ARG ${k} looks like a secret`);
  }
  for (const stage of df.stages) {
    const image = stage.image;
    if (names.has(image)) {
      // an earlier stage
    } else if (/@sha256:[0-9a-f]{64}$/.test(image)) {
      // pinned by digest
    } else {
      const tag = /:([^/:@]+)$/.exec(image)?.[1];
      if (!tag) problems.push(`FROM ${stage.from}: no tag (means latest)`);
      else if (tag === 'latest' || !/^v?\d+\.\d+\.\d+/.test(tag)) problems.push(`FROM ${stage.from}: tag ${tag} is not an exact version`);
      for (const m of stage.from.matchAll(/\$\{?([A-Za-z_][A-Za-z0-9_]*)/g)) {
        if (!df.globalArgs[m[1]!]) problems.push(`FROM ${stage.from}: ARG ${m[1]} has no default before the first FROM`);
      }
    }
    if (stage.name) names.add(stage.name);
    for (const ins of stage.instructions) {
      if (ins.keyword === 'ADD' && /(^|\s)(https?|ftp|git):\/\/|(^|\s)git@/.test(ins.args)) problems.push(`line ${ins.line}: ADD of a URL`);
      if (ins.keyword === 'ARG') {
        const [k, v] = parseArg(ins.args);
        if (SECRET_NAME.test(k) || (v && SECRET_VALUE.test(v))) problems.push(`line ${ins.line}: ARG ${k} looks like a secret`);
      }
      if (ins.keyword === 'ENV') {
        for (const [k, v] of envPairs(ins.args)) {
          if (SECRET_NAME.test(k) || SECRET_VALUE.test(v)) problems.push(`line ${ins.line}: ENV ${k} looks like a secret`);
        }
      }
      if ((ins.keyword === 'CMD' || ins.keyword === 'ENTRYPOINT') && !execForm(ins.args)) {
        problems.push(`line ${ins.line}: ${ins.keyword} is not in exec form`);
      }
    }
  }
  const final = df.stages.at(-1)!;
  const user = final.instructions.filter((i) => i.keyword === 'USER').at(-1);
  if (!user) problems.push('final stage has no USER (runs as root)');
  else {
    const m = /^(\d+)(?::(\d+))?$/.exec(user.args);
    if (!m) problems.push(`USER ${user.args} is not numeric (runAsNonRoot cannot verify a name)`);
    else if (Number(m[1]) === 0 || (m[2] !== undefined && Number(m[2]) === 0)) problems.push(`USER ${user.args} is root`);
  }
  return problems;
}

/** .dockerignore semantics enough for our checks: globs with `*`, `**`, `?`, `!` negation, last match wins. */
export function dockerignoreMatcher(text: string): (path: string) => boolean {
  const rules = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).map((l) => {
    const negate = l.startsWith('!');
    const pattern = (negate ? l.slice(1) : l).replace(/^\/+/, '').replace(/\/+$/, '');
    let re = '';
    for (let i = 0; i < pattern.length; i++) {
      const c = pattern[i]!;
      if (c === '*' && pattern[i + 1] === '*') {
        re += pattern[i + 2] === '/' ? '(?:.*/)?' : '.*';
        i += pattern[i + 2] === '/' ? 2 : 1;
      } else if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    return { negate, re: new RegExp(`^${re}$`) };
  });
  return (path: string) => {
    const clean = path.replace(/^\.?\/+/, '').replace(/\/+$/, '');
    // A path is excluded when it or one of its parent directories matches.
    const parts = clean.split('/');
    let excluded = false;
    for (let n = 1; n <= parts.length; n++) {
      const prefix = parts.slice(0, n).join('/');
      for (const r of rules) if (r.re.test(prefix)) excluded = !r.negate;
      if (excluded && n < parts.length) return true;
    }
    return excluded;
  };
}
