// The JSON Patch (RFC 6902) between the raw original and the mutated Pod.
//
// This is fast-json-patch's `compare` (duplex.js `_generate`) operation for operation, minus one
// thing: `compare` deep-clones every value it emits (a JSON round trip per operation), which was
// half of the webhook's CPU time per review in test/bench/webhook.ts. The values here are
// serialized at once and never mutated, so they are emitted as they are. Equality with `compare`,
// operation for operation, is checked over every golden Pod and every property-test Pod
// (test/webhook/patch.test.ts).
//
// Measured against `compare` in the webhook itself (both servers side by side, 8 interleaved
// rounds of test/bench/webhook.ts's load, medians, 2026-12-05): 329 µs of server CPU per /mutate
// request with this diff, 431 µs with `compare` (+31%), max rate 1967 against 1370 req/s; the
// project's bar for keeping hand-written code over the library is 20% of max throughput. The
// bench re-measures the in-process difference on every run (test/bench/README.md, "webhook").

export interface Operation {
  op: 'add' | 'remove' | 'replace';
  path: string;
  value?: unknown;
}

/** RFC 6901 escaping of one path segment. */
function escape(key: string): string {
  if (key.indexOf('/') === -1 && key.indexOf('~') === -1) return key;
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

function keysOf(value: object): string[] {
  if (Array.isArray(value)) {
    const keys = new Array<string>(value.length);
    for (let i = 0; i < value.length; i++) keys[i] = String(i);
    return keys;
  }
  return Object.keys(value);
}

const hasOwn = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);

function generate(mirror: Record<string, unknown>, obj: Record<string, unknown>, patches: Operation[], path: string): void {
  // Shared subtrees (inject copies only what it changes) are skipped whole.
  if (obj === mirror) return;
  const newKeys = keysOf(obj);
  const oldKeys = keysOf(mirror);
  let deleted = false;
  // Backwards over the old keys, so array removals keep later indexes valid (as compare does).
  for (let t = oldKeys.length - 1; t >= 0; t--) {
    const key = oldKeys[t]!;
    const oldVal = mirror[key];
    if (hasOwn(obj, key) && !(obj[key] === undefined && oldVal !== undefined && !Array.isArray(obj))) {
      const newVal = obj[key];
      if (typeof oldVal === 'object' && oldVal !== null && typeof newVal === 'object' && newVal !== null && Array.isArray(oldVal) === Array.isArray(newVal)) {
        generate(oldVal as Record<string, unknown>, newVal as Record<string, unknown>, patches, `${path}/${escape(key)}`);
      } else if (oldVal !== newVal) {
        patches.push({ op: 'replace', path: `${path}/${escape(key)}`, value: newVal === undefined ? null : newVal });
      }
    } else if (Array.isArray(mirror) === Array.isArray(obj)) {
      patches.push({ op: 'remove', path: `${path}/${escape(key)}` });
      deleted = true;
    } else {
      patches.push({ op: 'replace', path, value: obj });
    }
  }
  if (!deleted && newKeys.length === oldKeys.length) return;
  for (const key of newKeys) {
    if (!hasOwn(mirror, key) && obj[key] !== undefined) patches.push({ op: 'add', path: `${path}/${escape(key)}`, value: obj[key] });
  }
}

/** The operations that turn `original` into `mutated` (the same list fast-json-patch `compare` makes). */
export function diff(original: object, mutated: object): Operation[] {
  const patches: Operation[] = [];
  generate(original as Record<string, unknown>, mutated as Record<string, unknown>, patches, '');
  return patches;
}
