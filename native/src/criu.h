// SPDX-License-Identifier: Apache-2.0
/* criu-swrk and restore: CRIU's RPC socket bridged to stdio. */
#ifndef OSVIRT_CRIU_H
#define OSVIRT_CRIU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What restore reads from CRIU's answer: criu_resp {1: type, 2: success, 4: restore {1: pid}}. */
struct restore_answer {
	int64_t type, success, pid;
	bool seen; /* a RESTORE answer arrived */
};
/* Decodes one CRIU response (with the code protoc-c generates from proto/criu/rpc.proto); false when malformed. */
bool criu_decode_resp(const uint8_t *buf, size_t len, struct restore_answer *out);

int cmd_criu_swrk(int argc, char **argv);
int cmd_restore(int argc, char **argv);

#endif
