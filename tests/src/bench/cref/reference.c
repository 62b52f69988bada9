/* The C reference of the `datapath` benchmark: the work `from_pod` and `to_pod` do for a whole
 * TCP or UDP packet, written as plain C on the same maps (the loaded datapath's, reused), so that
 * enforcer ÷ reference says how far the Rust programs are from what the same work costs.
 *
 * Mirrored: the parse (Ethernet, IPv4 without fragments, IPv6 without extension headers, TCP or
 * UDP ports and TCP flags), the one CONNTRACK lookup and its established fast path (the
 * generation of the side, the anti-spoofing proof of from_pod's interface in the entry, the
 * aging facts: last-seen second and TCP state), the tracked-flow path that renews that proof, the ENDPOINTS anti-spoofing check of a new flow, the
 * judgment (two IDENTITIES lookups with the CIDR_IDENTITIES fallback, the POLICY trie for the
 * peer then for any peer), the CONNTRACK insert of an allowed flow, the recently-denied cache
 * (DENIED_FLOWS, looked up before anti-spoofing and the judgment) and the drop-event aggregation
 * of a denied flow, the counters (COUNTERS, RULE_COUNTERS, EVENT_STATS) and the
 * events (EVENTS). Not mirrored (the program passes the packet without counting it, so a
 * benchmark row that needs it fails its counter check): VLAN tags, fragments, IPv6 extension
 * headers, ICMP, rate limits, a side judged under an older generation, no active policy. */
#include "maps.h"

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_SHOT 2
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* A packet as the policy sees it: addresses IPv4-mapped, ports in host order. */
struct packet {
	Addr src;
	Addr dst;
	u16 sport;
	u16 dport;
	u8 protocol;
	u8 tcp_flags;
} __attribute__((aligned(8)));

enum parsed { MALFORMED, NOT_MIRRORED, IP };

static always_inline u16 be16(const u8 *b) { return (u16)(b[0] << 8 | b[1]); }

static always_inline enum parsed parse(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	u8 *eth = data;
	if ((void *)(eth + ETH_HLEN) > end)
		return MALFORMED;
	u16 proto = be16(eth + 12);
	u8 *l4;
	if (proto == ETH_P_IP) {
		u8 *ip = eth + ETH_HLEN;
		if ((void *)(ip + 20) > end || ip[0] >> 4 != 4)
			return MALFORMED;
		u32 ihl = (ip[0] & 0xf) * 4;
		if (ihl < 20)
			return MALFORMED;
		if (be16(ip + 6) & 0x3fff)
			return NOT_MIRRORED; /* a fragment */
		u64 *s = (u64 *)p->src, *d = (u64 *)p->dst;
		s[0] = 0;
		d[0] = 0;
		/* ::ffff:a.b.c.d */
		((u32 *)p->src)[2] = __builtin_bswap32(0xffff);
		((u32 *)p->dst)[2] = __builtin_bswap32(0xffff);
		((u32 *)p->src)[3] = *(u32 *)(ip + 12);
		((u32 *)p->dst)[3] = *(u32 *)(ip + 16);
		p->protocol = ip[9];
		l4 = ip + ihl;
	} else if (proto == ETH_P_IPV6) {
		u8 *ip = eth + ETH_HLEN;
		if ((void *)(ip + 40) > end || ip[0] >> 4 != 6)
			return MALFORMED;
		__builtin_memcpy(p->src, ip + 8, 16);
		__builtin_memcpy(p->dst, ip + 24, 16);
		p->protocol = ip[6];
		l4 = ip + 40;
	} else {
		return NOT_MIRRORED;
	}
	if (p->protocol == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > end)
			return MALFORMED;
		p->tcp_flags = l4[13];
	} else if (p->protocol == IPPROTO_UDP) {
		if ((void *)(l4 + 8) > end)
			return MALFORMED;
		p->tcp_flags = 0;
	} else {
		return NOT_MIRRORED;
	}
	p->sport = be16(l4);
	p->dport = be16(l4 + 2);
	return IP;
}

static always_inline void bump(void *map, u32 index)
{
	u64 *c = bpf_map_lookup_elem(map, &index);
	if (c)
		*c += 1;
}

static always_inline void count(u8 dir, u8 verdict, u8 reason, u32 rule)
{
	bump(&COUNTERS, ((u32)dir * VERDICTS + verdict) * REASONS + reason);
	if (rule)
		bump(&RULE_COUNTERS, rule);
}

struct decision {
	u32 rule, src_id, dst_id, ratelimit;
	u8 verdict, reason;
};

static always_inline void report(const struct packet *p, u8 dir, u32 ifindex,
				 const struct Config *cfg, const struct decision *d)
{
	struct Event *e = bpf_ringbuf_reserve(&EVENTS, sizeof(*e), 0);
	if (!e) {
		bump(&EVENT_STATS, EVENT_STAT_LOST);
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->sport = p->sport;
	e->dport = p->dport;
	e->protocol = p->protocol;
	e->direction = dir;
	e->verdict = d->verdict;
	e->reason = d->reason;
	e->src_identity = d->src_id;
	e->dst_identity = d->dst_id;
	e->rule = d->rule;
	e->ifindex = ifindex;
	e->generation = cfg->generation;
	bpf_ringbuf_submit(e, 0);
}

static always_inline struct IdentityValue identity_of(u32 slot, const Addr addr)
{
	struct IdentityKey k = { .slot = slot };
	__builtin_memcpy(k.addr, addr, 16);
	struct IdentityValue *v = bpf_map_lookup_elem(&IDENTITIES, &k);
	if (v)
		return *v;
	struct CidrKey c = { .prefixlen = CIDR_KEY_FULL_BITS };
	c.data[0] = (u8)slot;
	__builtin_memcpy(c.data + 1, addr, 16);
	v = bpf_map_lookup_elem(&CIDR_IDENTITIES, &c);
	if (v)
		return *v;
	return (struct IdentityValue){ .id = IDENTITY_WORLD, .flags = 0 };
}

static always_inline struct PolicyValue *policy(u32 slot, u8 dir, u32 subject, u32 peer,
						 const struct packet *p)
{
	struct PolicyKey k = { .prefixlen = POLICY_KEY_FULL_BITS };
	k.data[0] = (u8)slot;
	k.data[1] = dir;
	k.data[2] = subject >> 24;
	k.data[3] = subject >> 16;
	k.data[4] = subject >> 8;
	k.data[5] = subject;
	k.data[6] = peer >> 24;
	k.data[7] = peer >> 16;
	k.data[8] = peer >> 8;
	k.data[9] = peer;
	k.data[10] = p->protocol;
	k.data[11] = p->dport >> 8;
	k.data[12] = p->dport;
	return bpf_map_lookup_elem(&POLICY, &k);
}

/* The judgment of a new flow, as `policy::decide`. */
static always_inline struct decision decide(const struct Config *cfg, u8 dir,
					    const struct packet *p)
{
	struct IdentityValue src = identity_of(cfg->slot, p->src);
	struct IdentityValue dst = identity_of(cfg->slot, p->dst);
	struct decision d = { .verdict = VERDICT_ALLOW, .reason = REASON_NOT_ISOLATED,
			      .src_id = src.id, .dst_id = dst.id };
	if (src.id == IDENTITY_UNKNOWN || dst.id == IDENTITY_UNKNOWN) {
		d.verdict = VERDICT_DENY;
		d.reason = REASON_UNKNOWN_ENDPOINT;
		return d;
	}
	if (dir == DIR_INGRESS && src.flags & IDF_HOST) {
		d.reason = REASON_HOST;
		return d;
	}
	u32 subject = dir == DIR_INGRESS ? dst.id : src.id;
	u32 peer = dir == DIR_INGRESS ? src.id : dst.id;
	struct PolicyValue *v = policy(cfg->slot, dir, subject, peer, p);
	if (!v)
		v = policy(cfg->slot, dir, subject, IDENTITY_ANY, p);
	if (!v)
		return d;
	if (v->verdict == VERDICT_DENY) {
		d.verdict = VERDICT_DENY;
		d.reason = v->reason;
		d.rule = v->rule;
	} else if (v->audit_verdict == VERDICT_DENY) {
		d.verdict = VERDICT_AUDIT;
		d.reason = v->audit_reason;
		d.rule = v->audit_rule;
	} else {
		d.reason = v->reason;
		d.rule = v->rule;
		d.ratelimit = v->ratelimit;
	}
	return d;
}

static always_inline void denied_key(const struct packet *p, u8 dir, struct DeniedKey *k)
{
	*k = (struct DeniedKey){ .sport = p->sport, .port = p->dport, .protocol = p->protocol,
				 .direction = dir };
	__builtin_memcpy(k->src, p->src, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
}

/* Whether a drop last reported at *reported_ns is reported now (and if so, note now). */
static always_inline int due(u64 *reported_ns)
{
	u64 now = bpf_ktime_get_ns();
	if (now - *reported_ns < DENIED_REPORT_INTERVAL_NS)
		return 0;
	*reported_ns = now;
	return 1;
}

/* The recently-denied cache, as `denied::recent`: 1 if the flow was denied under the active
 * generation (from_pod: proven on this interface), with its decision in *d and whether it is
 * reported in *report. */
static always_inline int recent(const struct packet *p, u8 dir, const struct Config *cfg,
				u32 ifindex, struct decision *d, int *report)
{
	struct DeniedKey k;
	denied_key(p, dir, &k);
	struct DeniedValue *v = bpf_map_lookup_elem(&DENIED_FLOWS, &k);
	if (!v || v->generation != cfg->generation ||
	    (dir == DIR_EGRESS && v->proven_if != ifindex))
		return 0;
	*d = (struct decision){ .rule = v->rule, .src_id = v->src_identity,
				.dst_id = v->dst_identity, .verdict = VERDICT_DENY,
				.reason = v->reason };
	*report = due(&v->reported_ns);
	return 1;
}

/* Remember a denial judged in full and say whether it is reported, as `denied::remember`. */
static always_inline int remember(const struct packet *p, u8 dir, const struct Config *cfg,
				  u32 proven, const struct decision *d)
{
	struct DeniedKey k;
	denied_key(p, dir, &k);
	struct DeniedValue nv = { .generation = cfg->generation, .rule = d->rule,
				  .src_identity = d->src_id, .dst_identity = d->dst_id,
				  .proven_if = proven, .reason = d->reason };
	struct DeniedValue *v = bpf_map_lookup_elem(&DENIED_FLOWS, &k);
	int report = 1;
	if (v && v->generation == cfg->generation) {
		nv.reported_ns = v->reported_ns;
		report = due(&nv.reported_ns);
	} else {
		nv.reported_ns = bpf_ktime_get_ns();
	}
	bpf_map_update_elem(&DENIED_FLOWS, &k, &nv, BPF_ANY);
	return report;
}

/* The conntrack key (ends ordered by address as big-endian words, then port); returns whether
 * the packet's source is end `a`. */
static always_inline int ct_key(const struct packet *p, struct CtKey *k)
{
	const u64 *s = (const u64 *)p->src, *d = (const u64 *)p->dst;
	u64 s0 = __builtin_bswap64(s[0]), s1 = __builtin_bswap64(s[1]);
	u64 d0 = __builtin_bswap64(d[0]), d1 = __builtin_bswap64(d[1]);
	int src_is_a = s0 < d0 || (s0 == d0 && (s1 < d1 || (s1 == d1 && p->sport <= p->dport)));
	u64 *a = (u64 *)k->a, *b = (u64 *)k->b;
	a[0] = src_is_a ? s[0] : d[0];
	a[1] = src_is_a ? s[1] : d[1];
	b[0] = src_is_a ? d[0] : s[0];
	b[1] = src_is_a ? d[1] : s[1];
	k->a_port = src_is_a ? p->sport : p->dport;
	k->b_port = src_is_a ? p->dport : p->sport;
	k->protocol = p->protocol;
	k->_pad = 0;
	k->_pad2 = 0;
	return src_is_a;
}

/* from_pod's anti-spoofing: 1 proven, 0 unchecked, -1 spoofed. */
static always_inline int source_check(const struct packet *p, u32 ifindex)
{
	struct EndpointKey k = { .ifindex = ifindex };
	__builtin_memcpy(k.addr, p->src, 16);
	if (bpf_map_lookup_elem(&ENDPOINTS, &k))
		return 1;
	__builtin_memset(k.addr, 0, 16);
	return bpf_map_lookup_elem(&ENDPOINTS, &k) ? -1 : 0;
}

static always_inline u32 now_secs(void) { return (u32)(bpf_ktime_get_coarse_ns() / 1000000000); }

/* conntrack.rs `touch`: last seen (written when the second changed), replied, TCP closing. */
static always_inline void touch(struct CtValue *ct, const struct packet *p, int forward)
{
	u32 now = now_secs();
	if (ct->seen != now)
		ct->seen = now;
	u8 state = ct->state;
	if (!forward)
		state |= CT_STATE_REPLIED;
	if (p->tcp_flags & (TCP_FIN | TCP_RST))
		state |= CT_STATE_CLOSING;
	else if ((p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		state = 0;
	if (state != ct->state)
		ct->state = state;
}

static always_inline int judge(struct __sk_buff *skb, const u8 dir)
{
	u32 len = skb->len < 128 ? skb->len : 128;
	if (skb->data_end - skb->data < len)
		bpf_skb_pull_data(skb, len);
	struct packet p;
	enum parsed parsed = parse(skb, &p);
	if (parsed == MALFORMED)
		return TC_ACT_SHOT;
	if (parsed == NOT_MIRRORED)
		return TC_ACT_UNSPEC;
	u32 zero = 0;
	struct Config *c = bpf_map_lookup_elem(&CONFIG, &zero);
	if (!c || !(c->flags & CONFIG_ACTIVE))
		return TC_ACT_UNSPEC;
	struct Config cfg = *c;
	u32 ifindex = skb->ifindex;
	struct CtKey k;
	int src_is_a = ct_key(&p, &k);
	struct CtValue *ct = bpf_map_lookup_elem(&CONNTRACK, &k);
	if (ct) {
		int end = !src_is_a;
		int forward = (ct->origin == CT_ORIGIN_A) == src_is_a;
		touch(ct, &p, forward);
		int side = (forward ? dir : dir ^ 1) & 1;
		u64 generation = ct->generation[side];
		if (generation != cfg.generation || generation == 0 ||
		    (forward && ct->flags[side] & CT_RATE_LIMITED))
			return TC_ACT_UNSPEC;
		if (dir == DIR_EGRESS && ct->ifindex[end] != ifindex) {
			/* The tracked path: prove the source, then record the proof. */
			int src = source_check(&p, ifindex);
			if (src < 0)
				goto spoofed;
			if (src > 0)
				ct->ifindex[end] = ifindex;
		}
		u8 verdict = ct->flags[side] & CT_AUDIT ? VERDICT_AUDIT : VERDICT_ALLOW;
		count(dir, verdict, REASON_ESTABLISHED, ct->rule[side]);
		return TC_ACT_UNSPEC;
	}
	struct decision d;
	int report_it;
	if (recent(&p, dir, &cfg, ifindex, &d, &report_it)) {
		count(dir, d.verdict, d.reason, d.rule);
		if (report_it)
			report(&p, dir, ifindex, &cfg, &d);
		else
			bump(&EVENT_STATS, EVENT_STAT_SAMPLED_OUT);
		return TC_ACT_SHOT;
	}
	u32 proven = 0;
	if (dir == DIR_EGRESS) {
		int src = source_check(&p, ifindex);
		if (src < 0)
			goto spoofed;
		proven = src > 0 ? ifindex : 0;
	}
	d = decide(&cfg, dir, &p);
	count(dir, d.verdict, d.reason, d.rule);
	if (d.verdict == VERDICT_DENY) {
		if (remember(&p, dir, &cfg, proven, &d))
			report(&p, dir, ifindex, &cfg, &d);
		else
			bump(&EVENT_STATS, EVENT_STAT_SAMPLED_OUT);
		return TC_ACT_SHOT;
	}
	if (p.protocol != IPPROTO_TCP || (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		struct CtValue v = { .policy_port = p.dport,
				     .origin = src_is_a ? CT_ORIGIN_A : CT_ORIGIN_B,
				     .seen = now_secs() };
		if (src_is_a)
			v.ifindex[1] = proven;
		else
			v.ifindex[0] = proven;
		u16 flags = (d.verdict == VERDICT_AUDIT ? CT_AUDIT : 0) |
			    (d.ratelimit ? CT_RATE_LIMITED : 0);
		if (dir == DIR_INGRESS) {
			v.generation[0] = cfg.generation;
			v.rule[0] = d.rule;
			v.flags[0] = flags;
		} else {
			v.generation[1] = cfg.generation;
			v.rule[1] = d.rule;
			v.flags[1] = flags;
		}
		bpf_map_update_elem(&CONNTRACK, &k, &v, BPF_ANY);
	}
	report(&p, dir, ifindex, &cfg, &d);
	return TC_ACT_UNSPEC;
spoofed:;
	struct decision s = { .verdict = VERDICT_DENY, .reason = REASON_SPOOFED };
	count(dir, s.verdict, s.reason, 0);
	report(&p, dir, ifindex, &cfg, &s);
	return TC_ACT_SHOT;
}

SEC("classifier")
int cref_from_pod(struct __sk_buff *skb)
{
	return judge(skb, DIR_EGRESS);
}

SEC("classifier")
int cref_to_pod(struct __sk_buff *skb)
{
	return judge(skb, DIR_INGRESS);
}

char LICENSE[] SEC("license") = "GPL";
