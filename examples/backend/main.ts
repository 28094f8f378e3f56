// `npm run example:backend`: the example backend with the SDK configured from the environment
// (CONTAINER_BACKEND, REDIS_URL, ...; see docs/configuration.md), its warm pool and collector.
import { Redis } from 'ioredis';
import { createLogger } from '../../lib/log.ts';
import { createMetricsRegistry } from '../../lib/metrics.ts';
import { createShutdown, exitOnSignals, listen } from '../../lib/server.ts';
import { createBackend, createCollector, createPool } from '../../sdk/index.ts';
import { loadExampleBackendConfig } from './config.ts';
import { createExampleBackend } from './server.ts';

const config = loadExampleBackendConfig();
const { sdk } = config;
const logger = createLogger({ name: 'example-backend', level: sdk.LOG_LEVEL });
if (!sdk.REDIS_URL) {
  logger.fatal('REDIS_URL is required: the conversation → workspace map and the warm pool live in Redis (e.g. redis-server --port 6379, REDIS_URL=redis://127.0.0.1:6379)');
  process.exit(2);
}
const metrics = createMetricsRegistry({ program: 'example-backend' });
const backend = await createBackend(sdk, { logger, metrics });
const redis = new Redis(sdk.REDIS_URL);
const pool = createPool(sdk, backend, redis, { logger, metrics });
const gc = createCollector(sdk, pool, { logger, metrics });
pool.start();
gc.start();
const server = createExampleBackend({ pool, metrics, logger });
const bound = await listen(server, { host: config.host, port: config.port });
logger.info({ address: bound.display, backend: backend.kind, pool: { min: sdk.POOL_MIN, max: sdk.POOL_MAX } }, 'example backend listening');
exitOnSignals(createShutdown({
  servers: [server],
  drainTimeoutMs: 10_000,
  logger,
  afterDrain: async () => {
    await pool.stop();
    await gc.stop();
    await backend.close();
    redis.disconnect();
  },
}), logger);
