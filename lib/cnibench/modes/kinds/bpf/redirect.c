/* cnib redirect: the tc programs of the ebpf-redirect network mode (Cilium's veth datapath).
 *
 * Two programs, attached with tc (clsact, direct-action) on ingress:
 *   cnib_from_pod  on the host side of each pod's veth: a packet for a peer host's pod subnet
 *                  (LPM map cnib_peers) leaves the data NIC at once, the next hop's MAC filled
 *                  in by the kernel's neighbour table (bpf_redirect_neigh); the host's IP stack
 *                  never routes it.
 *   cnib_from_net  on the data NIC: a packet addressed to a local pod (hash map cnib_pods) gets
 *                  the pod's MACs and goes straight into the pod's namespace (bpf_redirect_peer
 *                  to the peer of the host-side veth).
 * Everything else passes unchanged (TC_ACT_OK): ARP, IPv6, the host's own traffic, SSH.
 * Both decrement the TTL as a router would (as Cilium does). cnib_stats counts, per CPU, the
 * redirects the helpers accepted and refused; mode.verify reads it with bpftool.
 *
 * The maps are filled by `bpftool map update` from the mode's plan: ifindexes and addresses in
 * network byte order (the plan does not know the host's byte order), except the LPM key's
 * prefix length, which the kernel reads in host order (the mode refuses big-endian hosts).
 *
 * Built on each host at set-up: clang -O2 -g -target bpf -c redirect.c (see modes/kinds/bpf/__init__.py).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define PACKET_HOST 0

enum { NEIGH_OK, PEER_OK, NEIGH_FAILED, PEER_FAILED, N_STATS };

struct pod {
	__be32 ifindex; /* host side of the pod's veth */
	__u8 pod_mac[ETH_ALEN]; /* the pod's eth0 */
	__u8 host_mac[ETH_ALEN]; /* the host side of the veth */
};

struct peer_key {
	__u32 prefixlen; /* host byte order (LPM trie) */
	__be32 addr;
};

struct peer {
	__be32 ifindex; /* the data NIC */
	__be32 nexthop; /* the peer host's data address */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __be32); /* pod address */
	__type(value, struct pod);
} cnib_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer_key); /* a peer host's pod subnet */
	__type(value, struct peer);
} cnib_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, N_STATS);
	__type(key, __u32);
	__type(value, __u64);
} cnib_stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&cnib_stats, &i);

	if (c)
		*c += 1; /* per-CPU: no atomic needed */
}

/* The IPv4 header after an Ethernet header, or NULL (not IPv4, too short). */
static __always_inline struct iphdr *ipv4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4)
		return NULL;
	return ip;
}

/* TTL - 1 with the header checksum updated (ttl and protocol share one 16-bit word). */
static __always_inline int dec_ttl(struct __sk_buff *skb, __u8 ttl, __u8 proto)
{
	__u16 old = bpf_htons(((__u16)ttl << 8) | proto);
	__u16 new = bpf_htons(((__u16)(ttl - 1) << 8) | proto);
	__u8 nttl = ttl - 1;

	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, sizeof(new)))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &nttl, 1, 0);
}

SEC("tc")
int cnib_from_pod(struct __sk_buff *skb)
{
	struct iphdr *ip = ipv4(skb);
	struct peer_key key = { .prefixlen = 32 };
	struct bpf_redir_neigh nh = { .nh_family = AF_INET };
	struct peer *p;
	__u8 ttl, proto;
	long ret;

	if (!ip)
		return TC_ACT_OK;
	key.addr = ip->daddr;
	ttl = ip->ttl;
	proto = ip->protocol;
	p = bpf_map_lookup_elem(&cnib_peers, &key);
	if (!p || ttl <= 1) /* not for a peer's pod, or expiring: the stack decides */
		return TC_ACT_OK;
	nh.ipv4_nh = p->nexthop;
	if (dec_ttl(skb, ttl, proto))
		return TC_ACT_SHOT;
	ret = bpf_redirect_neigh(bpf_ntohl(p->ifindex), &nh, sizeof(nh), 0);
	count(ret == TC_ACT_REDIRECT ? NEIGH_OK : NEIGH_FAILED);
	return ret;
}

SEC("tc")
int cnib_from_net(struct __sk_buff *skb)
{
	struct iphdr *ip = ipv4(skb);
	struct pod *p;
	__be32 daddr;
	__u8 ttl, proto;
	long ret;

	if (!ip || skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;
	daddr = ip->daddr;
	ttl = ip->ttl;
	proto = ip->protocol;
	p = bpf_map_lookup_elem(&cnib_pods, &daddr);
	if (!p || ttl <= 1)
		return TC_ACT_OK;
	if (dec_ttl(skb, ttl, proto) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), p->pod_mac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), p->host_mac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	ret = bpf_redirect_peer(bpf_ntohl(p->ifindex), 0);
	count(ret == TC_ACT_REDIRECT ? PEER_OK : PEER_FAILED);
	return ret;
}

char _license[] SEC("license") = "Dual MIT/GPL";
