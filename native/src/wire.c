// SPDX-License-Identifier: Apache-2.0
#define _GNU_SOURCE
#include "wire.h"

#include <errno.h>
#include <string.h>

#include "utils.h"

void wire_header(uint8_t hdr[WIRE_HEADER], uint32_t len)
{
	for (int i = 0; i < WIRE_HEADER; i++)
		hdr[i] = (uint8_t)(len >> (8 * i));
}

uint32_t wire_length(const uint8_t hdr[WIRE_HEADER])
{
	return (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
}

int wire_read(int fd, size_t max, uint8_t **out, size_t *len, struct error *e)
{
	uint8_t hdr[WIRE_HEADER];
	ssize_t r = read_full(fd, hdr, sizeof hdr);
	if (r < 0)
		return err_sys(e, "read frame");
	if (r == 0)
		return 0;
	if (r < WIRE_HEADER)
		return err_errno(e, EPROTO, "truncated frame: %zd of %d header bytes", r, WIRE_HEADER);
	uint32_t n = wire_length(hdr);
	if (n > max)
		return err_errno(e, EMSGSIZE, "frame of %u bytes exceeds the limit of %zu", n, max);
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf)
		return err_sys(e, "frame of %u bytes", n);
	r = read_full(fd, buf, n);
	if (r != (ssize_t)n) {
		int saved = r < 0 ? errno : EPROTO;
		free(buf);
		if (r < 0)
			return err_errno(e, saved, "read frame");
		return err_errno(e, EPROTO, "truncated frame: %zd of %u bytes", r, n);
	}
	*out = buf;
	*len = n;
	return 1;
}

int wire_write(int fd, const void *payload, size_t len, struct error *e)
{
	if (len > WIRE_MAX_FRAME)
		return err_errno(e, EMSGSIZE, "frame of %zu bytes exceeds the limit of %d", len, WIRE_MAX_FRAME);
	uint8_t small[WIRE_HEADER + 512];
	uint8_t *buf = len <= sizeof small - WIRE_HEADER ? small : malloc(WIRE_HEADER + len);
	if (!buf)
		return err_sys(e, "frame of %zu bytes", len);
	wire_header(buf, (uint32_t)len);
	if (len)
		memcpy(buf + WIRE_HEADER, payload, len);
	int rc = write_all(fd, buf, WIRE_HEADER + len);
	int saved = errno;
	if (buf != small)
		free(buf);
	return rc < 0 ? err_errno(e, saved, "write frame") : 0;
}

ssize_t wire_complete(const uint8_t *buf, size_t have, size_t max, struct error *e)
{
	if (have < WIRE_HEADER)
		return 0;
	uint32_t n = wire_length(buf);
	if (n > max)
		return err_errno(e, EMSGSIZE, "frame of %u bytes exceeds the limit of %zu", n, max);
	return have >= WIRE_HEADER + (size_t)n ? (ssize_t)(WIRE_HEADER + n) : 0;
}

int wire_send(int fd, const ProtobufCMessage *m, struct error *e)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t small[512];
	uint8_t *buf = n <= sizeof small ? small : malloc(n);
	if (!buf)
		return err_sys(e, "encode %s", m->descriptor->name);
	protobuf_c_message_pack(m, buf);
	int rc = wire_write(fd, buf, n, e);
	if (buf != small)
		free(buf);
	return rc;
}

int wire_recv(int fd, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out, struct error *e)
{
	uint8_t *buf;
	size_t n;
	int rc = wire_read(fd, WIRE_MAX_FRAME, &buf, &n, e);
	if (rc <= 0)
		return rc;
	*out = protobuf_c_message_unpack(d, NULL, n, buf);
	free(buf);
	if (!*out)
		return err_errno(e, EBADMSG, "frame of %zu bytes is not a %s", n, d->name);
	return 1;
}
