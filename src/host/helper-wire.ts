// The framing of every channel between the daemon and the native helper
// (docs/helper-protocol.md): a 4-byte little-endian length, then that many
// bytes of one protobuf message (proto/osvirt/helper/v1/helper.proto, or
// CRIU's own messages on the CRIU relay). native/src/wire.c is the C side.
import type { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';

export const FRAME_HEADER = 4;
/** The largest payload either side sends or accepts. */
export const MAX_FRAME = 1024 * 1024;

/** A message type as ts-proto generates it (src/gen/osvirt/helper/v1/helper.ts). */
export interface MessageType<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
  decode(input: BinaryReader | Uint8Array, length?: number): T;
}

/** A frame that breaks the framing (oversized, truncated) or does not hold the expected message. */
export class FrameError extends Error {}

/** One frame around an already encoded payload. */
export function frame(payload: Uint8Array): Buffer {
  if (payload.length > MAX_FRAME) throw new FrameError(`frame of ${payload.length} bytes exceeds the limit of ${MAX_FRAME}`);
  const out = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.set(payload, FRAME_HEADER);
  return out;
}

/** One frame holding `message` encoded as `type`. */
export function encodeFrame<T>(type: MessageType<T>, message: T): Buffer {
  return frame(type.encode(message).finish());
}

/** Decodes a frame's payload as `type`; a FrameError names what it expected. */
export function decodePayload<T>(type: MessageType<T>, payload: Uint8Array, name: string): T {
  try {
    return type.decode(payload);
  } catch (e) {
    throw new FrameError(`a frame of ${payload.length} bytes is not a ${name}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Splits a byte stream into frame payloads. */
export class FrameSplitter {
  private pending: Buffer = Buffer.alloc(0);

  constructor(readonly max = MAX_FRAME) {}

  /** The payloads completed by this chunk; throws FrameError when a header announces more than max. */
  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const frames: Buffer[] = [];
    while (this.pending.length >= FRAME_HEADER) {
      const length = this.pending.readUInt32LE(0);
      if (length > this.max) throw new FrameError(`frame of ${length} bytes exceeds the limit of ${this.max}`);
      if (this.pending.length < FRAME_HEADER + length) break;
      frames.push(this.pending.subarray(FRAME_HEADER, FRAME_HEADER + length));
      this.pending = this.pending.subarray(FRAME_HEADER + length);
    }
    return frames;
  }

  /** Bytes of an incomplete frame held. */
  get leftover(): number {
    return this.pending.length;
  }

  /** At the end of the stream: throws FrameError when it ended inside a frame. */
  end(): void {
    if (this.pending.length === 0) return;
    const want = this.pending.length >= FRAME_HEADER ? `${FRAME_HEADER + this.pending.readUInt32LE(0)}` : `at least ${FRAME_HEADER}`;
    throw new FrameError(`truncated frame: the stream ended after ${this.pending.length} of ${want} bytes`);
  }
}

/**
 * Reads messages of one type from a stream (a socket, a child's pipe).
 * next() resolves the next message, or undefined once the stream ended
 * between frames; it rejects with a FrameError on an oversized, truncated or
 * undecodable frame, and with the stream's error. After the first rejection
 * or end, every next() settles the same way. The reader stops listening when
 * it ends or fails; close() stops it earlier.
 */
export class MessageReader<T> {
  private readonly splitter: FrameSplitter;
  private readonly queue: T[] = [];
  private waiters: { resolve: (m: T | undefined) => void; reject: (e: Error) => void }[] = [];
  private ended = false;
  private attached = true;
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer | string): void => {
    try {
      for (const p of this.splitter.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)) {
        this.queue.push(decodePayload(this.type, p, this.name));
      }
    } catch (e) {
      this.fail(e instanceof Error ? e : new FrameError(String(e)));
    }
    this.settle();
  };
  private readonly onEnd = (): void => {
    try {
      this.splitter.end();
      this.ended = true;
      this.detach();
    } catch (e) {
      this.fail(e as Error);
    }
    this.settle();
  };
  private readonly onError = (e: Error): void => {
    this.fail(e);
    this.settle();
  };

  constructor(
    private readonly stream: NodeJS.ReadableStream,
    private readonly type: MessageType<T>,
    private readonly name: string,
    max = MAX_FRAME,
  ) {
    this.splitter = new FrameSplitter(max);
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd); // a destroyed socket may close without 'end'
    stream.on('error', this.onError);
  }

  next(): Promise<T | undefined> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.settle();
    });
  }

  /** Stop reading: pending and later next() calls resolve undefined. */
  close(): void {
    this.ended = true;
    this.detach();
    this.settle();
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.detach();
  }

  private detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    // An error after we stopped listening must not become an uncaught one.
    this.stream.off('error', this.onError);
    this.stream.on('error', () => undefined);
  }

  private settle(): void {
    while (this.waiters.length > 0) {
      if (this.queue.length > 0) this.waiters.shift()!.resolve(this.queue.shift());
      else if (this.failure) this.waiters.shift()!.reject(this.failure);
      else if (this.ended) this.waiters.shift()!.resolve(undefined);
      else return;
    }
  }
}
