// The framework's own limit for the control-plane section: a bare
// @grpc/grpc-js server with osvirt's ContainerService definition that answers
// GetContainer and ListContainers with messages held in memory (the same
// messages osvirt returned), in its own process like osvirtd.
//
// usage: node grpc-baseline-server.js <socket> <responses.json>
// Prints {"ready":true} on stdout once listening.
import { readFileSync } from 'node:fs';
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall, type UntypedServiceImplementation } from '@grpc/grpc-js';
import {
  ContainerServiceService,
  GetContainerResponse,
  ListContainersResponse,
  type GetContainerRequest,
  type ListContainersRequest,
} from '../src/gen/osvirt/v1/container_service';

const [socket, file] = process.argv.slice(2);
if (!socket || !file) {
  process.stderr.write('usage: grpc-baseline-server <socket> <responses.json>\n');
  process.exit(2);
}
const data = JSON.parse(readFileSync(file, 'utf8')) as { get: unknown; list: unknown };
const get = GetContainerResponse.fromJSON(data.get);
const list = ListContainersResponse.fromJSON(data.list);

const impl: UntypedServiceImplementation = {};
for (const method of Object.keys(ContainerServiceService)) {
  impl[method] = (_call: unknown, cb?: sendUnaryData<unknown>) => {
    if (cb) cb({ code: status.UNIMPLEMENTED, details: 'baseline server answers GetContainer and ListContainers only' });
  };
}
impl['getContainer'] = (_call: ServerUnaryCall<GetContainerRequest, GetContainerResponse>, cb: sendUnaryData<GetContainerResponse>) => cb(null, get);
impl['listContainers'] = (_call: ServerUnaryCall<ListContainersRequest, ListContainersResponse>, cb: sendUnaryData<ListContainersResponse>) => cb(null, list);

// The daemon's message limits, so both sides serialize the same way.
const server = new Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024, 'grpc.max_send_message_length': 64 * 1024 * 1024 });
server.addService(ContainerServiceService, impl);
server.bindAsync(`unix://${socket}`, ServerCredentials.createInsecure(), (err) => {
  if (err) {
    process.stderr.write(`grpc-baseline-server: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(JSON.stringify({ ready: true, pid: process.pid }) + '\n');
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
