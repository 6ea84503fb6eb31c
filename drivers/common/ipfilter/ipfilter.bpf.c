// SPDX-License-Identifier: Apache-2.0
/*
 * Shared-network-stack IP restriction (FreeBSD jail ip4.addr/ip6.addr
 * without vnet, Linux-VServer network contexts) as cgroup BPF programs.
 *
 * One copy of these programs (per object version) is attached to every
 * restricted container's cgroup2 directory. Each attachment finds its own
 * container's policy with bpf_get_local_storage(): a cgroup storage map with
 * a plain u64 key is shared by all programs attached to the same cgroup, is
 * created by the kernel on the first attach and freed on the last detach.
 * So the policy follows the kernel's own rule for which programs run (the
 * socket's cgroup and its ancestors), nested cgroups inside a container are
 * covered, and adding or removing a container never reloads anything.
 *
 * The address-level hooks (bind, connect, sendmsg) do the jail semantics;
 * the packet-level hooks (cgroup_skb ingress/egress) are the backstop for
 * what the address hooks cannot see: traffic reaching a wildcard-bound
 * socket through a foreign address, and packets whose source was chosen
 * some other way (raw sockets, ping sockets).
 *
 * All addresses are kept in network byte order, as the kernel hands them
 * to the programs, so they compare without conversion.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* <sys/socket.h> is not usable with -target bpf. */
#define AF_INET 2
#define AF_INET6 10

/* Keep in sync with policy.ts (MAX_ADDRS, FLAG, encodePolicy); index.ts checks the value size at load. */
#define IPF_MAX_ADDRS 16

#define IPF_CONFIGURED (1u << 0)     /* set by userspace; a zeroed storage means "deny" */
#define IPF_V4_NEW (1u << 1)         /* IPv4 restricted to v4[] */
#define IPF_V4_DISABLE (1u << 2)     /* no IPv4 at all */
#define IPF_V6_NEW (1u << 3)
#define IPF_V6_DISABLE (1u << 4)
#define IPF_SINGLE_IP (1u << 5)      /* wildcard binds become the primary address */
#define IPF_LOOPBACK_REMAP (1u << 6) /* loopback becomes the primary address */
#define IPF_RESERVED_PORTS (1u << 7) /* ports < 1024 without CAP_NET_BIND_SERVICE over the host's netns */


struct ipf_policy {
	__u32 flags;
	__u32 n4; /* entries used in v4[]; v4[0] is the primary address */
	__u32 n6;
	__u32 reserved;
	__u32 v4[IPF_MAX_ADDRS];
	__u32 v6[IPF_MAX_ADDRS][4];
};

/*
 * What a socket's destination was rewritten from, so that recvmsg and
 * getpeername can show the application the loopback address it used:
 * resolvers (glibc, musl) drop answers whose source is not the server they
 * asked, which would break "nameserver 127.0.0.1" inside a container.
 */
struct ipf_remap {
	__u32 lo4;    /* original IPv4 loopback destination, 0 = none */
	__u32 to4;    /* what it was rewritten to */
	__u32 lo6;    /* 1 when ::1 was rewritten */
	__u32 to6[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, __u64); /* cgroup id only: one storage per cgroup, shared by every attach type */
	__type(value, struct ipf_policy);
} ipf_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ipf_remap);
} ipf_remap SEC(".maps");

static __always_inline struct ipf_policy *policy(void)
{
	return bpf_get_local_storage(&ipf_policy, 0);
}

/* Refuse the operation with a specific errno instead of the default EPERM. */
static __always_inline int deny(int err)
{
	bpf_set_retval(-err);
	return 0;
}

static __always_inline int is_lo4(__u32 a)
{
	/* All of 127/8 routes to lo: leaving any of it alone would leak host-only services. */
	return (bpf_ntohl(a) >> 24) == 127;
}

static __always_inline int is_any6(const __u32 *a)
{
	return !(a[0] | a[1] | a[2] | a[3]);
}

static __always_inline int is_lo6(const __u32 *a)
{
	return !(a[0] | a[1] | a[2]) && a[3] == bpf_htonl(1);
}

static __always_inline int is_mapped(const __u32 *a)
{
	return !(a[0] | a[1]) && a[2] == bpf_htonl(0xffff);
}

static __always_inline int allowed4(const struct ipf_policy *p, __u32 a)
{
	for (__u32 i = 0; i < IPF_MAX_ADDRS; i++) {
		if (i >= p->n4)
			break;
		if (p->v4[i] == a)
			return 1;
	}
	return 0;
}

static __always_inline int allowed6(const struct ipf_policy *p, const __u32 *a)
{
	for (__u32 i = 0; i < IPF_MAX_ADDRS; i++) {
		if (i >= p->n6)
			break;
		if (p->v6[i][0] == a[0] && p->v6[i][1] == a[1] && p->v6[i][2] == a[2] && p->v6[i][3] == a[3])
			return 1;
	}
	return 0;
}

static __always_inline int usable4(const struct ipf_policy *p)
{
	return !(p->flags & IPF_V4_DISABLE) && (!(p->flags & IPF_V4_NEW) || p->n4);
}

/*
 * A local IPv4 address for bind(): 0 to allow (*a possibly rewritten), or
 * the errno to fail with.
 */
static __always_inline int local4(const struct ipf_policy *p, __u32 *a)
{
	if (p->flags & IPF_V4_DISABLE)
		return EADDRNOTAVAIL;
	if (!(p->flags & IPF_V4_NEW))
		return 0;
	if (*a == 0) {
		if (!p->n4)
			return EADDRNOTAVAIL;
		/* Without single_ip the wildcard stays; the ingress program keeps foreign traffic out. */
		if (p->flags & IPF_SINGLE_IP)
			*a = p->v4[0];
		return 0;
	}
	if (allowed4(p, *a))
		return 0;
	if ((p->flags & IPF_LOOPBACK_REMAP) && is_lo4(*a) && p->n4) {
		*a = p->v4[0];
		return 0;
	}
	return EADDRNOTAVAIL;
}

/* The same for IPv6; v4-mapped addresses follow the IPv4 policy. */
static __always_inline int local6(const struct ipf_policy *p, __u32 *a)
{
	if (is_mapped(a)) {
		__u32 v = a[3];
		int err = local4(p, &v);
		a[3] = v;
		return err;
	}
	if (!(p->flags & IPF_V6_NEW))
		return 0;
	if (is_any6(a)) {
		/*
		 * "::" on Linux is dual-stack. single_ip narrows it only when that
		 * loses no family the socket would otherwise serve: to the primary
		 * IPv6 address when IPv4 is unusable, to the v4-mapped primary IPv4
		 * address when IPv6 is unusable. Otherwise it stays a wildcard and
		 * the ingress program filters what reaches it.
		 */
		if (!(p->flags & IPF_SINGLE_IP))
			return 0;
		if (p->n6 && !usable4(p)) {
			a[0] = p->v6[0][0], a[1] = p->v6[0][1], a[2] = p->v6[0][2], a[3] = p->v6[0][3];
		} else if (!p->n6 && (p->flags & IPF_V4_NEW) && p->n4) {
			a[0] = 0, a[1] = 0, a[2] = bpf_htonl(0xffff), a[3] = p->v4[0];
		}
		return 0;
	}
	if (allowed6(p, a))
		return 0;
	if ((p->flags & IPF_LOOPBACK_REMAP) && is_lo6(a) && p->n6) {
		a[0] = p->v6[0][0], a[1] = p->v6[0][1], a[2] = p->v6[0][2], a[3] = p->v6[0][3];
		return 0;
	}
	return EADDRNOTAVAIL;
}

static __always_inline struct ipf_remap *remap_of(struct bpf_sock *sk, int create)
{
	return bpf_sk_storage_get(&ipf_remap, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

/*
 * An IPv4 destination for connect()/sendmsg(): rewrites a loopback
 * destination to the primary address when loopback remap is on, and
 * remembers it for recvmsg/getpeername. Returns 0 or an errno.
 */
static __always_inline int remote4(const struct ipf_policy *p, struct bpf_sock *sk, __u32 *dst)
{
	if (!(p->flags & IPF_V4_NEW) || !(p->flags & IPF_LOOPBACK_REMAP))
		return 0;
	if (!is_lo4(*dst) || allowed4(p, *dst))
		return 0;
	if (!p->n4)
		return ENETUNREACH;
	struct ipf_remap *r = remap_of(sk, 1);
	if (r) {
		r->lo4 = *dst;
		r->to4 = p->v4[0];
	}
	*dst = p->v4[0];
	return 0;
}

static __always_inline int remote6(const struct ipf_policy *p, struct bpf_sock *sk, __u32 *dst)
{
	if (!(p->flags & IPF_V6_NEW) || !(p->flags & IPF_LOOPBACK_REMAP))
		return 0;
	/* Linux turns a "::" destination into ::1 after this hook, so it is loopback too. */
	if (!(is_lo6(dst) || is_any6(dst)))
		return 0;
	__u32 lo[4] = {0, 0, 0, bpf_htonl(1)};
	if (allowed6(p, lo))
		return 0;
	if (!p->n6)
		return ENETUNREACH;
	struct ipf_remap *r = remap_of(sk, 1);
	if (r) {
		r->lo6 = 1;
		r->to6[0] = p->v6[0][0], r->to6[1] = p->v6[0][1], r->to6[2] = p->v6[0][2], r->to6[3] = p->v6[0][3];
	}
	dst[0] = p->v6[0][0], dst[1] = p->v6[0][1], dst[2] = p->v6[0][2], dst[3] = p->v6[0][3];
	return 0;
}

/* socket(): a disabled family fails the way it would on a kernel without it. */
SEC("cgroup/sock_create")
int osvipf_sockcrt(struct bpf_sock *sk)
{
	struct ipf_policy *p = policy();

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	if (sk->family == AF_INET && (p->flags & IPF_V4_DISABLE))
		return deny(EAFNOSUPPORT);
	if (sk->family == AF_INET6 && (p->flags & IPF_V6_DISABLE))
		return deny(EAFNOSUPPORT);
	return 1;
}

/*
 * A bind program's return value 3 (1 | BPF_RET_BIND_NO_CAP_NET_BIND_SERVICE)
 * allows the bind and skips the kernel's CAP_NET_BIND_SERVICE check: how a
 * user-namespaced container on the host's stack may use a reserved port on
 * its own addresses, and no other.
 */
static __always_inline int bind_ok(const struct ipf_policy *p)
{
	return (p->flags & IPF_RESERVED_PORTS) ? 3 : 1;
}

SEC("cgroup/bind4")
int osvipf_bind4(struct bpf_sock_addr *ctx)
{
	struct ipf_policy *p = policy();

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	__u32 a = ctx->user_ip4;
	int err = local4(p, &a);
	if (err)
		return deny(err);
	if (a != ctx->user_ip4)
		ctx->user_ip4 = a;
	return bind_ok(p);
}

SEC("cgroup/bind6")
int osvipf_bind6(struct bpf_sock_addr *ctx)
{
	struct ipf_policy *p = policy();

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	int err = local6(p, a);
	if (err)
		return deny(err);
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	return bind_ok(p);
}

/*
 * Give an unbound socket the primary address before the kernel picks a
 * source by routing (which could be any host address). bpf_bind() with port
 * 0 binds the address only; the port is still chosen at connect time.
 */
static __always_inline int bind_source4(struct bpf_sock_addr *ctx, __u32 a)
{
	struct sockaddr_in sa;

	__builtin_memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = a;
	return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
}

static __always_inline int bind_source6(struct bpf_sock_addr *ctx, const __u32 *a)
{
	struct sockaddr_in6 sa;

	__builtin_memset(&sa, 0, sizeof(sa));
	sa.sin6_family = AF_INET6;
	sa.sin6_addr.in6_u.u6_addr32[0] = a[0];
	sa.sin6_addr.in6_u.u6_addr32[1] = a[1];
	sa.sin6_addr.in6_u.u6_addr32[2] = a[2];
	sa.sin6_addr.in6_u.u6_addr32[3] = a[3];
	return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
}

SEC("cgroup/connect4")
int osvipf_connect4(struct bpf_sock_addr *ctx)
{
	struct ipf_policy *p = policy();
	struct bpf_sock *sk = ctx->sk;

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	if (p->flags & IPF_V4_DISABLE)
		return deny(ENETUNREACH);
	if (!(p->flags & IPF_V4_NEW))
		return 1;
	__u32 dst = ctx->user_ip4;
	int err = remote4(p, sk, &dst);
	if (err)
		return deny(err);
	if (dst != ctx->user_ip4)
		ctx->user_ip4 = dst;
	if (sk->src_ip4)
		return allowed4(p, sk->src_ip4) ? 1 : deny(EADDRNOTAVAIL);
	/*
	 * Bound to the wildcard with a port (only possible without single_ip):
	 * the kernel would choose the source itself and we cannot steer it.
	 */
	if (sk->src_port || !p->n4)
		return deny(EADDRNOTAVAIL);
	err = bind_source4(ctx, p->v4[0]);
	return err ? deny(-err) : 1;
}

SEC("cgroup/connect6")
int osvipf_connect6(struct bpf_sock_addr *ctx)
{
	struct ipf_policy *p = policy();
	struct bpf_sock *sk = ctx->sk;
	int err;

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	__u32 dst[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__u32 src[4] = {sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]};

	if (is_mapped(dst)) {
		/* IPv4 through an AF_INET6 socket: the IPv4 policy applies. */
		if (p->flags & IPF_V4_DISABLE)
			return deny(ENETUNREACH); /* what an IPV6_V6ONLY socket gets */
		if (!(p->flags & IPF_V4_NEW))
			return 1;
		__u32 d = dst[3];
		err = remote4(p, sk, &d);
		if (err)
			return deny(err);
		if (d != dst[3])
			ctx->user_ip6[3] = d;
		if (is_mapped(src))
			return allowed4(p, src[3]) ? 1 : deny(EADDRNOTAVAIL);
		if (!is_any6(src))
			return 1; /* bound to a real IPv6 address: the kernel refuses a v4 peer itself */
		if (sk->src_port || !p->n4)
			return deny(EADDRNOTAVAIL);
		__u32 m[4] = {0, 0, bpf_htonl(0xffff), p->v4[0]};
		err = bind_source6(ctx, m);
		return err ? deny(-err) : 1;
	}
	if (!(p->flags & IPF_V6_NEW))
		return 1;
	err = remote6(p, sk, dst);
	if (err)
		return deny(err);
	ctx->user_ip6[0] = dst[0];
	ctx->user_ip6[1] = dst[1];
	ctx->user_ip6[2] = dst[2];
	ctx->user_ip6[3] = dst[3];
	if (!is_any6(src))
		return allowed6(p, src) ? 1 : deny(EADDRNOTAVAIL);
	if (sk->src_port || !p->n6)
		return deny(EADDRNOTAVAIL);
	err = bind_source6(ctx, p->v6[0]);
	return err ? deny(-err) : 1;
}

/*
 * Unconnected UDP sends (and any send carrying control messages). Also
 * reached by AF_INET6 sockets sending to a v4-mapped address: the kernel
 * hands those to the IPv4 path with a sockaddr_in.
 */
SEC("cgroup/sendmsg4")
int osvipf_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct ipf_policy *p = policy();

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	if (p->flags & IPF_V4_DISABLE)
		return deny(ENETUNREACH);
	if (!(p->flags & IPF_V4_NEW))
		return 1;
	__u32 dst = ctx->user_ip4;
	int err = remote4(p, ctx->sk, &dst);
	if (err)
		return deny(err);
	if (dst != ctx->user_ip4)
		ctx->user_ip4 = dst;
	/* The source: the bound address, an IP_PKTINFO choice, or 0 for "kernel picks". */
	__u32 src = ctx->msg_src_ip4;
	if (src)
		return allowed4(p, src) ? 1 : deny(EADDRNOTAVAIL);
	if (!p->n4)
		return deny(EADDRNOTAVAIL);
	ctx->msg_src_ip4 = p->v4[0];
	return 1;
}

SEC("cgroup/sendmsg6")
int osvipf_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct ipf_policy *p = policy();

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	if (!(p->flags & IPF_V6_NEW))
		return 1;
	__u32 dst[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	int err = remote6(p, ctx->sk, dst);
	if (err)
		return deny(err);
	ctx->user_ip6[0] = dst[0];
	ctx->user_ip6[1] = dst[1];
	ctx->user_ip6[2] = dst[2];
	ctx->user_ip6[3] = dst[3];
	__u32 src[4] = {ctx->msg_src_ip6[0], ctx->msg_src_ip6[1], ctx->msg_src_ip6[2], ctx->msg_src_ip6[3]};
	if (!is_any6(src))
		return allowed6(p, src) ? 1 : deny(EADDRNOTAVAIL);
	if (!p->n6)
		return deny(EADDRNOTAVAIL);
	ctx->msg_src_ip6[0] = p->v6[0][0];
	ctx->msg_src_ip6[1] = p->v6[0][1];
	ctx->msg_src_ip6[2] = p->v6[0][2];
	ctx->msg_src_ip6[3] = p->v6[0][3];
	return 1;
}

/*
 * recvmsg/getpeername: show the loopback address the application talked
 * to. These hooks cannot refuse anything. They read the policy anyway: the
 * cgroup storage exists only while a program that uses it is attached, and
 * index.ts attaches getpeername4 first so the policy can be written before
 * any enforcing program runs.
 */
static __always_inline int remapping(void)
{
	struct ipf_policy *p = policy();

	return (p->flags & IPF_CONFIGURED) && (p->flags & IPF_LOOPBACK_REMAP);
}

static __always_inline void unmap4(struct bpf_sock_addr *ctx)
{
	if (!remapping())
		return;
	struct ipf_remap *r = remap_of(ctx->sk, 0);
	if (r && r->lo4 && ctx->user_ip4 == r->to4)
		ctx->user_ip4 = r->lo4;
}

static __always_inline void unmap6(struct bpf_sock_addr *ctx)
{
	if (!remapping())
		return;
	struct ipf_remap *r = remap_of(ctx->sk, 0);
	if (!r)
		return;
	__u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	if (is_mapped(a)) {
		if (r->lo4 && a[3] == r->to4)
			ctx->user_ip6[3] = r->lo4;
	} else if (r->lo6 && a[0] == r->to6[0] && a[1] == r->to6[1] && a[2] == r->to6[2] && a[3] == r->to6[3]) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
}

SEC("cgroup/recvmsg4")
int osvipf_recvmsg4(struct bpf_sock_addr *ctx)
{
	unmap4(ctx);
	return 1;
}

SEC("cgroup/recvmsg6")
int osvipf_recvmsg6(struct bpf_sock_addr *ctx)
{
	unmap6(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int osvipf_getpeer4(struct bpf_sock_addr *ctx)
{
	unmap4(ctx);
	return 1;
}

SEC("cgroup/getpeername6")
int osvipf_getpeer6(struct bpf_sock_addr *ctx)
{
	unmap6(ctx);
	return 1;
}

static __always_inline int version_of(struct __sk_buff *skb)
{
	__u8 b;

	if (bpf_skb_load_bytes(skb, 0, &b, 1))
		return 0;
	return b >> 4;
}

/*
 * Packets delivered to the container's sockets. Needed for wildcard-bound
 * sockets (no single_ip, or a dual-stack "::"), which the kernel matches
 * for every local address: only traffic to the container's own addresses
 * (and multicast/broadcast) may reach them. Foreign SYNs are dropped, so a
 * client sees a timeout rather than a reset.
 */
SEC("cgroup_skb/ingress")
int osvipf_ingress(struct __sk_buff *skb)
{
	struct ipf_policy *p = policy();

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	int v = version_of(skb);
	if (v == 4) {
		__u32 dst;
		if (p->flags & IPF_V4_DISABLE)
			return 0;
		if (!(p->flags & IPF_V4_NEW))
			return 1;
		if (bpf_skb_load_bytes(skb, 16, &dst, 4))
			return 0;
		if ((bpf_ntohl(dst) >> 28) == 0xe || dst == 0xffffffff)
			return 1;
		return allowed4(p, dst);
	}
	if (v == 6) {
		__u32 dst[4];
		if (p->flags & IPF_V6_DISABLE)
			return 0;
		if (!(p->flags & IPF_V6_NEW))
			return 1;
		if (bpf_skb_load_bytes(skb, 24, dst, 16))
			return 0;
		if ((bpf_ntohl(dst[0]) >> 24) == 0xff)
			return 1;
		return allowed6(p, dst);
	}
	return 1;
}

/*
 * Packets sent by the container's sockets must carry one of its addresses
 * as the source, whatever path chose it (raw sockets with IP_HDRINCL, ping
 * sockets, anything the address hooks do not see).
 */
SEC("cgroup_skb/egress")
int osvipf_egress(struct __sk_buff *skb)
{
	struct ipf_policy *p = policy();

	if (!(p->flags & IPF_CONFIGURED))
		return 0;
	int v = version_of(skb);
	if (v == 4) {
		__u32 src;
		if (p->flags & IPF_V4_DISABLE)
			return 0;
		if (!(p->flags & IPF_V4_NEW))
			return 1;
		if (bpf_skb_load_bytes(skb, 12, &src, 4))
			return 0;
		return allowed4(p, src);
	}
	if (v == 6) {
		__u32 src[4];
		if (p->flags & IPF_V6_DISABLE)
			return 0;
		if (!(p->flags & IPF_V6_NEW))
			return 1;
		if (bpf_skb_load_bytes(skb, 8, src, 16))
			return 0;
		return allowed6(p, src);
	}
	return 1;
}

/* No GPL-only helper is used, so the project's own license is fine here. */
char LICENSE[] SEC("license") = "Apache-2.0";
