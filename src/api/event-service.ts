// osvirt.v1.EventService: a server stream fed by the core's event bus.
import { Metadata, type ServerWritableStream, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { EventBus } from '../core/events';
import { validateEventTypes, validateName } from '../core/validate';
import type { EventServiceServer, WatchEventsRequest, WatchEventsResponse } from '../gen/osvirt/v1/event_service';
import { toServiceError } from '../core/grpc-status';

export function eventService(bus: EventBus, logger: Logger): EventServiceServer & UntypedServiceImplementation {
  return {
    watchEvents: (call: ServerWritableStream<WatchEventsRequest, WatchEventsResponse>) => {
      const req = call.request;
      try {
        req.containers.forEach((c, i) => validateName(`containers[${i}]`, c));
        validateEventTypes('types', req.types);
      } catch (e) {
        call.emit('error', toServiceError(e, logger));
        return;
      }
      const names = new Set(req.containers);
      const types = new Set(req.types);
      const unsubscribe = bus.subscribe((event) => {
        if (names.size > 0 && !names.has(event.container)) return;
        if (types.size > 0 && !types.has(event.type)) return;
        call.write({ event });
      });
      // Tell the client the subscription is live, so it can act knowing
      // nothing from now on will be missed.
      call.sendMetadata(new Metadata());
      const stop = () => unsubscribe();
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
    },
  };
}
