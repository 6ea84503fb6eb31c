// SPDX-License-Identifier: Apache-2.0
/*
 * Test peer for `osvirt-helper criu-swrk` (built by `make test-tools`, never
 * shipped): started as `seqpacket-echo swrk FD` the way CRIU is, it echoes
 * every message on the SOCK_SEQPACKET fd given last until the other end
 * closes, then exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#define MAX_FRAME (1024 * 1024) /* as criu.h: the largest message the helper relays */

int main(int argc, char **argv)
{
	char *end;
	long fd = argc < 2 ? -1 : strtol(argv[argc - 1], &end, 10);
	if (fd < 0 || *end) {
		fputs("usage: seqpacket-echo [swrk] FD\n", stderr);
		return 2;
	}
	char *buf = malloc(MAX_FRAME);
	if (!buf) {
		perror("seqpacket-echo: malloc");
		return 1;
	}
	for (;;) {
		ssize_t n = recv((int)fd, buf, MAX_FRAME, MSG_TRUNC);
		if (n <= 0 || n > MAX_FRAME)
			return n < 0 || n > MAX_FRAME;
		if (send((int)fd, buf, (size_t)n, 0) < 0)
			return 1;
	}
}
