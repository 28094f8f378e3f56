// Kubernetes resource quantities ("500m", "2Gi", "1e3"), parsed only to compare them with a
// configured maximum (the webhook's limits, the SDK's ceiling). The grammar is apimachinery's resource.Quantity
// (k8s.io/apimachinery/pkg/api/resource/quantity.go); values we write back are the configured
// strings, never re-formatted numbers, so no canonical-form logic is needed here.

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

const QUANTITY = /^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$/;

/** The quantity as a number (cores, bytes, ...), or undefined when it is not a valid quantity. */
export function parseQuantity(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const m = QUANTITY.exec(value);
  if (!m) return undefined;
  const base = Number(m[1]);
  const suffix = m[2] ?? '';
  let factor: number | undefined;
  if (suffix.startsWith('e') || suffix.startsWith('E')) factor = 10 ** Number(suffix.slice(1));
  else factor = BINARY[suffix] ?? DECIMAL[suffix];
  if (factor === undefined || !Number.isFinite(base)) return undefined;
  return base * factor;
}

export function isQuantity(value: unknown): boolean {
  return parseQuantity(value) !== undefined;
}
