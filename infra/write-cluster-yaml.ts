// Writes manifests/overlays/<env>/cluster.yaml (or the file given as the argument) from a stack's outputs:
//   pulumi stack output --json -s <env> | npx node infra/write-cluster-yaml.ts
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClusterYamlValuesSchema, clusterYamlPath, renderClusterYaml } from './cluster-yaml.ts';

const outputs = JSON.parse(readFileSync(0, 'utf8')) as { clusterYaml?: unknown };
const values = ClusterYamlValuesSchema.parse(outputs.clusterYaml);
const file = process.argv[2] ?? join(import.meta.dirname, '..', clusterYamlPath(values.environment));
writeFileSync(file, renderClusterYaml(values));
process.stdout.write(`wrote ${file}\n`);
