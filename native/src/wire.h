// SPDX-License-Identifier: Apache-2.0
/*
 * The one framing of the helper's protocol (docs/helper-protocol.md): a frame
 * is a 4-byte little-endian length, then that many bytes of one protobuf
 * message (proto/osvirt/helper/v1/helper.proto, or CRIU's rpc.proto on the
 * CRIU relay). A frame is at most WIRE_MAX_FRAME bytes of payload; a zero
 * length is a valid frame (a message with every field at its default).
 */
#ifndef OSVIRT_WIRE_H
#define OSVIRT_WIRE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "osvirt/helper/v1/helper.pb-c.h"

#define WIRE_HEADER 4
#define WIRE_MAX_FRAME (1024 * 1024)

/* The header of a frame of len bytes, and the length a header announces. */
void wire_header(uint8_t hdr[WIRE_HEADER], uint32_t len);
uint32_t wire_length(const uint8_t hdr[WIRE_HEADER]);

/*
 * Reads one frame from a blocking fd into *out (malloc'd, the caller frees;
 * never NULL on success) and *len. Returns 1, 0 on end of file before a frame,
 * or -1 with e: a read error, a length over max (the payload is not read), or
 * end of file inside a frame (truncated).
 */
int wire_read(int fd, size_t max, uint8_t **out, size_t *len, struct error *e);
/* Writes one frame with a single write where it fits; -1 with e on error or len > WIRE_MAX_FRAME. */
int wire_write(int fd, const void *payload, size_t len, struct error *e);

/*
 * For a non-blocking reader that collects bytes in a buffer: the size
 * (header included) of the first frame when buf holds all of it, 0 when more
 * is needed, -1 with e when it announces more than max.
 */
ssize_t wire_complete(const uint8_t *buf, size_t have, size_t max, struct error *e);

/* Packs m and writes it as one frame. */
int wire_send(int fd, const ProtobufCMessage *m, struct error *e);
/* wire_read, then unpacks the payload as d: 1 with *out (free with protobuf_c_message_free_unpacked), 0 at EOF, -1. */
int wire_recv(int fd, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out, struct error *e);

/* Short names for the generated types of helper.proto. */
typedef Osvirt__Helper__V1__StartEvent StartEvent;
typedef Osvirt__Helper__V1__StartCommand StartCommand;
typedef Osvirt__Helper__V1__LaunchRequest LaunchRequest;
typedef Osvirt__Helper__V1__ControlRequest ControlRequest;
typedef Osvirt__Helper__V1__ControlEvent ControlEvent;
typedef Osvirt__Helper__V1__ResizeRequest ResizeRequest;

#endif
