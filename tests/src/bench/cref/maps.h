/* The structs and maps of the enforcer datapath, mirrored in C for the reference program
 * (reference.c). The Rust definitions are the truth: enforcer-common/src/maps.rs (structs),
 * enforcer-ebpf/src/maps.rs (maps), enforcer-ebpf/src/denied.rs (DENIED_FLOWS). The bench
 * compiles this header with a _Static_assert for the size of every struct and the offset and
 * size of every field of enforcer_common::layout::SHAPES (tests/src/bench/cref.rs), so a struct
 * that changes on the Rust side stops the build of the reference instead of measuring other work.
 * The maps are not created from these definitions: the loader reuses the loaded datapath's maps. */
#ifndef ENFORCER_CREF_MAPS_H
#define ENFORCER_CREF_MAPS_H

#include <linux/bpf.h>

/* The constants (codes, flags, key bits, reserved identities) come from enforcer_common, written
 * by the bench into a generated header included before this one (`cref.rs`, `constants`). */

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define always_inline inline __attribute__((always_inline))

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   u64 flags) = (void *)BPF_FUNC_map_update_elem;
static u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static u64 (*bpf_ktime_get_coarse_ns)(void) = (void *)BPF_FUNC_ktime_get_coarse_ns;
static long (*bpf_skb_pull_data)(struct __sk_buff *skb, u32 len) = (void *)BPF_FUNC_skb_pull_data;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, u64 size, u64 flags) =
    (void *)BPF_FUNC_ringbuf_reserve;
static void (*bpf_ringbuf_submit)(void *data, u64 flags) = (void *)BPF_FUNC_ringbuf_submit;

typedef u8 Addr[16];

struct Config {
	u64 generation;
	u32 slot;
	u32 flags;
};

struct IdentityKey {
	u32 slot;
	Addr addr;
};

struct IdentityValue {
	u32 id;
	u32 flags;
};

struct CidrKey {
	u32 prefixlen;
	u8 data[17];
};

struct EndpointKey {
	u32 ifindex;
	Addr addr;
};

struct PolicyKey {
	u32 prefixlen;
	u8 data[16];
};

struct PolicyValue {
	u32 rule;
	u32 audit_rule;
	u32 ratelimit;
	u8 verdict;
	u8 audit_verdict;
	u8 reason;
	u8 audit_reason;
};

struct CtKey {
	Addr a;
	Addr b;
	u16 a_port;
	u16 b_port;
	u8 protocol;
	u8 _pad;
	u16 _pad2;
} __attribute__((aligned(8)));

struct CtValue {
	u64 generation[2];
	u32 rule[2];
	u16 flags[2];
	u16 policy_port;
	u8 origin;
	u8 state;
	u32 ifindex[2];
	u32 seen;
	u32 _pad;
};

/* enforcer-ebpf/src/denied.rs (not in enforcer-common: the agent never reads it). */
struct DeniedKey {
	Addr src;
	Addr dst;
	u16 sport;
	u16 port;
	u8 protocol;
	u8 direction;
	u16 _pad;
} __attribute__((aligned(8)));

struct DeniedValue {
	u64 generation;
	u64 reported_ns;
	u32 rule;
	u32 src_identity;
	u32 dst_identity;
	u32 proven_if;
	u8 reason;
	u8 _pad[7];
};

struct Event {
	u64 timestamp_ns;
	Addr src;
	Addr dst;
	u16 sport;
	u16 dport;
	u8 protocol;
	u8 direction;
	u8 verdict;
	u8 reason;
	u32 src_identity;
	u32 dst_identity;
	u32 rule;
	u32 ifindex;
	u64 generation;
};

/* Types and key/value sizes as the datapath creates them; max_entries is the loaded map's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct Config);
} CONFIG SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct IdentityKey);
	__type(value, struct IdentityValue);
} IDENTITIES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct CidrKey);
	__type(value, struct IdentityValue);
} CIDR_IDENTITIES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct PolicyKey);
	__type(value, struct PolicyValue);
} POLICY SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct CtKey);
	__type(value, struct CtValue);
} CONNTRACK SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct EndpointKey);
	__type(value, u32);
} ENDPOINTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} COUNTERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} RULE_COUNTERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} EVENT_STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct DeniedKey);
	__type(value, struct DeniedValue);
} DENIED_FLOWS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} EVENTS SEC(".maps");

#endif
