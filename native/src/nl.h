// SPDX-License-Identifier: Apache-2.0
/* A minimal rtnetlink request builder: one message, one acknowledgement. */
#ifndef OSVIRT_NL_H
#define OSVIRT_NL_H

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stddef.h>

struct nlreq {
	struct nlmsghdr h;
	char buf[1024];
};

/* A request of type with the family header hdr; NLM_F_REQUEST | NLM_F_ACK are added to flags. */
void nl_init(struct nlreq *r, unsigned short type, unsigned short flags, const void *hdr, size_t len);
/* Appends an attribute (len 0: a nest to close with nl_end); NULL (EMSGSIZE) when it does not fit. */
struct rtattr *nl_put(struct nlreq *r, unsigned short type, const void *data, size_t len);
void nl_end(struct nlreq *r, struct rtattr *nest);
/* Sends r in the caller's network namespace; 0, or -1 with the kernel's errno. */
int nl_talk(struct nlreq *r);

#endif
