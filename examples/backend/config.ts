// The example backend's configuration: the SDK's variables plus where it listens.
import { z } from 'zod';
import { env, parseConfig, pickEnv } from '../../lib/config.ts';
import { loadSdkConfig, type SdkConfig } from '../../sdk/config.ts';

const listenSchema = z.object({
  BACKEND_HOST: env.string().default('127.0.0.1'),
  BACKEND_PORT: env.port().default(8090),
});

export interface ExampleBackendConfig {
  readonly sdk: SdkConfig;
  readonly host: string;
  readonly port: number;
}

export function loadExampleBackendConfig(source: Record<string, string | undefined> = process.env): ExampleBackendConfig {
  const listen = parseConfig(listenSchema, pickEnv(listenSchema, source), 'example backend configuration');
  return Object.freeze({ sdk: loadSdkConfig(source), host: listen.BACKEND_HOST, port: listen.BACKEND_PORT });
}
