// The charter's kernel filter: a TC egress (clsact, direct-action) program that drops telemetry datagrams
// naming a metric the charter does not allow, before they leave the node.
//
// Wire format (Westworld telemetry, StatsD-like, one metric per line, ASCII, lines end with '\n'):
//
//     <name>:<value>|<type>[|#<label>:<value>,<label>:<value>...]
//
// e.g. `mesh_link_quality:0.93|g|#node:n1,peer:n2`. The name is everything before the LAST ':' ahead of the
// first '|' (Prometheus names may contain ':'), and must be ASCII [a-z_:][a-z0-9_:]*, 1..MAX_NAME bytes.
//
// A UDP datagram to TELEMETRY_PORT (IPv4 or IPv6 without extension headers) is dropped when:
//   - any line's name hash (64-bit FNV-1a, westworld.charter.name_hash) is not a key of `allowed`
//     (counted per name hash in `drops`, and in stats[STAT_NOT_ALLOWED]);
//   - a line is malformed: no '|', no ':' before it, an empty or too long name, a byte outside the name
//     alphabet in the name (upper case and non-ASCII included: look-alikes are refused, never folded)
//     (stats[STAT_MALFORMED]);
//   - the payload is empty or longer than MAX_PAYLOAD, or the UDP length disagrees with the packet
//     (stats[STAT_OVERSIZED] / stats[STAT_MALFORMED]);
//   - it is the first fragment of a fragmented datagram (stats[STAT_FRAGMENT]): the rest cannot be read here,
//     and without its first fragment the datagram is never reassembled.
// Everything else passes untouched. The filter fails closed: a telemetry datagram it cannot read is dropped.
// Label names, values and consent are checked by the userspace gate, which sees every datagram that passes.

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/udp.h>

#ifndef TELEMETRY_PORT
#define TELEMETRY_PORT 8125
#endif
#define MAX_PAYLOAD 1024 // a power of two: indexes are masked with MAX_PAYLOAD - 1 for the verifier
#define MAX_NAME 128
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

// What the filter returns for a packet it lets through: no verdict, so the next filter on the same hook (another
// gate's, on another port) still sees it, and with none left the packet goes on.
#define PASS TC_ACT_UNSPEC

#define STAT_PASSED 0
#define STAT_NOT_ALLOWED 1
#define STAT_MALFORMED 2
#define STAT_OVERSIZED 3
#define STAT_FRAGMENT 4
#define STAT_LINES 5

struct scan {
    u64 h, name;
    u32 n, name_len, lines, in_head, bad, colon, first;
};

struct payload {
    u8 data[MAX_PAYLOAD];
    struct scan sc;
};

BPF_HASH(allowed, u64, u8, 4096);
BPF_HASH(drops, u64, u64, 4096);
BPF_ARRAY(stats, u64, 8);
BPF_PERCPU_ARRAY(scratch, struct payload, 1);

static __always_inline int shot(int stat) {
    stats.increment(stat);
    return TC_ACT_SHOT;
}

static __always_inline int name_byte(u8 c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == ':';
}

int charter_egress(struct __sk_buff *skb) {
    u32 l4 = 0;
    int first_fragment = 0;
    if (skb->protocol == htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
            return PASS;
        if (ip.protocol != IPPROTO_UDP)
            return PASS;
        if (ip.frag_off & htons(0x1fff))
            return PASS; // a later fragment: no UDP header; its first fragment is judged below
        first_fragment = (ip.frag_off & htons(0x2000)) != 0;
        l4 = ETH_HLEN + ip.ihl * 4;
    } else if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
            return PASS;
        if (ip6.nexthdr != IPPROTO_UDP)
            return PASS;
        l4 = ETH_HLEN + sizeof(struct ipv6hdr);
    } else {
        return PASS;
    }
    struct udphdr udp;
    if (bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)) < 0)
        return PASS;
    if (udp.dest != htons(TELEMETRY_PORT))
        return PASS;
    if (first_fragment)
        return shot(STAT_FRAGMENT);

    u32 start = l4 + sizeof(struct udphdr);
    u32 len = ntohs(udp.len);
    if (len < sizeof(struct udphdr) || skb->len < start || len - sizeof(struct udphdr) != skb->len - start)
        return shot(STAT_MALFORMED);
    len -= sizeof(struct udphdr);
    if (len == 0)
        return shot(STAT_MALFORMED);
    if (len > MAX_PAYLOAD)
        return shot(STAT_OVERSIZED);

    u32 zero = 0;
    struct payload *buf = scratch.lookup(&zero);
    if (!buf)
        return shot(STAT_MALFORMED);
    // Load exactly len bytes (1..MAX_PAYLOAD): the mask and the checks keep the size in range for the verifier.
    u32 size = len & (MAX_PAYLOAD * 2 - 1);
    if (size < 1 || size > MAX_PAYLOAD)
        return shot(STAT_MALFORMED);
    if (bpf_skb_load_bytes(skb, start, buf->data, size) < 0)
        return shot(STAT_MALFORMED);

    // The scan's state lives in the map value, not in registers: the verifier then sees unknown values and
    // prunes the paths of one iteration together (with it in registers it walks every combination: E2BIG).
    volatile struct scan *sc = &buf->sc;
    sc->h = FNV_OFFSET; sc->name = 0; sc->n = 0; sc->name_len = 0; sc->lines = 0;
    sc->in_head = 1; sc->bad = 0; sc->colon = 0; sc->first = 1;
    for (u32 i = 0; i < MAX_PAYLOAD; i++) {
        if (i >= len)
            break;
        u8 c = buf->data[i & (MAX_PAYLOAD - 1)];
        if (!sc->in_head) { // the value, type and labels: the gate reads them
            if (c == '\n') {
                sc->in_head = 1; sc->h = FNV_OFFSET; sc->n = 0; sc->bad = 0; sc->colon = 0; sc->first = 1;
                sc->lines++;
            }
            continue;
        }
        if (c == '|') {
            if (!sc->colon || sc->name_len == 0 || sc->name_len > MAX_NAME)
                return shot(STAT_MALFORMED);
            u64 name = sc->name;
            if (!allowed.lookup(&name)) {
                drops.increment(name);
                return shot(STAT_NOT_ALLOWED);
            }
            sc->in_head = 0;
            continue;
        }
        if (c == '\n' || (c == ':' && sc->bad)) // a line without '|'; a byte outside the alphabet in the name
            return shot(STAT_MALFORMED);
        if (c == ':') {
            sc->colon = 1; sc->name = sc->h; sc->name_len = sc->n;
        } else if (!name_byte(c) || (sc->first && c >= '0' && c <= '9')) {
            sc->bad = 1;
        }
        sc->first = 0;
        sc->h = (sc->h ^ c) * FNV_PRIME;
        sc->n++;
        if (sc->n > MAX_NAME + 64)
            return shot(STAT_MALFORMED);
    }
    if (sc->in_head && sc->n != 0)
        return shot(STAT_MALFORMED); // a last line without '|'
    u64 lines = sc->lines + (sc->in_head ? 0 : 1);
    stats.increment(STAT_PASSED);
    stats.increment(STAT_LINES, lines);
    return PASS;
}

// The same attachment with no filtering: the floor the benchmark compares the filter against.
int pass_through(struct __sk_buff *skb) {
    return TC_ACT_OK;
}
