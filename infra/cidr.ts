// IPv4 subnet arithmetic for the VPC layout (a dozen lines; no package needed for /n splits).

function toInt(address: string): number {
  return address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

function toAddress(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

/** The `index`-th /`prefix` block inside `cidr`; throws when it does not fit. */
export function subnetOf(cidr: string, prefix: number, index: number): string {
  const [address, bits] = cidr.split('/') as [string, string];
  const parentPrefix = Number(bits);
  if (prefix < parentPrefix || prefix > 28) throw new Error(`/${prefix} does not fit in ${cidr}`);
  const size = 2 ** (32 - prefix);
  const base = toInt(address) - (toInt(address) % 2 ** (32 - parentPrefix));
  const start = base + index * size;
  if (index < 0 || start + size > base + 2 ** (32 - parentPrefix)) throw new Error(`block ${index} of /${prefix} is outside ${cidr}`);
  return `${toAddress(start)}/${prefix}`;
}
