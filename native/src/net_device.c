// SPDX-License-Identifier: Apache-2.0
/*
 * --veth: the monitor creates the pair with one RTM_NEWLINK (host end up and on
 * its bridge, the peer born in the child's network namespace under its final
 * name), and the child gives the peer its address, brings it up and adds the
 * default route from inside. Two runs of ip(8) used to do this; each cost more
 * than all of the netlink messages together.
 */
#define _GNU_SOURCE
#include "net_device.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_link.h>
#include <linux/veth.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nl.h"
#include "utils.h"

int parse_mac(const char *s, unsigned char mac[6])
{
	unsigned v[6];
	char end;
	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &end) != 6)
		return -1;
	for (int i = 0; i < 6; i++) {
		if (v[i] > 0xff)
			return -1;
		mac[i] = (unsigned char)v[i];
	}
	return 0;
}

int loopback_up(struct error *e)
{
	AUTO_FD fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_sys(e, "loopback: socket");
	struct ifreq ifr = {0};
	strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return err_sys(e, "loopback: SIOCGIFFLAGS");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		return err_sys(e, "loopback: SIOCSIFFLAGS");
	return 0;
}

int veth_create(const struct veth_cfg *v, pid_t pid, struct error *e)
{
	struct nlreq r;
	struct ifinfomsg host = {.ifi_family = AF_UNSPEC, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
	nl_init(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &host, sizeof host);
	uint32_t mtu = v->mtu, ns = (uint32_t)pid;
	uint32_t master = v->bridge ? if_nametoindex(v->bridge) : 0;
	if (v->bridge && !master)
		return err_sys(e, "veth %s", v->bridge);
	struct rtattr *info, *data, *peer;
	if (!nl_put(&r, IFLA_IFNAME, v->host, strlen(v->host) + 1) || (mtu && !nl_put(&r, IFLA_MTU, &mtu, 4)) ||
	    (master && !nl_put(&r, IFLA_MASTER, &master, 4)) || !(info = nl_put(&r, IFLA_LINKINFO, NULL, 0)) ||
	    !nl_put(&r, IFLA_INFO_KIND, "veth", 5) || !(data = nl_put(&r, IFLA_INFO_DATA, NULL, 0)) ||
	    !(peer = nl_put(&r, VETH_INFO_PEER, &(struct ifinfomsg){.ifi_family = AF_UNSPEC},
			    sizeof(struct ifinfomsg))) ||
	    !nl_put(&r, IFLA_IFNAME, v->peer, strlen(v->peer) + 1) || (mtu && !nl_put(&r, IFLA_MTU, &mtu, 4)) ||
	    !nl_put(&r, IFLA_NET_NS_PID, &ns, 4))
		return err_sys(e, "veth netlink request");
	if (v->mac) {
		unsigned char mac[6];
		if (parse_mac(v->mac, mac) < 0)
			return err_errno(e, EINVAL, "veth %s", v->mac);
		if (!nl_put(&r, IFLA_ADDRESS, mac, 6))
			return err_sys(e, "veth netlink request");
	}
	nl_end(&r, peer);
	nl_end(&r, data);
	nl_end(&r, info);
	if (nl_talk(&r) < 0)
		return err_sys(e, "veth %s", v->host);
	return 0;
}

int veth_configure_inside(const struct veth_cfg *v, struct error *e)
{
	unsigned idx = if_nametoindex(v->peer);
	if (!idx)
		return err_sys(e, "network: %s", v->peer);
	struct nlreq r;
	if (v->address) {
		char addr[64];
		snprintf(addr, sizeof addr, "%s", v->address);
		char *slash = strchr(addr, '/');
		unsigned prefix = slash ? (unsigned)atoi(slash + 1) : 32;
		if (slash)
			*slash = '\0';
		struct in_addr a;
		if (inet_pton(AF_INET, addr, &a) != 1 || prefix > 32)
			return err_errno(e, EINVAL, "network: address %s", v->address);
		struct ifaddrmsg am = {.ifa_family = AF_INET, .ifa_prefixlen = (unsigned char)prefix, .ifa_index = idx};
		nl_init(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &am, sizeof am);
		struct in_addr bcast = {.s_addr = prefix < 31 ? a.s_addr | htonl(prefix ? ~0U >> prefix : ~0U) : 0};
		if (!nl_put(&r, IFA_LOCAL, &a, 4) || !nl_put(&r, IFA_ADDRESS, &a, 4) ||
		    (bcast.s_addr && !nl_put(&r, IFA_BROADCAST, &bcast, 4)) || nl_talk(&r) < 0)
			return err_sys(e, "network: add %s to %s", v->address, v->peer);
	}
	struct ifinfomsg up = {
		.ifi_family = AF_UNSPEC, .ifi_index = (int)idx, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
	nl_init(&r, RTM_NEWLINK, 0, &up, sizeof up);
	if (nl_talk(&r) < 0)
		return err_sys(e, "network: bring %s up", v->peer);
	if (v->gateway) {
		struct in_addr gw;
		if (inet_pton(AF_INET, v->gateway, &gw) != 1)
			return err_errno(e, EINVAL, "network: gateway %s", v->gateway);
		struct rtmsg rm = {.rtm_family = AF_INET,
				   .rtm_table = RT_TABLE_MAIN,
				   .rtm_protocol = RTPROT_BOOT,
				   .rtm_scope = RT_SCOPE_UNIVERSE,
				   .rtm_type = RTN_UNICAST};
		nl_init(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rm, sizeof rm);
		if (!nl_put(&r, RTA_GATEWAY, &gw, 4) || !nl_put(&r, RTA_OIF, &idx, 4) || nl_talk(&r) < 0)
			return err_sys(e, "network: default route via %s", v->gateway);
	}
	return 0;
}

int link_delete(const char *name)
{
	struct nlreq r;
	struct ifinfomsg del = {.ifi_family = AF_UNSPEC};
	nl_init(&r, RTM_DELLINK, 0, &del, sizeof del);
	if (!nl_put(&r, IFLA_IFNAME, name, strlen(name) + 1))
		return -1;
	return nl_talk(&r);
}
