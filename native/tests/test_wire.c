// SPDX-License-Identifier: Apache-2.0
/* The framing (wire.c) and the generated decoders: helper.proto's messages, CRIU's answer. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "criu.h"
#include "criu/rpc.pb-c.h"
#include "harness.h"
#include "wire.h"

/* A pipe holding these bytes, its write end closed: the reader sees them, then EOF. */
static int pipe_with(const void *bytes, size_t len)
{
	int p[2];
	if (pipe(p) < 0)
		return -1;
	if (len && write(p[1], bytes, len) != (ssize_t)len)
		return -1;
	close(p[1]);
	return p[0];
}

TEST(wire_round_trip)
{
	int p[2];
	CHECK_INT(pipe(p), 0);
	struct error e;
	Osvirt__Helper__V1__Created created = OSVIRT__HELPER__V1__CREATED__INIT;
	created.init_pid = 4242;
	created.monitor_pid = 4241;
	StartEvent ev = OSVIRT__HELPER__V1__START_EVENT__INIT;
	ev.event_case = OSVIRT__HELPER__V1__START_EVENT__EVENT_CREATED;
	ev.created = &created;
	CHECK_INT(wire_send(p[1], &ev.base, &e), 0);
	CHECK_INT(wire_write(p[1], "", 0, &e), 0); /* an empty frame: a message with every field at its default */
	close(p[1]);
	StartEvent *got = NULL;
	CHECK_INT(wire_recv(p[0], &osvirt__helper__v1__start_event__descriptor, (ProtobufCMessage **)&got, &e), 1);
	CHECK(got && got->event_case == OSVIRT__HELPER__V1__START_EVENT__EVENT_CREATED);
	if (got && got->event_case == OSVIRT__HELPER__V1__START_EVENT__EVENT_CREATED) {
		CHECK_INT(got->created->init_pid, 4242);
		CHECK_INT(got->created->monitor_pid, 4241);
	}
	if (got)
		protobuf_c_message_free_unpacked(&got->base, NULL);
	got = NULL;
	CHECK_INT(wire_recv(p[0], &osvirt__helper__v1__start_event__descriptor, (ProtobufCMessage **)&got, &e), 1);
	CHECK(got && got->event_case == OSVIRT__HELPER__V1__START_EVENT__EVENT__NOT_SET);
	if (got)
		protobuf_c_message_free_unpacked(&got->base, NULL);
	/* End of file between frames is a clean end. */
	CHECK_INT(wire_recv(p[0], &osvirt__helper__v1__start_event__descriptor, (ProtobufCMessage **)&got, &e), 0);
	close(p[0]);
}

TEST(wire_header_is_little_endian)
{
	uint8_t hdr[WIRE_HEADER];
	wire_header(hdr, 0x01020304);
	CHECK_INT(hdr[0], 4);
	CHECK_INT(hdr[3], 1);
	CHECK_INT(wire_length(hdr), 0x01020304);
}

TEST(wire_truncated)
{
	struct error e;
	uint8_t *buf = NULL;
	size_t len;
	/* A header that promises 10 bytes, 3 of them sent. */
	uint8_t short_body[] = {10, 0, 0, 0, 1, 2, 3};
	int fd = pipe_with(short_body, sizeof short_body);
	CHECK_INT(wire_read(fd, WIRE_MAX_FRAME, &buf, &len, &e), -1);
	CHECK_INT(e.errnum, EPROTO);
	CHECK_STR(e.msg, "truncated frame: 3 of 10 bytes");
	close(fd);
	/* Half a header. */
	fd = pipe_with(short_body, 2);
	CHECK_INT(wire_read(fd, WIRE_MAX_FRAME, &buf, &len, &e), -1);
	CHECK_STR(e.msg, "truncated frame: 2 of 4 header bytes");
	close(fd);
	/* Nothing at all: end of file, not an error. */
	fd = pipe_with("", 0);
	CHECK_INT(wire_read(fd, WIRE_MAX_FRAME, &buf, &len, &e), 0);
	close(fd);
	/* The incremental reader waits for the rest. */
	CHECK_INT(wire_complete(short_body, sizeof short_body, 64, &e), 0);
	CHECK_INT(wire_complete(short_body, 3, 64, &e), 0);
	uint8_t whole[] = {3, 0, 0, 0, 1, 2, 3, 9};
	CHECK_INT(wire_complete(whole, sizeof whole, 64, &e), 7);
}

TEST(wire_oversized)
{
	struct error e;
	uint8_t *buf = NULL;
	size_t len;
	uint8_t hdr[WIRE_HEADER];
	wire_header(hdr, WIRE_MAX_FRAME + 1);
	int fd = pipe_with(hdr, sizeof hdr);
	CHECK_INT(wire_read(fd, WIRE_MAX_FRAME, &buf, &len, &e), -1);
	CHECK_INT(e.errnum, EMSGSIZE);
	CHECK_STR(e.msg, "frame of 1048577 bytes exceeds the limit of 1048576");
	close(fd);
	/* A reader's own, smaller limit. */
	wire_header(hdr, 300);
	CHECK_INT(wire_complete(hdr, sizeof hdr, 256, &e), -1);
	CHECK_INT(e.errnum, EMSGSIZE);
	/* The writer refuses too. */
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	uint8_t *big = calloc(1, WIRE_MAX_FRAME + 1);
	CHECK_INT(wire_write(null, big, WIRE_MAX_FRAME + 1, &e), -1);
	CHECK_INT(e.errnum, EMSGSIZE);
	CHECK_INT(wire_write(null, big, WIRE_MAX_FRAME, &e), 0);
	free(big);
	close(null);
}

TEST(wire_not_the_message)
{
	struct error e;
	/* A frame whose payload is not protobuf (field 0 is invalid). */
	uint8_t bad[] = {2, 0, 0, 0, 0, 0};
	int fd = pipe_with(bad, sizeof bad);
	ControlRequest *req = NULL;
	CHECK_INT(wire_recv(fd, &osvirt__helper__v1__control_request__descriptor, (ProtobufCMessage **)&req, &e), -1);
	CHECK_INT(e.errnum, EBADMSG);
	CHECK_STR(e.msg, "frame of 2 bytes is not a osvirt.helper.v1.ControlRequest");
	close(fd);
}

TEST(launch_request)
{
	int p[2];
	CHECK_INT(pipe(p), 0);
	struct error e;
	char *args[] = {"--state", "/s", "--", "/bin/sh", "-c", ""};
	LaunchRequest req = OSVIRT__HELPER__V1__LAUNCH_REQUEST__INIT;
	req.n_args = 6;
	req.args = args;
	CHECK_INT(wire_send(p[1], &req.base, &e), 0);
	close(p[1]);
	LaunchRequest *got = NULL;
	CHECK_INT(wire_recv(p[0], &osvirt__helper__v1__launch_request__descriptor, (ProtobufCMessage **)&got, &e), 1);
	CHECK_INT(got ? got->n_args : 0, 6);
	if (got && got->n_args == 6) {
		CHECK_STR(got->args[3], "/bin/sh");
		CHECK_STR(got->args[5], ""); /* an empty argument survives, unlike with NUL separators */
	}
	if (got)
		protobuf_c_message_free_unpacked(&got->base, NULL);
	close(p[0]);
}

TEST(criu_answer)
{
	/* criu_resp { type: RESTORE, success: true, restore { pid: 4242 } }, encoded by the generated code. */
	Criu__CriuRestoreResp restore = CRIU__CRIU_RESTORE_RESP__INIT;
	restore.pid = 4242;
	Criu__CriuResp resp = CRIU__CRIU_RESP__INIT;
	resp.type = CRIU__CRIU_REQ_TYPE__RESTORE;
	resp.success = true;
	resp.restore = &restore;
	uint8_t msg[64];
	size_t n = criu__criu_resp__pack(&resp, msg);
	struct restore_answer a;
	CHECK(criu_decode_resp(msg, n, &a));
	CHECK_INT(a.type, CRIU__CRIU_REQ_TYPE__RESTORE);
	CHECK_INT(a.success, 1);
	CHECK_INT(a.pid, 4242);
	/* A field this schema does not know (number 99, varint) is skipped. */
	uint8_t more[80];
	memcpy(more, msg, n);
	more[n] = (uint8_t)((99 << 3) | 0x80); /* the key (99 << 3 | varint) as a two-byte varint */
	more[n + 1] = (uint8_t)((99 << 3) >> 7);
	more[n + 2] = 7;
	CHECK(criu_decode_resp(more, n + 3, &a));
	CHECK_INT(a.pid, 4242);
	/* Truncated: the last field's length runs past the end. */
	CHECK(!criu_decode_resp(msg, n - 1, &a));
	/* type and success are required in CRIU's proto2 schema. */
	CHECK(!criu_decode_resp(msg, 0, &a));
	CHECK_INT(a.type, -1);
	/* A NOTIFY answer has no restore pid. */
	Criu__CriuNotify notify = CRIU__CRIU_NOTIFY__INIT;
	notify.script = "setup-namespaces";
	resp = (Criu__CriuResp)CRIU__CRIU_RESP__INIT;
	resp.type = CRIU__CRIU_REQ_TYPE__NOTIFY;
	resp.success = true;
	resp.notify = &notify;
	n = criu__criu_resp__pack(&resp, msg);
	CHECK(criu_decode_resp(msg, n, &a));
	CHECK_INT(a.type, CRIU__CRIU_REQ_TYPE__NOTIFY);
	CHECK_INT(a.pid, 0);
}
