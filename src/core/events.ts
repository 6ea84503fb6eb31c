// In-memory lifecycle event bus. Events carry a daemon-wide sequence number;
// they are delivered synchronously in emit order, so each subscriber sees a
// container's events in the order they happened.
import type { ContainerStatus } from '../gen/osvirt/v1/container';
import { EventType, type Event } from '../gen/osvirt/v1/event_service';

export { EventType };
export type Listener = (e: Event) => void;

export class EventBus {
  private seq = 0;
  private readonly listeners = new Set<Listener>();

  emit(container: string, type: EventType, status: ContainerStatus | undefined, extra: { checkpoint?: string; message?: string } = {}): Event {
    const event: Event = {
      sequence: BigInt(++this.seq),
      time: new Date(),
      container,
      type,
      status,
      checkpoint: extra.checkpoint ?? '',
      message: extra.message ?? '',
    };
    for (const l of this.listeners) {
      try {
        l(event);
      } catch {
        // a broken subscriber must not stop delivery to the others
      }
    }
    return event;
  }

  subscribe(l: Listener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}
