// SPDX-License-Identifier: Apache-2.0
/* A container's network devices: loopback, and a veth pair on a bridge (--veth). */
#ifndef OSVIRT_NET_DEVICE_H
#define OSVIRT_NET_DEVICE_H

#include <sys/types.h>

#include "error.h"

struct veth_cfg {
	const char *host, *peer; /* host end; the name inside (eth0) */
	const char *bridge, *mac;
	unsigned mtu;
	const char *address; /* A.B.C.D/PREFIX inside, optional */
	const char *gateway; /* default route inside, optional */
};

/* "aa:bb:cc:dd:ee:ff"; -1 when it is not one. */
int parse_mac(const char *s, unsigned char mac[6]);
/* --lo-up: "ip link set lo up" in the caller's own network namespace, without running ip. */
int loopback_up(struct error *e);
/* In the monitor: the pair, host end up on its bridge, the peer in pid's network namespace. */
int veth_create(const struct veth_cfg *v, pid_t pid, struct error *e);
/* In the child, inside its network namespace: address, up, default route. */
int veth_configure_inside(const struct veth_cfg *v, struct error *e);
/* Deletes a link by name in the caller's network namespace (ENODEV when it is gone). */
int link_delete(const char *name);

#endif
