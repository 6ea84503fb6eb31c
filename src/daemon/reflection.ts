// gRPC server reflection and health checking, so grpcurl-style tools and
// other languages can discover and probe the API.
import * as path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import type { Server } from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { repoPath } from '../paths';

export const SERVICES = [
  'osvirt.v1.ContainerService',
  'osvirt.v1.EventService',
  'osvirt.v1.SystemService',
  'osvirt.v1.JailService',
  'osvirt.v1.VServerService',
];

export function addReflectionAndHealth(server: Server): HealthImplementation {
  const protoDir = repoPath('proto');
  const files = [
    'container.proto',
    'container_service.proto',
    'event_service.proto',
    'system_service.proto',
    'jail.proto',
    'vserver.proto',
    'vserver_service.proto',
  ].map((f) => path.join('osvirt/v1', f));
  const def = protoLoader.loadSync(files, { includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  new ReflectionService(def).addToServer(server);
  const health = new HealthImplementation(Object.fromEntries([['', 'SERVING'], ...SERVICES.map((s) => [s, 'SERVING'])]));
  health.addToServer(server);
  return health;
}
