// The per-pod CA key, started before the rest of the program is even loaded: RSA-2048 generation
// takes 100-200 ms on the libuv thread pool, the module graph about as long on the main thread,
// so the two overlap and /readyz turns 200 sooner. node:crypto only: nothing here waits on imports.
import { generateKeyPair, type KeyObject } from 'node:crypto';

export interface CAKeyObjects {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export const CA_KEY_BITS = 2048;

export function startCAKey(bits = CA_KEY_BITS): Promise<CAKeyObjects> {
  return new Promise((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: bits }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ privateKey, publicKey })));
  });
}
