// osvirt.v1.ImageService: OCI images pulled from registries into the daemon's
// store (src/images), listed, inspected, removed and pruned.
import type { sendUnaryData, ServerReadableStream, ServerWritableStream, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { invalidArgument, OsvirtError } from '../core/errors';
import type { ContainerManager } from '../core/manager';
import type {
  ExportImageRequest,
  ExportImageResponse,
  ImageServiceServer,
  ImportImageRequest,
  ImportImageResponse,
  PullImageRequest,
  PullImageResponse,
} from '../gen/osvirt/v1/image_service';
import { ImageStore } from '../images/store';
import { toServiceError, unary } from '../core/grpc-status';

export function imageService(store: ImageStore, manager: ContainerManager, logger: Logger): ImageServiceServer & UntypedServiceImplementation {
  /** Image digest -> the containers created from it. */
  const users = (): Map<string, string[]> => {
    const m = new Map<string, string[]>();
    for (const { name, spec } of manager.definitions()) {
      const d = spec.rootfs?.source?.$case === 'image' ? spec.rootfs.imageDigest : '';
      if (d) m.set(d, [...(m.get(d) ?? []), name].sort());
    }
    return m;
  };
  const found = (text: string) => {
    if (!text) throw invalidArgument('image', 'is required: a name (HOST/REPO:TAG) or a digest');
    const rec = store.find(text);
    if (!rec) throw new OsvirtError('NOT_FOUND', 'IMAGE_NOT_FOUND', `image "${text}" not found`, [], { image: text });
    return rec;
  };
  return {
    pullImage: (call: ServerWritableStream<PullImageRequest, PullImageResponse>) => {
      const req = call.request;
      Promise.resolve()
        .then(async () => {
          if (!req.image) throw invalidArgument('image', 'is required: HOST[:PORT]/REPO[:TAG] or HOST[:PORT]/REPO@sha256:HEX');
          const rec = await store.pull(req.image, 'image', req.platform, (p) => {
            if (!call.cancelled) call.write({ message: { $case: 'progress', value: p } });
          });
          call.write({ message: { $case: 'image', value: ImageStore.toImage(rec, users().get(rec.digest) ?? []) } });
          call.end();
        })
        .catch((e) => call.emit('error', toServiceError(e, logger)));
    },
    listImages: unary(logger, () => {
      const u = users();
      return { images: store.list().map((r) => ImageStore.toImage(r, u.get(r.digest) ?? [])) };
    }),
    getImage: unary(logger, (req) => {
      const rec = found(req.image);
      return { image: ImageStore.toImage(rec, users().get(rec.digest) ?? []) };
    }),
    removeImage: unary(logger, async (req) => {
      if (!req.image) throw invalidArgument('image', 'is required: a name (HOST/REPO:TAG) or a digest');
      const u = users();
      const removed = await store.remove(req.image, req.force, (d) => u.get(d) ?? []);
      if (!removed && !req.allowMissing) throw new OsvirtError('NOT_FOUND', 'IMAGE_NOT_FOUND', `image "${req.image}" not found`, [], { image: req.image });
      return {};
    }),
    importImage: (call: ServerReadableStream<ImportImageRequest, ImportImageResponse>, cb: sendUnaryData<ImportImageResponse>) => {
      let name = '';
      let started = false;
      async function* data(): AsyncIterable<Buffer> {
        for await (const msg of call as AsyncIterable<ImportImageRequest>) {
          const x = msg.message;
          if (!started) {
            if (x?.$case !== 'start') throw invalidArgument('start', 'the first message of an import must be "start"');
            started = true;
            name = x.value.name;
          } else if (x?.$case === 'data') yield x.value;
          else throw invalidArgument('data', 'only data may follow "start"');
        }
        if (!started) throw invalidArgument('start', 'the import stream is empty');
      }
      // The name arrives with the first message; the store asks for it once the archive is in.
      Promise.resolve()
        .then(async () => {
          const recs = await store.importArchive(data(), () => name);
          const u = users();
          return { images: recs.map((r) => ImageStore.toImage(r, u.get(r.digest) ?? [])) };
        })
        .then(
          (res) => cb(null, res),
          (e) => cb(toServiceError(e, logger)),
        );
    },
    exportImage: (call: ServerWritableStream<ExportImageRequest, ExportImageResponse>) => {
      store.exportArchive(call.request.image).then(
        (stream) => {
          stream.on('data', (b: Buffer) => {
            if (!call.write({ data: b })) {
              stream.pause();
              call.once('drain', () => stream.resume());
            }
          });
          stream.on('end', () => call.end());
          stream.on('error', (e) => call.emit('error', toServiceError(e, logger)));
          call.on('cancelled', () => stream.destroy());
        },
        (e) => call.emit('error', toServiceError(e, logger)),
      );
    },
    login: unary(logger, async (req) => {
      await store.login(req.registry, req.username, req.password);
      return {};
    }),
    logout: unary(logger, async (req) => {
      await store.logout(req.registry);
      return {};
    }),
    pruneImages: unary(logger, async (req) => {
      const r = await store.prune(req.all, new Set(users().keys()));
      return { images: r.images, blobs: r.blobs, layers: r.layers, reclaimedBytes: BigInt(r.reclaimed) };
    }),
  };
}
