// What Cilium's BPF host routing and Calico's eBPF mode do on a node's devices, reduced to its
// core: a tc ingress program that hands IPv4 packets for one pod address straight to that pod's
// eth0 with bpf_redirect_peer (the pod's host-side veth ifindex, TARGET_IFINDEX), so they never
// leave through the host-side veth. Built at test time by tests/src/bypass.rs:
//   clang -O2 -target bpf -DPOD_IP=0x0a0a020a -DTARGET_IFINDEX=7 -c redirect_peer.c
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>

static long (*bpf_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;

__attribute__((section("tc"), used)) int cni_redirect(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
		return TC_ACT_OK;
	if (ip->daddr != __builtin_bswap32(POD_IP))
		return TC_ACT_OK;
	return bpf_redirect_peer(TARGET_IFINDEX, 0);
}

char _license[] __attribute__((section("license"), used)) = "GPL";
