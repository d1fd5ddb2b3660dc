/* The packet scanner: reads a classic pcap file (or libpcap's next_batch buffers), numbers every frame, decodes
 * link, IP, tunnel and TCP headers, and hands Python only the TCP segments it admits: packets to or from the named
 * server ports, the first packets of each new flow (every-port mode), and every packet of the flows and server
 * endpoints Python declared mail. The rest is dropped here and counted, without a Python object.
 *
 * passive/capture/scanner.py holds the pure-Python twin of this file (same interface, same admission rules, same
 * segment tuples); tests/test_scanner.py runs both on every capture and compares them. The decoder is a port of
 * passive/capture/linklayer.py and tunnels.py: every read is bounds-checked, statuses and segment fields are the
 * same. Nothing here trusts the file: record lengths are capped (MAX_RECORD), tunnels are peeled MAX_DEPTH deep,
 * IPv6 extension headers are walked at most 64 times, a user BPF program is validated before it runs. A flow is
 * its 4-tuple and its virtual network (a VXLAN or Geneve VNI: tunnels.py). IP packets fragmented on their
 * way are joined again within fixed bounds (defrag.py: MAX_DATAGRAMS, MAX_PIECES, FRAGMENT_TIMEOUT).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- limits and constants (kept equal to the Python side: passive/capture/scanner.py, linklayer.py) ---- */

#define MAX_RECORD 262144            /* pcapfile.MAX_RECORD */
#define MAX_BLOCK (16u << 20)        /* pcapfile.MAX_BLOCK: a pcapng block is read whole, the buffer grown for it */
#define MAX_INTERFACES 65536         /* pcapfile.MAX_INTERFACES: in one pcapng section */
#define PCAPNG_SHB 0x0A0D0D0Au
#define PCAPNG_BOM 0x1A2B3C4Du
#define READ_BUFFER (1u << 19)       /* bytes of a capture file read at once into one reused buffer: the
                                      * longest record fits, and the buffer stays in the CPU's cache while its
                                      * packets are decoded (on the 1 GB bench capture 256 KiB to 1 MiB cost the
                                      * least CPU; mapping the file cost more, in page faults and cache misses) */
_Static_assert(READ_BUFFER >= 16 + MAX_RECORD, "the longest record and its header fit");
#define TAILS_KEPT (1u << 18)        /* bytes of the tail store kept allocated between batches; more is freed */
#define MAX_DEPTH 4                  /* tunnels.MAX_DEPTH */
#define MAX_LABELS 16                /* tunnels.MAX_LABELS */
#define MAX_VLAN_TAGS 3              /* linklayer.MAX_VLAN_TAGS */
#define MAX_TABLE_FLOWS (1u << 19)   /* scanner.MAX_SCAN_FLOWS: flow states held at once */
#define MAX_SERVERS 65536            /* scanner.MAX_SERVERS: mail server endpoints held */
#define HEAD_QUIET 32                /* flowhead.HEAD_QUIET: head packets without new bytes, beyond one per data one */
#define HEAD_LINE_BYTES 1024         /* flowhead.HEAD_LINE_BYTES: a head in small text pieces extends to this */
#define HEAD_SHARE_SHIFT 4           /* flowhead.HEAD_SHARE = 1 << 4: extended head packets per packet read, at most */
#define HEAD_FLOOR 65536             /* flowhead.HEAD_FLOOR: extended head packets allowed whatever was read */
#define MAX_EXTENDING 64             /* flowhead.MAX_EXTENDING: flows whose head extends at once (slots) */
#define EXTENDING 4                  /* entry_t.known: the flow's head has extended, and it is undecided */
#define BPF_MAXINSNS 4096

enum { SEGMENT = 0, NOT_IP = 1, NOT_TCP = 2, MALFORMED = 3, FRAGMENT_V4 = 4, FRAGMENT_V6 = 5,
       UNSUPPORTED_LINK = 6, TOO_MANY_TAGS = 7 };
enum { INFO_IPV6 = 1, INFO_EXT_HEADERS = 2, INFO_FIRST_FRAGMENT = 4, INFO_GRE = 8, INFO_ERSPAN = 16,
       INFO_VXLAN = 32, INFO_GENEVE = 64, INFO_MPLS = 128, INFO_PPPOE = 256, INFO_IPIP = 512,
       INFO_CSUM_VALID = 1 << 10, INFO_CSUM_BAD = 1 << 11, INFO_CSUM_LEFT = 1 << 12, /* checksums.INFO_CSUM_* */
       INFO_OUTER_WRONG = 1 << 13, INFO_OUTER_LEFT = 1 << 14 /* checksums.INFO_OUTER_* */ };
#define INFO_VNET_SHIFT 16        /* linklayer.INFO_VNET_SHIFT */
#define INFO_BITS 0xFFFFull
#define VNET_VXLAN (1ull << 32)   /* tunnels.VNET_VXLAN, VNET_GENEVE */
#define VNET_GENEVE (2ull << 32)
enum { INNER_DAMAGED = 0, INNER_ETHERNET = 1, INNER_IPV4 = 4, INNER_IPV6 = 6, INNER_MPLS = 7 };
enum { TCP_FIN = 1, TCP_SYN = 2, TCP_RST = 4, TCP_ACK = 16 };
enum { ST_FREE = 0, ST_NEW = 1, ST_KEEP = 2, ST_DROP = 3, ST_CUT = 4 }; /* CUT: undecided past its head */
#define PCAP_MAGIC_USEC 0xA1B2C3D4u
#define PCAP_MAGIC_NSEC 0xA1B23C4Du

/* Counter slots; scanner.COUNTERS names them in this order. */
enum { C_READ, C_ADMITTED, C_FILTERED, C_NOT_TCP, C_MALFORMED, C_FRAGMENTS, C_UNSUPPORTED, C_OTHER_PORT,
       C_OTHER_WORKER, C_NOT_MAIL, C_PAST_HEAD, C_TRUNCATED, C_GRE, C_ERSPAN, C_VXLAN, C_GENEVE, C_MPLS, C_PPPOE,
       C_IPIP, C_TABLE_RESETS, C_HEAD_EXTENDED, N_COUNTERS };
static const char *COUNTER_NAMES[N_COUNTERS] = {
    "read", "admitted", "filtered", "not_tcp", "malformed", "fragments", "unsupported_link", "other_port",
    "other_worker", "not_mail", "past_head", "truncated", "gre", "erspan", "vxlan", "geneve", "mpls", "pppoe",
    "ip-in-ip", "table_resets", "head_extended"};

/* ---- decoding (linklayer.py) ---- */

typedef struct {
    const uint8_t *src, *dst;
    int alen;
    unsigned sport, dport;
    uint32_t seq, ack;
    unsigned flags, window;
    Py_ssize_t pstart, plen; /* captured payload: data[pstart : pstart + plen] */
    Py_ssize_t wire_len;
    uint64_t info;         /* INFO_* bits, the virtual network id above them (INFO_VNET_SHIFT) */
    uint64_t options;
    Py_ssize_t ip_at, tcp_at, tcp_end; /* the IPv4 header (-1: IPv6), the TCP segment: for checksum_bits */
    Py_ssize_t captured;   /* where the bytes that are the segment's packet end (a tunnel's outer packet may cut it) */
} seg_t;

/* Big-endian fields, each read as one load (the callers have checked the bounds). */
static inline unsigned u16(const uint8_t *d, Py_ssize_t at) {
    uint16_t v;
    memcpy(&v, d + at, 2);
    return __builtin_bswap16(v);
}
static inline uint32_t u32be(const uint8_t *d, Py_ssize_t at) {
    uint32_t v;
    memcpy(&v, d + at, 4);
    return __builtin_bswap32(v);
}
static inline uint32_t u32le(const uint8_t *d, Py_ssize_t at) {
    return (uint32_t)d[at + 3] << 24 | (uint32_t)d[at + 2] << 16 | (uint32_t)d[at + 1] << 8 | d[at];
}

/* ---- IP options and IPv6 extension headers a receiver refuses (ipoptions.py: the same rules) ---- */

#define MAX_TLV_OPTIONS 8 /* ipoptions.MAX_TLV_OPTIONS */
#define MAX_EXTENSION_HEADERS (65535 / 8 + 1) /* ipoptions.MAX_EXTENSION_HEADERS */

/* ipoptions.FRAGMENTED: headers a Fragment header may name besides TCP and tunnels (its pieces joined all the same) */
static int is_fragmented_header(unsigned kind) { return kind == 0 || kind == 43 || kind == 60 || kind == 51; }
#define MAX_PADDING 7     /* ipoptions.MAX_PADDING */

/* ipoptions._option_refused: one IPv4 option that is not EOL or NOP, `len` bytes at `o` (`seen`: 1 RR, 2 TS). */
static int v4_option_refused(const uint8_t *o, unsigned len, unsigned *seen) {
    unsigned kind = o[0];
    if (kind == 131 || kind == 137 || kind == 134) return 1; /* source routes, CIPSO */
    if (kind == 148) return len < 4;                         /* Router Alert */
    if (kind != 7 && kind != 68) return 0;
    unsigned bit = kind == 7 ? 1 : 2;
    if (*seen & bit) return 1;
    *seen |= bit;
    if (kind == 7) return len < 3 || o[2] < 4 || (o[2] <= len && o[2] + 3u > len);
    if (len < 4 || o[2] < 5) return 1;
    unsigned pointer = o[2], flag = o[3] & 0x0F;
    if (pointer <= len) return pointer + (flag == 1 || flag == 3 ? 7u : 3u) > len;
    return flag != 3 && (o[3] >> 4) == 15;
}

/* ipoptions.ipv4_options_refused */
static int ipv4_options_refused(const uint8_t *d, Py_ssize_t at, Py_ssize_t ihl) {
    Py_ssize_t pos = at + 20, end = at + ihl;
    unsigned seen = 0;
    while (pos < end) {
        unsigned kind = d[pos];
        if (kind == 0) return 0;
        if (kind == 1) { pos++; continue; }
        if (pos + 2 > end) return 1;
        unsigned len = d[pos + 1];
        if (len < 2 || pos + (Py_ssize_t)len > end) return 1;
        if (v4_option_refused(d + pos, len, &seen)) return 1;
        pos += len;
    }
    return 0;
}

/* ipoptions._tlvs_refused and _tlv_refused: the options of a Hop-by-Hop or Destination Options header. */
static int tlvs_refused(const uint8_t *d, Py_ssize_t at, Py_ssize_t pos, Py_ssize_t end, int hop_by_hop) {
    int padding = 0, options = 0;
    while (pos < end) {
        unsigned kind = d[pos];
        if (kind == 0) {
            if (++padding > MAX_PADDING) return 1;
            pos++;
            continue;
        }
        if (pos + 2 > end) return 1;
        Py_ssize_t size = (Py_ssize_t)d[pos + 1] + 2;
        if (pos + size > end) return 1;
        if (kind == 1) {
            padding += (int)size;
            if (padding > MAX_PADDING) return 1;
            for (Py_ssize_t i = 2; i < size; i++)
                if (d[pos + i]) return 1;
        } else {
            if (++options > MAX_TLV_OPTIONS) return 1;
            if (hop_by_hop && kind == 5) { if (size != 4) return 1; }
            else if (hop_by_hop && (kind == 0xC2 || kind == 7)) return 1;
            else if (hop_by_hop && kind == 0x31) { if ((pos - at) % 4) return 1; }
            else if (kind >> 6) return 1;
            padding = 0;
        }
        pos += size;
    }
    return 0;
}

/* ipoptions.UNHANDLED */
static int is_unhandled_header(unsigned kind) {
    return kind == 135 || kind == 139 || kind == 140 || kind == 253 || kind == 254;
}

/* ipoptions.ipv6_header_refused: Hop-by-Hop (0), Routing (43), Destination Options (60) and the unhandled ones. */
static int ipv6_header_refused(unsigned kind, const uint8_t *d, Py_ssize_t at, Py_ssize_t limit, Py_ssize_t pos) {
    if (is_unhandled_header(kind)) return 1;
    if (pos + 8 > limit) return 1;
    Py_ssize_t size = ((Py_ssize_t)d[pos + 1] + 1) * 8;
    if (pos + size > limit) return 1;
    if (kind == 43) return d[pos + 3] != 0 || d[pos + 2] == 2 || d[pos + 2] == 3 || d[pos + 2] == 4;
    if (kind == 0 && pos != at + 40) return 1;
    return tlvs_refused(d, at, pos + 2, pos + size, kind == 0);
}

static int decode_ipv4(const uint8_t *d, Py_ssize_t off, Py_ssize_t n, uint64_t outer, int depth, seg_t *s);
static int decode_ipv6(const uint8_t *d, Py_ssize_t off, Py_ssize_t n, uint64_t outer, int depth, seg_t *s);
static int network(unsigned ethertype, const uint8_t *d, Py_ssize_t off, Py_ssize_t n, uint64_t outer, int depth,
                   seg_t *s);

/* linklayer._signature: 0x800 (OPT_SIGNED) for an MD5 signature option, 0x1000 (OPT_BAD_SIGNATURE) for a list a
 * receiver refuses, walked as Linux's tcp_do_parse_auth_options walks it (only while 18 bytes remain). */
static uint64_t tcp_signature(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end) {
    uint64_t found = 0;
    while (end - pos >= 18) {
        unsigned kind = d[pos];
        if (kind == 0) return found;
        if (kind == 1) { pos++; continue; }
        Py_ssize_t size = d[pos + 1];
        if (size < 2 || size > end - pos || (kind == 19 && (size != 18 || found))) return 0x1000u;
        if (kind == 19) found = 0x800u;
        pos += size;
    }
    return found;
}

/* linklayer._options: OPT_* bits of a segment's TCP options (a SYN's window scale and SACK permitted; any segment's
 * last timestamp, its TSval above bit 32, and signature) and its urgent pointer (bits 16 to 31, with the URG flag). */
static uint64_t tcp_options(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, unsigned flags) {
    uint64_t found = (flags & 0x20) ? (uint64_t)u16(d, pos - 2) << 16 : 0;
    int syn = (flags & TCP_SYN) != 0;
    uint64_t signature = end - pos >= 18 ? tcp_signature(d, pos, end) : 0;
    if (end - pos == 12 && d[pos] == 1 && d[pos + 1] == 1 && d[pos + 2] == 8 && d[pos + 3] == 10)
        signature |= 0x2000u; /* OPT_ALIGNED_TS */
    while (pos < end) {
        unsigned kind = d[pos];
        if (kind == 0) break;
        if (kind == 1) { pos += 1; continue; }
        if (pos + 1 >= end) break;
        unsigned length = d[pos + 1];
        if (length < 2 || pos + (Py_ssize_t)length > end) break;
        if (kind == 8 && length == 10) found = (found & 0xFFFFFFFFull) | 0x400u | (uint64_t)u32be(d, pos + 2) << 32;
        else if (kind == 3 && length == 3 && syn) /* the last one counts */
            found = (found & ~(uint64_t)0x0Fu) | 0x100u | (d[pos + 2] < 14 ? d[pos + 2] : 14u);
        else if (kind == 4 && length == 2 && syn) found |= 0x200u;
        pos += length;
    }
    return found | signature;
}

static int decode_tcp(const uint8_t *d, const uint8_t *src, const uint8_t *dst, int alen, Py_ssize_t pos,
                      Py_ssize_t end, Py_ssize_t n, uint64_t info, seg_t *s, Py_ssize_t ip_at) {
    if (pos + 20 > n || pos + 20 > end) return MALFORMED;
    s->ip_at = ip_at; s->tcp_at = pos; s->tcp_end = end; s->captured = n;
    Py_ssize_t header = (Py_ssize_t)(d[pos + 12] >> 4) * 4;
    Py_ssize_t start = pos + header;
    if (header < 20 || start > end) return MALFORMED;
    s->src = src; s->dst = dst; s->alen = alen;
    s->sport = u16(d, pos); s->dport = u16(d, pos + 2);
    s->seq = u32be(d, pos + 4); s->ack = u32be(d, pos + 8);
    s->flags = d[pos + 13]; s->window = u16(d, pos + 14);
    s->wire_len = end - start;
    if (start > n) { s->pstart = 0; s->plen = 0; }
    else { s->pstart = start; s->plen = (end <= n ? end : n) - start; }
    s->info = info;
    s->options = (header > 20 || (s->flags & 0x20)) ? tcp_options(d, pos + 20, start < n ? start : n, s->flags) : 0;
    return SEGMENT;
}

/* The sum of `len` bytes read as big-endian 16-bit words (an odd last byte the high half of one), unfolded. */
static uint64_t word_sum(const uint8_t *p, Py_ssize_t len) {
    uint64_t sum = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w = __builtin_bswap64(w);
        sum += (w >> 48) + (w >> 32 & 0xFFFF) + (w >> 16 & 0xFFFF) + (w & 0xFFFF);
    }
    for (; i + 1 < len; i += 2) sum += (uint64_t)p[i] << 8 | p[i + 1];
    if (i < len) sum += (uint64_t)p[i] << 8;
    return sum;
}

/* checksums.checksum_bits: INFO_CSUM_VALID, INFO_CSUM_BAD, INFO_CSUM_LEFT or none for a decoded segment (its frame
 * `d`, `n` bytes captured). Sums are compared modulo 0xFFFF, the folded one's complement sum with both zeros as one. */
static uint64_t segment_bits(const uint8_t *d, Py_ssize_t n, const seg_t *s) {
    if (s->captured < n) n = s->captured;
    if ((s->info & INFO_FIRST_FRAGMENT) || s->tcp_end > n || s->tcp_at + 18 > s->tcp_end) return 0;
    if (s->ip_at >= 0 && !(d[s->ip_at + 2] | d[s->ip_at + 3])) return INFO_CSUM_LEFT; /* total length 0: TSO */
    int ip_bad = 0, ip_left = 0;
    if (s->ip_at >= 0 && word_sum(d + s->ip_at, (Py_ssize_t)(d[s->ip_at] & 0x0F) * 4) % 0xFFFF != 0) {
        ip_left = !(d[s->ip_at + 10] | d[s->ip_at + 11]); /* zero: left to the card */
        ip_bad = !ip_left;
    }
    uint64_t length = (uint64_t)(s->tcp_end - s->tcp_at);
    uint64_t pseudo = word_sum(s->src, s->alen) + word_sum(s->dst, s->alen) + 6;
    if ((pseudo + length + word_sum(d + s->tcp_at, s->tcp_end - s->tcp_at)) % 0xFFFF == 0)
        return ip_bad ? INFO_CSUM_BAD : ip_left ? INFO_CSUM_LEFT : INFO_CSUM_VALID;
    uint64_t field = u16(d, s->tcp_at + 16);
    int left = field == 0 || field % 0xFFFF == (pseudo + length) % 0xFFFF || field % 0xFFFF == pseudo % 0xFFFF;
    return ip_bad || !left ? INFO_CSUM_BAD : INFO_CSUM_LEFT;
}

/* checksums.checksum_bits with checksums.with_outer: the segment's, and the tunnel headers' around it. */
static uint64_t checksum_bits(const uint8_t *d, Py_ssize_t n, const seg_t *s) {
    uint64_t bits = segment_bits(d, n, s);
    if (!bits || !(s->info & (INFO_OUTER_WRONG | INFO_OUTER_LEFT))) return bits;
    if (s->info & INFO_OUTER_WRONG) return INFO_CSUM_BAD;
    return bits == INFO_CSUM_VALID ? INFO_CSUM_LEFT : bits;
}

/* tunnels.py: each returns the inner kind, INNER_DAMAGED (a header cut short or inconsistent) or -1 (something
 * else inside) and sets *inner_off; gre/udp also set *bit, and *vnet to the virtual network id (0 for none). */
/* tunnels._pptp: PPTP's enhanced GRE header at `off` and the PPP frame after it. */
static int pptp(const uint8_t *d, Py_ssize_t off, Py_ssize_t end, Py_ssize_t *inner_off) {
    unsigned flags = d[off], protocol = u16(d, off + 2);
    if (protocol != 0x880B || (flags & 0xC0) || !(flags & 0x20)) return -1;
    Py_ssize_t position = off + 8 + 4 * ((flags & 0x10) != 0) + 4 * ((d[off + 1] & 0x80) != 0);
    if (position > end) return INNER_DAMAGED;
    if (position == end) return -1; /* an acknowledgment alone */
    if (d[position] == 0xFF) position += 2;
    if (position >= end) return INNER_DAMAGED;
    if (d[position] & 1) { protocol = d[position]; position += 1; }
    else if (position + 2 <= end) { protocol = u16(d, position); position += 2; }
    else return INNER_DAMAGED;
    *inner_off = position;
    return protocol == 0x0021 ? INNER_IPV4 : protocol == 0x0057 ? INNER_IPV6 : -1;
}

static int gre(const uint8_t *d, Py_ssize_t off, Py_ssize_t end, Py_ssize_t *inner_off, unsigned *bit,
               uint64_t *vnet) {
    *bit = INFO_GRE;
    *vnet = 0;
    if (off + 4 > end) return INNER_DAMAGED;
    unsigned flags = d[off], version = d[off + 1] & 7, protocol = u16(d, off + 2);
    if (version == 1) return pptp(d, off, end, inner_off);
    if (version != 0 || (flags & 0x40)) return -1;
    Py_ssize_t key_at = off + 4 + 4 * ((flags & 0x80) != 0);
    Py_ssize_t position = key_at + 4 * ((flags & 0x20) != 0);
    int sequenced = (flags & 0x10) != 0;
    position += 4 * sequenced;
    if (position > end) return INNER_DAMAGED;
    if (protocol == 0x88BE || protocol == 0x22EB) {
        *bit = INFO_ERSPAN;
        if (protocol == 0x88BE && !sequenced) { *inner_off = position; return INNER_ETHERNET; }
        Py_ssize_t header = protocol == 0x88BE ? 8 : 12;
        if (protocol == 0x22EB && position + 12 <= end && (d[position + 11] & 1)) header += 8;
        if (position + header > end) return INNER_DAMAGED;
        *inner_off = position + header;
        return INNER_ETHERNET;
    }
    *bit = INFO_GRE;
    *inner_off = position;
    /* no key, NVGRE's virtual subnet id included, names a virtual network (tunnels.py): *vnet stays 0 */
    return protocol == 0x0800 ? INNER_IPV4 : protocol == 0x86DD ? INNER_IPV6
         : protocol == 0x6558 ? INNER_ETHERNET : protocol == 0x8847 ? INNER_MPLS : -1;
}

static int udp_tunnel(const uint8_t *d, Py_ssize_t off, Py_ssize_t end, Py_ssize_t *inner_off, unsigned *bit,
                      uint64_t *vnet) {
    *vnet = 0;
    if (off + 8 > end) return -1;
    unsigned port = u16(d, off + 2);
    Py_ssize_t position = off + 8;
    if (port == 4789 || port == 4790 || port == 8472) { /* VXLAN, VXLAN-GPE, VXLAN on Linux's port */
        *bit = INFO_VXLAN;
        if (position + 8 > end) return INNER_DAMAGED;
        unsigned flags = d[position];
        if (!(flags & 0x08)) return -1;
        *inner_off = position + 8;
        int kind = INNER_ETHERNET;
        if (port == 4790 && (flags & 0x04)) {
            switch (d[position + 3]) {
                case 1: kind = INNER_IPV4; break;
                case 2: kind = INNER_IPV6; break;
                case 3: kind = INNER_ETHERNET; break;
                case 5: kind = INNER_MPLS; break;
                default: return -1;
            }
        }
        *vnet = VNET_VXLAN | (uint64_t)d[position + 4] << 16 | (uint64_t)d[position + 5] << 8 | d[position + 6];
        return kind;
    }
    if (port == 6081) {
        *bit = INFO_GENEVE;
        if (position + 8 > end) return INNER_DAMAGED;
        Py_ssize_t options = (Py_ssize_t)(d[position] & 0x3F) * 4;
        unsigned protocol = u16(d, position + 2);
        Py_ssize_t start = position + 8 + options;
        int inner = protocol == 0x0800 ? INNER_IPV4 : protocol == 0x86DD ? INNER_IPV6
                  : protocol == 0x6558 ? INNER_ETHERNET : protocol == 0x8847 ? INNER_MPLS : -1;
        if ((d[position] >> 6) != 0 || inner < 0) return -1;
        if (start > end) return INNER_DAMAGED;
        *inner_off = start;
        *vnet = VNET_GENEVE | (uint64_t)d[position + 4] << 16 | (uint64_t)d[position + 5] << 8 | d[position + 6];
        return inner;
    }
    if (port == 6635) { /* MPLS in UDP: the label stack is checked where it is peeled */
        *bit = INFO_MPLS;
        *inner_off = position;
        return INNER_MPLS;
    }
    return -1;
}

/* tunnels._pw_ethertype: does an Ethernet header read at `position` name an ethertype a pseudowire carries? */
static int pw_ethertype(const uint8_t *d, Py_ssize_t position, Py_ssize_t end) {
    if (position + 14 > end) return 0;
    unsigned type = u16(d, position + 12);
    return type == 0x0800 || type == 0x86DD || type == 0x8100 || type == 0x88A8 || type == 0x9100
        || type == 0x8847 || type == 0x8848 || type == 0x8864;
}

static int mpls(const uint8_t *d, Py_ssize_t off, Py_ssize_t end, Py_ssize_t *inner_off) {
    Py_ssize_t position = off;
    int bottom = 0;
    for (int i = 0; i < MAX_LABELS; i++) {
        if (position + 4 > end) return INNER_DAMAGED;
        bottom = d[position + 2] & 1;
        position += 4;
        if (bottom) break;
    }
    if (!bottom || position >= end) return INNER_DAMAGED;
    unsigned nibble = d[position] >> 4;
    if (nibble == 4) { *inner_off = position; return INNER_IPV4; }
    if (nibble == 6) { *inner_off = position; return INNER_IPV6; }
    if (nibble == 0 && (pw_ethertype(d, position + 4, end) || !pw_ethertype(d, position, end))) {
        *inner_off = position + 4; /* the pseudowire control word, then Ethernet */
        return INNER_ETHERNET;
    }
    *inner_off = position;
    return INNER_ETHERNET;
}

static int pppoe(const uint8_t *d, Py_ssize_t off, Py_ssize_t end, Py_ssize_t *inner_off) {
    if (off + 8 > end) return INNER_DAMAGED;
    if (d[off] != 0x11 || d[off + 1] != 0) return -1;
    unsigned protocol = u16(d, off + 6);
    *inner_off = off + 8;
    if (protocol == 0x0021) return INNER_IPV4;
    if (protocol == 0x0057) return INNER_IPV6;
    return -1;
}

/* linklayer._tags: the VLAN tags after a link header naming `type` and ending at `off`. */
static int vlan_tags(const uint8_t *d, unsigned type, Py_ssize_t off, Py_ssize_t n, unsigned *ethertype,
                     Py_ssize_t *next) {
    int tags = 0;
    while (type == 0x8100 || type == 0x88A8 || type == 0x9100) {
        tags++;
        if (off + 4 > n) return MALFORMED;
        type = u16(d, off + 2);
        off += 4;
    }
    if (tags > MAX_VLAN_TAGS) return TOO_MANY_TAGS;
    *ethertype = type; *next = off;
    return SEGMENT;
}

static int ethernet(const uint8_t *d, Py_ssize_t off, Py_ssize_t n, unsigned *ethertype, Py_ssize_t *next) {
    if (off + 14 > n) return MALFORMED;
    return vlan_tags(d, u16(d, off + 12), off + 14, n, ethertype, next);
}

static int inner(int kind, Py_ssize_t off, const uint8_t *d, Py_ssize_t n, uint64_t outer, int depth, seg_t *s) {
    if (kind < 0) return NOT_TCP;
    if (kind == INNER_DAMAGED || depth > MAX_DEPTH) return MALFORMED;
    if (kind == INNER_ETHERNET) {
        unsigned ethertype; Py_ssize_t next;
        int status = ethernet(d, off, n, &ethertype, &next);
        if (status != SEGMENT) return status;
        return network(ethertype, d, next, n, outer, depth, s);
    }
    if (kind == INNER_IPV4) return decode_ipv4(d, off, n, outer, depth, s);
    if (kind == INNER_IPV6) return decode_ipv6(d, off, n, outer, depth, s);
    return network(0x8847, d, off, n, outer, depth, s);
}

static int network(unsigned ethertype, const uint8_t *d, Py_ssize_t off, Py_ssize_t n, uint64_t outer, int depth,
                   seg_t *s) {
    if (ethertype == 0x0800) return decode_ipv4(d, off, n, outer, depth, s);
    if (ethertype == 0x86DD) return decode_ipv6(d, off, n, outer, depth, s);
    Py_ssize_t at = 0;
    int kind;
    if (ethertype == 0x8847 || ethertype == 0x8848) {
        kind = mpls(d, off, n, &at); /* sets `at`: called before `inner` reads it */
        return inner(kind, at, d, n, outer | INFO_MPLS, depth + 1, s);
    }
    if (ethertype == 0x8864) {
        kind = pppoe(d, off, n, &at);
        return inner(kind, at, d, n, outer | INFO_PPPOE, depth + 1, s);
    }
    return NOT_IP;
}

static int is_tunnel_proto(unsigned proto) {
    return proto == 47 || proto == 17 || proto == 4 || proto == 41 || proto == 137;
}

/* defrag.JOINED_PROTOCOLS: the packets whose pieces are joined again */
static int is_joined_proto(unsigned proto) { return proto == 6 || is_tunnel_proto(proto); }

static int tunnel(unsigned proto, const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t n, uint64_t outer,
                  int depth, seg_t *s) {
    Py_ssize_t limit = end < n ? end : n;
    if (proto == 47 || proto == 17) {
        Py_ssize_t at = 0; unsigned bit = 0; uint64_t vnet = 0;
        int kind = proto == 47 ? gre(d, pos, limit, &at, &bit, &vnet) : udp_tunnel(d, pos, limit, &at, &bit, &vnet);
        if (kind >= 0 && vnet) outer = (outer & INFO_BITS) | vnet << INFO_VNET_SHIFT; /* the innermost wins */
        return inner(kind, at, d, limit, outer | bit, depth + 1, s);
    }
    if (proto == 137) return inner(INNER_MPLS, pos, d, limit, outer | INFO_MPLS, depth + 1, s); /* MPLS in IP */
    if (depth >= MAX_DEPTH) return MALFORMED;
    if (proto == 4) return decode_ipv4(d, pos, limit, outer | INFO_IPIP, depth + 1, s);
    if (proto == 41) return decode_ipv6(d, pos, limit, outer | INFO_IPIP, depth + 1, s);
    return NOT_TCP;
}

static int decode_ipv4(const uint8_t *d, Py_ssize_t off, Py_ssize_t n, uint64_t outer, int depth, seg_t *s) {
    if (off + 20 > n) return MALFORMED;
    unsigned first = d[off];
    Py_ssize_t ihl = (Py_ssize_t)(first & 0x0F) * 4;
    if ((first >> 4) != 4 || ihl < 20 || off + ihl > n) return MALFORMED;
    Py_ssize_t total = u16(d, off + 2);
    if (total == 0) total = n - off; /* TCP segmentation offload on the capturing host */
    if (total < ihl || (ihl > 20 && ipv4_options_refused(d, off, ihl))) return MALFORMED; /* ipoptions.py */
    unsigned frag = u16(d, off + 6), proto = d[off + 9];
    if (proto != 6) {
        if (frag & 0x3FFF) return is_tunnel_proto(proto) ? FRAGMENT_V4 : NOT_TCP;
        if (is_tunnel_proto(proto) && word_sum(d + off, ihl) % 0xFFFF) /* checksums.outer_header */
            outer |= (d[off + 10] | d[off + 11]) ? INFO_OUTER_WRONG : INFO_OUTER_LEFT;
        return tunnel(proto, d, off + ihl, off + total, n, outer, depth, s);
    }
    uint64_t info = outer;
    if (frag & 0x3FFF) {
        if ((frag & 0x1FFF) || depth == 0) return FRAGMENT_V4; /* the outermost packet's pieces are joined */
        info |= INFO_FIRST_FRAGMENT;
    }
    return decode_tcp(d, d + off + 12, d + off + 16, 4, off + ihl, off + total, n, info, s, off);
}

static int decode_ipv6(const uint8_t *d, Py_ssize_t off, Py_ssize_t n, uint64_t outer, int depth, seg_t *s) {
    if (off + 40 > n) return MALFORMED;
    if ((d[off] >> 4) != 6) return MALFORMED;
    Py_ssize_t payload_len = u16(d, off + 4);
    unsigned next_header = d[off + 6];
    Py_ssize_t end = off + 40 + payload_len, pos = off + 40;
    uint64_t info = INFO_IPV6 | outer;
    Py_ssize_t limit = end < n ? end : n;
    int found = 0;
    for (int i = 0; i < MAX_EXTENSION_HEADERS; i++) {
        if (next_header == 6) { found = 1; break; }
        Py_ssize_t size;
        switch (next_header) {
            case 0: case 43: case 60: case 135: case 139: case 140: case 253: case 254: /* judged: ipoptions.py */
                if (ipv6_header_refused(next_header, d, off, limit, pos)) return MALFORMED;
                size = ((Py_ssize_t)d[pos + 1] + 1) * 8;
                next_header = d[pos];
                break;
            case 44:
                if (pos + 8 > n) return MALFORMED;
                if (u16(d, pos + 2) & 0xFFF9) /* an offset or the M flag: a piece (defrag) */
                    return d[pos] == 6 || is_tunnel_proto(d[pos]) || is_fragmented_header(d[pos]) ? FRAGMENT_V6 : NOT_TCP;
                next_header = d[pos]; /* an atomic fragment (RFC 6946): a whole packet */
                size = 8;
                break;
            case 51:
                if (pos + 8 > n) return MALFORMED;
                size = ((Py_ssize_t)d[pos + 1] + 2) * 4;
                next_header = d[pos];
                break;
            default:
                if (is_tunnel_proto(next_header) && payload_len) return tunnel(next_header, d, pos, end, n, outer, depth, s);
                return NOT_TCP;
        }
        pos += size;
        info |= INFO_EXT_HEADERS;
    }
    if (!found) return MALFORMED;
    if (payload_len == 0) return MALFORMED;
    return decode_tcp(d, d + off + 8, d + off + 24, 16, pos, end, n, info, s, -1);
}

/* linklayer.link_header: the ethertype after the link header (and its tags) and where it starts, or a status. */
static int link_header(int linktype, const uint8_t *d, Py_ssize_t n, unsigned *ethertype, Py_ssize_t *off) {
    switch (linktype) {
        case 1:
            return ethernet(d, 0, n, ethertype, off);
        case 113: case 276: {
            Py_ssize_t header = linktype == 113 ? 16 : 20;
            if (n < header) return MALFORMED;
            return vlan_tags(d, u16(d, linktype == 113 ? 14 : 0), header, n, ethertype, off);
        }
        case 101: case 12: case 14: case 228: case 229: {
            if (n < 1) return MALFORMED;
            unsigned version = d[0] >> 4;
            *ethertype = version == 4 ? 0x0800 : version == 6 ? 0x86DD : 0;
            *off = 0;
            return SEGMENT;
        }
        case 0: case 108: {
            if (n < 4) return MALFORMED;
            uint32_t family;
            if (linktype == 108) family = u32be(d, 0);
            else {
                family = u32le(d, 0);
                if (family > 0xFFFF) family = u32be(d, 0);
            }
            *ethertype = family == 2 ? 0x0800
                       : (family == 10 || family == 24 || family == 28 || family == 30) ? 0x86DD : 0;
            *off = 4;
            return SEGMENT;
        }
        default:
            return UNSUPPORTED_LINK;
    }
}

static int decode_frame(int linktype, const uint8_t *d, Py_ssize_t n, seg_t *s) {
    unsigned ethertype;
    Py_ssize_t off;
    int status = link_header(linktype, d, n, &ethertype, &off);
    if (status != SEGMENT) return status;
    return network(ethertype, d, off, n, 0, 0, s);
}

/* ---- classic BPF, for a user's filter expression compiled by libpcap (pcapy.compile(...).get_bpf()) ---- */

typedef struct { uint16_t code; uint8_t jt, jf; uint32_t k; } bpf_insn_t;

static int bpf_valid(const bpf_insn_t *prog, Py_ssize_t len) {
    if (len < 1 || len > BPF_MAXINSNS) return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        const bpf_insn_t *p = &prog[i];
        Py_ssize_t from = i + 1;
        switch (p->code & 0x07) {
            case 0x00: case 0x01: /* LD, LDX */
                switch (p->code & 0xe0) {
                    case 0x00: case 0x20: case 0x40: case 0x80: case 0xa0: break;
                    case 0x60: if (p->k >= 16) return 0; break;
                    default: return 0;
                }
                break;
            case 0x02: case 0x03: /* ST, STX */
                if (p->k >= 16) return 0;
                break;
            case 0x04: /* ALU */
                switch (p->code & 0xf0) {
                    case 0x00: case 0x10: case 0x20: case 0x40: case 0x50: case 0x60: case 0x70: case 0x80:
                    case 0xa0: break;
                    case 0x30: case 0x90: if ((p->code & 0x08) == 0 && p->k == 0) return 0; break;
                    default: return 0;
                }
                break;
            case 0x05: /* JMP */
                switch (p->code & 0xf0) {
                    case 0x00: if (p->k >= (uint32_t)(len - from)) return 0; break;
                    case 0x10: case 0x20: case 0x30: case 0x40:
                        if (from + p->jt >= len || from + p->jf >= len) return 0;
                        break;
                    default: return 0;
                }
                break;
            case 0x06: case 0x07: break; /* RET, MISC */
        }
    }
    return (prog[len - 1].code & 0x07) == 0x06;
}

static int bpf_load(const uint8_t *p, uint32_t buflen, uint32_t k, int size, uint32_t *out) {
    if (k > buflen || (uint32_t)size > buflen - k) return 0;
    if (size == 4) *out = (uint32_t)p[k] << 24 | (uint32_t)p[k + 1] << 16 | (uint32_t)p[k + 2] << 8 | p[k + 3];
    else if (size == 2) *out = (uint32_t)p[k] << 8 | p[k + 1];
    else *out = p[k];
    return 1;
}

static uint32_t bpf_run(const bpf_insn_t *pc, const uint8_t *p, uint32_t wirelen, uint32_t buflen) {
    uint32_t A = 0, X = 0, mem[16] = {0}, v;
    for (;; pc++) {
        uint32_t k = pc->k;
        switch (pc->code) {
            case 0x06: return k;                            /* ret #k */
            case 0x16: return A;                            /* ret a */
            case 0x20: if (!bpf_load(p, buflen, k, 4, &A)) return 0; break;  /* ld [k] */
            case 0x28: if (!bpf_load(p, buflen, k, 2, &A)) return 0; break;
            case 0x30: if (!bpf_load(p, buflen, k, 1, &A)) return 0; break;
            case 0x80: A = wirelen; break;                  /* ld #len */
            case 0x81: X = wirelen; break;                  /* ldx #len */
            case 0x40: if (k > UINT32_MAX - X || !bpf_load(p, buflen, X + k, 4, &A)) return 0; break;
            case 0x48: if (k > UINT32_MAX - X || !bpf_load(p, buflen, X + k, 2, &A)) return 0; break;
            case 0x50: if (k > UINT32_MAX - X || !bpf_load(p, buflen, X + k, 1, &A)) return 0; break;
            case 0xb1: if (!bpf_load(p, buflen, k, 1, &v)) return 0; X = (v & 0xf) << 2; break;  /* ldx msh */
            case 0x00: A = k; break;
            case 0x01: X = k; break;
            case 0x60: A = mem[k]; break;
            case 0x61: X = mem[k]; break;
            case 0x02: mem[k] = A; break;
            case 0x03: mem[k] = X; break;
            case 0x05: pc += k; break;                      /* ja */
            case 0x15: pc += A == k ? pc->jt : pc->jf; break;
            case 0x25: pc += A > k ? pc->jt : pc->jf; break;
            case 0x35: pc += A >= k ? pc->jt : pc->jf; break;
            case 0x45: pc += (A & k) ? pc->jt : pc->jf; break;
            case 0x1d: pc += A == X ? pc->jt : pc->jf; break;
            case 0x2d: pc += A > X ? pc->jt : pc->jf; break;
            case 0x3d: pc += A >= X ? pc->jt : pc->jf; break;
            case 0x4d: pc += (A & X) ? pc->jt : pc->jf; break;
            case 0x04: A += k; break;
            case 0x14: A -= k; break;
            case 0x24: A *= k; break;
            case 0x34: A /= k; break;
            case 0x94: A %= k; break;
            case 0x44: A |= k; break;
            case 0x54: A &= k; break;
            case 0xa4: A ^= k; break;
            case 0x64: A = k < 32 ? A << k : 0; break;
            case 0x74: A = k < 32 ? A >> k : 0; break;
            case 0x0c: A += X; break;
            case 0x1c: A -= X; break;
            case 0x2c: A *= X; break;
            case 0x3c: if (X == 0) return 0; A /= X; break;
            case 0x9c: if (X == 0) return 0; A %= X; break;
            case 0x4c: A |= X; break;
            case 0x5c: A &= X; break;
            case 0xac: A ^= X; break;
            case 0x6c: A = X < 32 ? A << X : 0; break;
            case 0x7c: A = X < 32 ? A >> X : 0; break;
            case 0x84: A = (uint32_t)(-(int64_t)A); break;  /* neg */
            case 0x07: X = A; break;                        /* tax */
            case 0x87: A = X; break;                        /* txa */
            default: return 0;                              /* an instruction libpcap never emits: reject */
        }
    }
}

/* ---- flow states and server endpoints ---- */

typedef struct {
    uint8_t a[16], b[16];  /* the canonical 4-tuple: (a, pa) <= (b, pb) */
    uint16_t pa, pb;
    uint8_t alen, state;
    uint16_t count;        /* packets bringing new bytes admitted while undecided (the head) */
    uint16_t quiet;        /* packets bringing none admitted while undecided: ACKs, SYNs, retransmissions */
    uint16_t bytes;        /* new bytes admitted while undecided (saturating) */
    uint8_t known;         /* bit per direction (1: from a, 2: from b): next[] holds its highest sequence end;
                            * EXTENDING */
    uint32_t next[2];
    double last;           /* capture time of the flow's latest packet */
    uint64_t vnet;         /* the virtual network (tunnels.py): part of the flow's identity */
} entry_t;

typedef struct {
    entry_t *slots;
    size_t capacity, used;
} table_t;

typedef struct { uint8_t addr[16]; uint16_t port; uint8_t alen, used; } server_t;

/* Where a key goes in an open-addressing table (a slot's position only: nothing depends on it but speed). The
 * addresses (4 or 16 bytes) are mixed a word of each at a time, then the whole is finished as splitmix64 does. */
static uint64_t key_hash(const uint8_t *a, const uint8_t *b, int alen, unsigned pa, unsigned pb, uint64_t vnet) {
    uint64_t h = ((uint64_t)alen << 32 | (uint64_t)pa << 16 | pb) ^ vnet * 0xC2B2AE3D27D4EB4Full;
    for (int i = 0; i + 4 <= alen; i += 4) {
        uint32_t x, y;
        memcpy(&x, a + i, 4);
        memcpy(&y, b + i, 4);
        h = (h ^ ((uint64_t)x << 32 | y)) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
    }
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}

static int table_init(table_t *t, size_t capacity) {
    t->slots = PyMem_Calloc(capacity, sizeof(entry_t));
    if (!t->slots) return -1;
    t->capacity = capacity; t->used = 0;
    return 0;
}

static entry_t *table_slot(table_t *t, const uint8_t *a, const uint8_t *b, int alen, unsigned pa, unsigned pb,
                           uint64_t vnet) {
    size_t mask = t->capacity - 1, i = key_hash(a, b, alen, pa, pb, vnet) & mask;
    for (;;) {
        entry_t *e = &t->slots[i];
        if (e->state == ST_FREE) return e;
        if (e->alen == alen && e->pa == pa && e->pb == pb && e->vnet == vnet && !memcmp(e->a, a, alen)
            && !memcmp(e->b, b, alen))
            return e;
        i = (i + 1) & mask;
    }
}

/* Rebuild into `capacity` slots, keeping entries seen since `keep_after` (all of them with -inf). */
static int table_rebuild(table_t *t, size_t capacity, double keep_after) {
    table_t fresh;
    if (table_init(&fresh, capacity) < 0) return -1;
    for (size_t i = 0; i < t->capacity; i++) {
        entry_t *e = &t->slots[i];
        if (e->state == ST_FREE || e->last < keep_after) continue;
        entry_t *slot = table_slot(&fresh, e->a, e->b, e->alen, e->pa, e->pb, e->vnet);
        *slot = *e;
        fresh.used++;
    }
    PyMem_Free(t->slots);
    *t = fresh;
    return 0;
}

/* ---- the scanner object ---- */

typedef struct {
    PyObject_HEAD
    /* configuration */
    uint8_t ports[8192];   /* bitmap of the named server ports */
    int every_port, head, shard, shards;
    int all_named;         /* every port is a named port: no port restriction */
    double sweep_every, idle_timeout;
    bpf_insn_t *bpf; Py_ssize_t bpf_len;
    Py_ssize_t batch_packets;
    /* state */
    table_t flows;
    server_t *servers; size_t servers_cap, servers_used;
    double sweep_at;
    double now;            /* capture time of the record being scanned */
    int stalled;           /* the record at the cursor was counted and ticked; only its admission is pending */
    struct { uint8_t a[16], b[16]; uint16_t pa, pb; uint8_t alen, used; uint64_t vnet; } slots[MAX_EXTENDING];
                           /* the flows whose head extends (a slot is free once its flow is not, or idle) */
    long long counters[N_COUNTERS];
    struct datagram_s *datagrams; /* tunnel packets fragmented outside, being joined (MAX_DATAGRAMS; defrag.py) */
    uint64_t datagrams_born;      /* datagrams begun so far: their order, the oldest is dropped first */
    uint8_t *rebuilt;             /* the frame the last piece of one completed */
    int joined;                   /* the pieces before that last one (Defragmenter.joined) */
    int copy;                     /* the piece last taken was a copy (Defragmenter.copy) */
    int tcp_piece;                /* the piece last looked at was a TCP packet's (Defragmenter.tcp) */
    Py_ssize_t rebuilt_len;       /* its length while the record that completed it is scanned, else 0 */
    struct armed_s *armed; /* flows whose bytes may be dropped unread (skip_flow), open addressing */
    size_t armed_cap, armed_used, armed_gone;
    size_t *dirty, dirty_used; /* slots of the armed flows with a pending notice, in the order they got one */
    /* file source: records are read into `buf` (READ_BUFFER bytes), which holds the file's bytes from `buf_at` on,
     * `buf_len` of them; `size` is where the file ends (its size when opened, less where it was cut short since) */
    int fd;
    uint8_t *buf; size_t buf_at, buf_len, size, pos;
    /* the tails of pending notices (rule_t.tail) copied out of `buf` before it is refilled (keep_tails): a slot of
     * TAIL_KEEP bytes per rule of each flow in the dirty list; `fresh` lists the rules whose tail is still in `buf` */
    uint8_t *store; size_t store_slots;
    size_t *fresh, fresh_used;
    unsigned long long tails_copied; /* bytes keep_tails copied: at most the bytes read (tail_bytes_copied) */
    int swapped, nsec, linktype;
    long long frame;
    PyObject *error;       /* str: why reading stopped early, or None */
    long long oversized;
    size_t buf_cap;        /* READ_BUFFER, or what the largest pcapng block read needed (MAX_BLOCK at most) */
    /* pcapng (pcapfile.PacketReader._pcapng): the section's interfaces, the link types all its sections declared */
    int pcapng;
    struct iface_s *ifaces; size_t ifaces_used, ifaces_cap;
    uint8_t *linktypes_seen; int short_interface; /* a bit per link type; an interface block too short for one */
    long long cut;         /* pcapng packets cut to MAX_RECORD */
} Scanner;

typedef struct iface_s { int linktype; double units; long long offset; uint32_t snaplen; } iface_t;

static inline int port_named(Scanner *sc, unsigned port) { return (sc->ports[port >> 3] >> (port & 7)) & 1; }

static unsigned shard_of(const seg_t *s) {
    uint32_t sum = s->sport + s->dport;
    for (int i = 0; i < s->alen; i += 4) sum += u32be(s->src, i) + u32be(s->dst, i);
    sum *= 0x9E3779B1u;
    return sum ^ (sum >> 16);
}

static void canonical(const uint8_t *src, unsigned sport, const uint8_t *dst, unsigned dport, int alen,
                      const uint8_t **a, unsigned *pa, const uint8_t **b, unsigned *pb) {
    int c = memcmp(src, dst, alen);
    if (c < 0 || (c == 0 && sport <= dport)) { *a = src; *pa = sport; *b = dst; *pb = dport; }
    else { *a = dst; *pa = dport; *b = src; *pb = sport; }
}

static int server_index(Scanner *sc, const uint8_t *addr, int alen, unsigned port, int insert) {
    if (!sc->servers_cap) return -1;
    size_t mask = sc->servers_cap - 1, i = key_hash(addr, addr, alen, port, port, 0) & mask;
    for (;;) {
        server_t *v = &sc->servers[i];
        if (!v->used) {
            if (!insert || sc->servers_used * 2 >= sc->servers_cap) return -1;
            memcpy(v->addr, addr, alen); v->alen = (uint8_t)alen; v->port = (uint16_t)port; v->used = 1;
            sc->servers_used++;
            return (int)i;
        }
        if (v->alen == alen && v->port == port && !memcmp(v->addr, addr, alen)) return (int)i;
        i = (i + 1) & mask;
    }
}

/* The flow's state slot, created NEW when absent; NULL when memory runs out. */
static entry_t *flow_entry(Scanner *sc, const uint8_t *src, unsigned sport, const uint8_t *dst, unsigned dport,
                           int alen, uint64_t vnet, double now) {
    const uint8_t *a, *b; unsigned pa, pb;
    canonical(src, sport, dst, dport, alen, &a, &pa, &b, &pb);
    entry_t *e = table_slot(&sc->flows, a, b, alen, pa, pb, vnet);
    if (e->state != ST_FREE) return e;
    size_t capacity = sc->flows.capacity;
    if (sc->flows.used + 1 > (capacity < MAX_TABLE_FLOWS ? capacity / 2 : capacity / 4 * 3)) {
        if (capacity < MAX_TABLE_FLOWS) {
            if (table_rebuild(&sc->flows, capacity * 2, -1.0 / 0.0) < 0) return NULL;
        } else {
            /* Full: forget the flows idle past the timeout (the lazy check would reset them anyway). */
            if (table_rebuild(&sc->flows, capacity, now - sc->idle_timeout) < 0) return NULL;
            if (sc->flows.used + 1 > capacity / 2) {
                sc->counters[C_TABLE_RESETS]++; /* still full of live flows: start over, each is asked again */
                if (table_rebuild(&sc->flows, capacity, 1.0 / 0.0) < 0) return NULL;
            }
        }
        e = table_slot(&sc->flows, a, b, alen, pa, pb, vnet);
    }
    memset(e, 0, sizeof *e);
    memcpy(e->a, a, alen); memcpy(e->b, b, alen);
    e->pa = (uint16_t)pa; e->pb = (uint16_t)pb; e->alen = (uint8_t)alen; e->vnet = vnet;
    e->state = ST_NEW; e->last = now;
    sc->flows.used++;
    return e;
}

enum { ADMIT, DROP, STALL };

static inline uint16_t sat16(unsigned value) { return value > 65535 ? 65535 : (uint16_t)value; }

/* The flow's head no longer extends (a verdict, the cut, FIN or RST): its slot is free. */
static void unextend(entry_t *e) { e->known &= (uint8_t)~EXTENDING; }

static void head_reset(entry_t *e) { e->state = ST_NEW; e->count = e->quiet = e->bytes = 0; e->known = 0; }

/* A slot for the flow `e` whose head is to extend (flowhead.take_slot): the first never used, or whose flow no
 * longer extends or has been idle past the timeout; 0 when all MAX_EXTENDING are taken. */
static int take_slot(Scanner *sc, const entry_t *e, double now) {
    for (int i = 0; i < MAX_EXTENDING; i++) {
        __typeof__(sc->slots[0]) *v = &sc->slots[i];
        if (v->used) {
            const entry_t *held = table_slot(&sc->flows, v->a, v->b, v->alen, v->pa, v->pb, v->vnet);
            if (held->state != ST_FREE && (held->known & EXTENDING) && held->last + sc->idle_timeout >= now) continue;
        }
        memcpy(v->a, e->a, 16); memcpy(v->b, e->b, 16);
        v->pa = e->pa; v->pb = e->pb; v->alen = e->alen; v->vnet = e->vnet; v->used = 1;
        return 1;
    }
    return 0;
}

/* A payload of printable ASCII, tab, CR and LF: a line typed or sent in small pieces. */
static int is_text(const uint8_t *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if ((p[i] < 0x20 || p[i] > 0x7e) && p[i] != 9 && p[i] != 10 && p[i] != 13) return 0;
    return 1;
}

/* Every-port admission of a segment on no named port (scanner.py and flowhead.py say the rules). Nothing of
 * the entry changes but on ADMIT or the cut: a stalled segment is judged again, from the same state. */
static int flow_admission(Scanner *sc, const seg_t *s, const uint8_t *d, double ts, int batch_empty) {
    if (sc->servers_used && (server_index(sc, s->src, s->alen, s->sport, 0) >= 0
                             || server_index(sc, s->dst, s->alen, s->dport, 0) >= 0))
        return ADMIT;
    entry_t *e = flow_entry(sc, s->src, s->sport, s->dst, s->dport, s->alen, s->info >> INFO_VNET_SHIFT, ts);
    if (!e) return -1;
    if (e->last + sc->idle_timeout < ts) head_reset(e);
    e->last = ts;
    if (e->state == ST_KEEP) return ADMIT;
    if (e->state == ST_DROP || e->state == ST_CUT) {
        if ((s->flags & (TCP_SYN | TCP_ACK)) != TCP_SYN) {
            sc->counters[e->state == ST_DROP ? C_NOT_MAIL : C_PAST_HEAD]++;
            return DROP;
        }
        head_reset(e); /* a new connection on the 4-tuple */
    }
    if (s->flags & (TCP_FIN | TCP_RST)) unextend(e);
    /* Past `head` packets of any kind, wait for Python before each: its verdict is then usually known, and packets
     * of a flow it has dropped are not admitted in vain (nor batches made long by them). */
    if ((unsigned)e->count + e->quiet >= (unsigned)sc->head && !batch_empty) return STALL;
    int side = e->pa == s->sport && !memcmp(e->a, s->src, s->alen) ? 0 : 1;
    uint32_t end = s->seq + (uint32_t)s->wire_len, fresh = 0;
    if (s->wire_len > 0) {
        if (!(e->known & (1 << side))) fresh = (uint32_t)s->wire_len;
        else if ((int32_t)(end - e->next[side]) > 0)
            fresh = end - e->next[side] < (uint32_t)s->wire_len ? end - e->next[side] : (uint32_t)s->wire_len;
    }
    if (fresh && e->count < sc->head) {
        e->count++; e->bytes = sat16(e->bytes + fresh); e->next[side] = end; e->known |= (uint8_t)(1 << side);
        return ADMIT;
    }
    if (!fresh && e->quiet < (unsigned)e->count + HEAD_QUIET) {
        e->quiet = sat16(e->quiet + 1u);
        return ADMIT;
    }
    /* A piece of a line past the head, once Python has caught up (its verdict first): new bytes, or bytes seen
     * again or filling a hole (charged all the same). */
    if (s->wire_len > 0 && batch_empty && e->bytes < HEAD_LINE_BYTES
        && sc->counters[C_HEAD_EXTENDED] < (sc->counters[C_READ] >> HEAD_SHARE_SHIFT) + HEAD_FLOOR
        && is_text(d + s->pstart, s->plen) && ((e->known & EXTENDING) || take_slot(sc, e, ts))) {
        e->known |= EXTENDING;
        e->bytes = sat16(e->bytes + (fresh ? fresh : (unsigned)s->wire_len));
        if (fresh) {
            e->count = sat16(e->count + 1u); e->next[side] = end; e->known |= (uint8_t)(1 << side);
        }
        sc->counters[C_HEAD_EXTENDED]++;
        return ADMIT;
    }
    if (!batch_empty) return STALL; /* let Python catch up: its verdict may be on the way */
    unextend(e);
    e->state = ST_CUT;
    sc->counters[C_PAST_HEAD]++;
    return DROP;
}

static const unsigned TUNNEL_BITS[7] = {INFO_GRE, INFO_ERSPAN, INFO_VXLAN, INFO_GENEVE, INFO_MPLS, INFO_PPPOE,
                                        INFO_IPIP};

/* Objects many segments share, made once and kept for the life of the process (the module is never unloaded):
 * the 16-bit values (ports, flags, windows, info bits, SYN options all fit) and recently seen addresses. */
static PyObject *small_ints[65536];
#define ADDRESS_CACHE 1024
static PyObject *address_cache[ADDRESS_CACHE];

static PyObject *u16_object(unsigned value) {
    PyObject *o = small_ints[value & 0xFFFF];
    if (!o) o = small_ints[value & 0xFFFF] = PyLong_FromUnsignedLong(value & 0xFFFF);
    Py_XINCREF(o);
    return o;
}

static PyObject *address_object(const uint8_t *addr, int alen) {
    uint64_t h = key_hash(addr, addr, alen, 0, 0, 0);
    PyObject **slot = &address_cache[h % ADDRESS_CACHE];
    PyObject *o = *slot;
    if (o && PyBytes_GET_SIZE(o) == alen && !memcmp(PyBytes_AS_STRING(o), addr, alen)) {
        Py_INCREF(o);
        return o;
    }
    o = PyBytes_FromStringAndSize((const char *)addr, alen);
    if (o) {
        Py_XSETREF(*slot, o);
        Py_INCREF(o);
    }
    return o;
}

/* The segment as linklayer.Segment: (src, dst, sport, dport, seq, ack, flags, payload, wire_len, info, window,
 * syn_options). */
static PyObject *segment_tuple(const uint8_t *d, const seg_t *s) {
    PyObject *t = PyTuple_New(12);
    if (!t) return NULL;
    /* Each field is made only while none has failed (no call with an exception set); the tuple owns them. */
    for (int i = 0; i < 12; i++) {
        PyObject *o;
        switch (i) {
            case 0: o = address_object(s->src, s->alen); break;
            case 1: o = address_object(s->dst, s->alen); break;
            case 2: o = u16_object(s->sport); break;
            case 3: o = u16_object(s->dport); break;
            case 4: o = PyLong_FromUnsignedLong(s->seq); break;
            case 5: o = PyLong_FromUnsignedLong(s->ack); break;
            case 6: o = u16_object(s->flags); break;
            case 7: o = PyBytes_FromStringAndSize((const char *)d + s->pstart, s->plen); break;
            case 8:
                o = s->wire_len <= 0xFFFF ? u16_object((unsigned)s->wire_len) : PyLong_FromSsize_t(s->wire_len);
                break;
            case 9: o = s->info <= 0xFFFF ? u16_object((unsigned)s->info) : PyLong_FromUnsignedLongLong(s->info); break;
            case 10: o = u16_object(s->window); break;
            default: o = s->options <= 0xFFFF ? u16_object((unsigned)s->options) : PyLong_FromUnsignedLongLong(s->options);
                break;
        }
        if (!o) {
            Py_DECREF(t); /* unset items are NULL, which tuple deallocation skips */
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, o);
    }
    PyObject_GC_UnTrack(t); /* bytes and numbers only: never in a cycle, so no collection need look at it */
    return t;
}

/* Append (frame, ts, segment) to `items`, taking the reference to `segment`: 0 done, -1 error. */
static int append_item(PyObject *items, long long frame, double ts, PyObject *segment) {
    PyObject *item = PyTuple_New(3);
    PyObject *number = PyLong_FromLongLong(frame), *when = PyFloat_FromDouble(ts);
    if (!item || !number || !when) {
        Py_XDECREF(item); Py_XDECREF(number); Py_XDECREF(when); Py_DECREF(segment);
        return -1;
    }
    PyTuple_SET_ITEM(item, 0, number);
    PyTuple_SET_ITEM(item, 1, when);
    PyTuple_SET_ITEM(item, 2, segment);
    if (segment == Py_None || !PyObject_GC_IsTracked(segment))
        PyObject_GC_UnTrack(item); /* as the segment's (a notice's too): nothing in it can make a cycle */
    int rc = PyList_Append(items, item);
    Py_DECREF(item);
    return rc;
}

/* ---- IP packets fragmented on their way, joined again (defrag.py: the same rules, in the same order) ---- */

#define MAX_DATAGRAMS 64          /* defrag.MAX_DATAGRAMS */
#define MAX_PIECES 64             /* defrag.MAX_PIECES */
#define FRAGMENT_TIMEOUT 30.0     /* defrag.FRAGMENT_TIMEOUT */
#define FRAGMENT_TIMEOUT_V6 60    /* defrag.FRAGMENT_TIMEOUT_V6 */
#define MAX_DATAGRAM 65535        /* defrag.MAX_DATAGRAM */
#define MAX_LINK_HEADER 64        /* defrag._MAX_LINK_HEADER */
/* a link header, an IPv6 header and the extension headers before its Fragment header (within its 16-bit payload
 * length); an IPv4 header with options is shorter */
#define MAX_HEADER (MAX_LINK_HEADER + 40 + MAX_DATAGRAM)

typedef struct datagram_s {
    int used, version, has_header, pieces; /* used: 0 free, 1 being joined, 2 joined (kept to know copies) */
    uint64_t born;                /* the order datagrams were begun in */
    double first;                 /* capture time of its first piece */
    uint8_t src[16], dst[16];
    uint32_t ident;
    unsigned proto;
    uint8_t header[MAX_HEADER];   /* the link and IP headers of the piece at offset 0 */
    Py_ssize_t header_len, ip_at, names_fragment; /* names_fragment: the byte naming the IPv6 Fragment header */
    Py_ssize_t starts[MAX_PIECES], sizes[MAX_PIECES];
    Py_ssize_t run_starts[MAX_PIECES], run_ends[MAX_PIECES]; /* runs of adjacent pieces (defrag._place) */
    int runs, poisoned;           /* poisoned: a piece past 65 535 bytes was taken (defrag's datagram[7]) */
    Py_ssize_t total, held;       /* the payload's length (-1 while unknown), the bytes held */
    int verdict;                  /* its pieces' IPv4 header checksum (defrag.RIGHT, LEFT, WRONG): part of its key */
    uint8_t *payload;             /* MAX_DATAGRAM bytes, kept for the slot's next datagram */
} datagram_t;

enum { H_RIGHT = 0, H_LEFT = 1, H_WRONG = 2 }; /* defrag.RIGHT, LEFT, WRONG */

typedef struct {
    int version, more, verdict;
    const uint8_t *src, *dst, *payload;
    uint32_t ident;
    unsigned proto;
    Py_ssize_t at, header_len, offset, size, names_fragment;
} piece_t;

/* defrag._fragment_header: where the Fragment header of the IPv6 packet at `at` starts (its bytes up to `limit`),
 * with the byte naming it in `*before`; -1 when the headers before it are not ones a receiver takes. */
static Py_ssize_t fragment_header(const uint8_t *d, Py_ssize_t at, Py_ssize_t limit, Py_ssize_t *before) {
    unsigned kind = d[at + 6];
    Py_ssize_t pos = at + 40;
    *before = at + 6;
    for (int i = 0; i < MAX_EXTENSION_HEADERS; i++) {
        if (kind == 44) return pos;
        if ((kind != 0 && kind != 43 && kind != 60) || ipv6_header_refused(kind, d, at, limit, pos)) return -1;
        *before = pos;
        kind = d[pos];
        pos += ((Py_ssize_t)d[pos + 1] + 1) * 8;
    }
    return -1;
}

/* defrag._piece: 1 when `d` is a piece of a fragmented TCP or tunnel packet (`p` filled), else 0. */
static int defrag_piece(int linktype, const uint8_t *d, Py_ssize_t n, piece_t *p) {
    unsigned ethertype;
    Py_ssize_t at;
    if (link_header(linktype, d, n, &ethertype, &at) != SEGMENT || at > MAX_LINK_HEADER) return 0;
    p->at = at; p->names_fragment = 0;
    if (ethertype == 0x0800) {
        if (at + 20 > n || (d[at] >> 4) != 4) return 0;
        Py_ssize_t ihl = (Py_ssize_t)(d[at] & 0x0F) * 4, total = u16(d, at + 2);
        unsigned frag = u16(d, at + 6);
        p->proto = d[at + 9];
        if (ihl < 20 || total < ihl || at + total > n || !(frag & 0x3FFF) || !is_joined_proto(p->proto)) return 0;
        p->version = 4; p->src = d + at + 12; p->dst = d + at + 16; p->ident = u16(d, at + 4);
        p->offset = (Py_ssize_t)(frag & 0x1FFF) * 8; p->more = (frag & 0x2000) != 0;
        p->header_len = at + ihl; p->payload = d + at + ihl; p->size = total - ihl;
        p->verdict = word_sum(d + at, ihl) % 0xFFFF == 0 ? H_RIGHT : !(d[at + 10] | d[at + 11]) ? H_LEFT : H_WRONG;
        return 1;
    }
    if (ethertype == 0x86DD) {
        if (at + 40 > n || (d[at] >> 4) != 6) return 0;
        Py_ssize_t end = at + 40 + u16(d, at + 4), before = 0;
        Py_ssize_t pos = fragment_header(d, at, end < n ? end : n, &before);
        if (pos < 0 || pos + 8 > end || end > n || !(is_joined_proto(d[pos]) || is_fragmented_header(d[pos]))) return 0;
        p->proto = d[pos];
        unsigned field = u16(d, pos + 2);
        if (!(field & 0xFFF9)) return 0; /* an atomic fragment (RFC 6946): a whole packet */
        p->version = 6; p->src = d + at + 8; p->dst = d + at + 24; p->ident = u32be(d, pos + 4);
        p->offset = field & 0xFFF8; p->more = field & 1;
        p->header_len = pos; p->payload = d + pos + 8; p->size = end - (pos + 8); p->names_fragment = before;
        p->verdict = H_RIGHT;
        return 1;
    }
    return 0;
}

static datagram_t *defrag_find(Scanner *sc, const piece_t *p) {
    int alen = p->version == 4 ? 4 : 16;
    for (int i = 0; i < MAX_DATAGRAMS; i++) {
        datagram_t *g = &sc->datagrams[i];
        if (g->used && g->version == p->version && g->ident == p->ident && g->proto == p->proto
            && g->verdict == p->verdict && !memcmp(g->src, p->src, alen) && !memcmp(g->dst, p->dst, alen))
            return g;
    }
    return NULL;
}

/* A new datagram's slot (when all are taken, the oldest joined one's, else the oldest one's); NULL when memory
 * runs out. */
static datagram_t *defrag_begin(Scanner *sc, const piece_t *p, double ts) {
    datagram_t *g = NULL;
    for (int i = 0; i < MAX_DATAGRAMS && !g; i++)
        if (!sc->datagrams[i].used) g = &sc->datagrams[i];
    if (!g) /* by birth, as defrag.py's dict orders them */
        for (int i = 0; i < MAX_DATAGRAMS; i++) {
            datagram_t *d = &sc->datagrams[i];
            int joined = d->used == 2, best = g && g->used == 2;
            if (!g || joined > best || (joined == best && d->born < g->born)) g = d;
        }
    if (!g->payload && !(g->payload = PyMem_Malloc(MAX_DATAGRAM))) return NULL;
    int alen = p->version == 4 ? 4 : 16;
    g->used = 1; g->version = p->version; g->has_header = 0; g->pieces = 0;
    g->born = sc->datagrams_born++; g->first = ts;
    memcpy(g->src, p->src, alen); memcpy(g->dst, p->dst, alen);
    g->ident = p->ident; g->proto = p->proto; g->total = -1; g->held = 0; g->verdict = p->verdict; g->runs = 0;
    g->poisoned = 0;
    return g;
}

/* The frame `g` makes, in sc->rebuilt: its length, or 0 when it would be longer than an IP packet can be. */
static Py_ssize_t defrag_rebuild(Scanner *sc, datagram_t *g) {
    uint8_t *f = sc->rebuilt;
    Py_ssize_t at = g->ip_at;
    memcpy(f, g->header, g->header_len);
    if (g->version == 4) {
        Py_ssize_t length = g->header_len - at + g->total;
        if (length > MAX_DATAGRAM) return 0;
        f[at + 2] = (uint8_t)(length >> 8); f[at + 3] = (uint8_t)length;
        f[at + 6] = 0; f[at + 7] = 0;
        f[at + 10] = 0; f[at + 11] = 0; /* defrag._header_checksum */
        uint64_t right = 0xFFFF - word_sum(f + at, (Py_ssize_t)(f[at] & 0x0F) * 4) % 0xFFFF;
        uint64_t value = g->verdict == H_RIGHT ? right : g->verdict == H_LEFT ? 0 : right % 0xFFFF == 1 ? 2 : 1;
        f[at + 10] = (uint8_t)(value >> 8); f[at + 11] = (uint8_t)value;
    } else { /* the headers before the Fragment header stay (RFC 8200 section 4.5) */
        Py_ssize_t length = g->header_len - at - 40 + g->total;
        if (length > MAX_DATAGRAM) return 0;
        f[at + 4] = (uint8_t)(length >> 8); f[at + 5] = (uint8_t)length;
        f[g->names_fragment] = (uint8_t)g->proto;
    }
    memcpy(f + g->header_len, g->payload, g->total);
    return g->header_len + g->total;
}

/* defrag._place: 1 when the piece [offset, end) is taken among `g`'s runs of adjacent pieces, 0 when it lies within
 * one (a duplicate), -1 when it overlaps. */
static int defrag_place(datagram_t *g, Py_ssize_t offset, Py_ssize_t end) {
    Py_ssize_t tail = -1;
    for (int i = 0; i < g->runs; i++)
        if (g->run_ends[i] > tail) tail = g->run_ends[i];
    if (tail < end) {
        if (offset < tail) return -1;
        for (int i = 0; i < g->runs; i++)
            if (g->run_ends[i] == offset && offset == tail) { g->run_ends[i] = end; return 1; }
    } else {
        for (int i = 0; i < g->runs; i++) {
            if (end <= g->run_starts[i] || offset >= g->run_ends[i]) continue;
            return g->run_starts[i] <= offset && end <= g->run_ends[i] ? 0 : -1;
        }
    }
    if (g->runs >= MAX_PIECES) return -1; /* as many runs as pieces: the piece bound drops it anyway */
    g->run_starts[g->runs] = offset; g->run_ends[g->runs] = end; g->runs++;
    return 1;
}

/* Defragmenter.add: the length of the frame a last piece completed (in sc->rebuilt), 0 for none, -1 out of memory. */
/* defrag._truncated: an IPv6 first piece ending before its upper-layer header does (its extension headers walked as
 * Linux's ipv6_skip_exthdr walks them; a walk that cannot finish tells nothing). */
static int truncated(const piece_t *p) {
    const uint8_t *b = p->payload;
    unsigned kind = p->proto;
    Py_ssize_t at = 0, size = p->size;
    for (int i = 0; i < MAX_EXTENSION_HEADERS; i++) {
        if (!(is_fragmented_header(kind) || kind == 44 || kind == 59))
            return at + (kind == 6 ? 20 : kind == 17 || kind == 58 ? 8 : 1) > size;
        if (kind == 59 || at + 8 > size) return 0;
        Py_ssize_t step;
        if (kind == 44) {
            if (((unsigned)b[at + 2] << 8 | b[at + 3]) & 0xFFF8) return 0; /* a later piece's: the walk stops */
            step = 8;
        } else {
            step = kind == 51 ? ((Py_ssize_t)b[at + 1] + 2) * 4 : ((Py_ssize_t)b[at + 1] + 1) * 8;
        }
        kind = b[at];
        at += step;
    }
    return 0;
}

static Py_ssize_t defrag_add(Scanner *sc, int linktype, const uint8_t *d, Py_ssize_t n, double ts) {
    piece_t p;
    sc->copy = sc->tcp_piece = 0;
    if (!defrag_piece(linktype, d, n, &p)) return 0;
    sc->tcp_piece = p.proto == 6;
    if (p.version == 6) { /* defrag._shaped: ignored (RFC 8200 section 4.5, ipv6frag_thdr_truncated) */
        if ((p.more && p.size % 8) || p.offset + p.size > MAX_DATAGRAM || (p.offset == 0 && truncated(&p))) return 0;
    } else if (p.more && p.size % 8) {
        p.size &= ~(Py_ssize_t)7; /* cut to a multiple of 8, as Linux does */
    }
    if (!sc->datagrams && !(sc->datagrams = PyMem_Calloc(MAX_DATAGRAMS, sizeof(datagram_t)))) return -1;
    for (int i = 0; i < MAX_DATAGRAMS; i++) {
        datagram_t *old = &sc->datagrams[i];
        if (old->used && old->first + (old->version == 4 ? FRAGMENT_TIMEOUT : FRAGMENT_TIMEOUT_V6) < ts) old->used = 0;
    }
    datagram_t *g = defrag_find(sc, &p);
    if (g && g->used == 2) { /* joined already: a copy of one of its pieces, or the key reused */
        for (int i = 0; i < g->pieces; i++)
            if (g->starts[i] == p.offset && g->sizes[i] == p.size && !memcmp(g->payload + p.offset, p.payload, p.size)) {
                sc->copy = 1;
                return 0;
            }
        g->used = 0;
        g = NULL;
    }
    Py_ssize_t end = p.offset + p.size;
    if (!p.size) { /* an empty piece ends its datagram (Linux) */
        if (g) g->used = 0;
        return 0;
    }
    if (!g && !(g = defrag_begin(sc, &p, ts))) return -1;
    if ((!p.more && g->total >= 0 && g->total != end) || (g->total >= 0 && end > g->total)) { g->used = 0; return 0; }
    if (!p.more)
        for (int i = 0; i < g->pieces; i++)
            if (g->starts[i] + g->sizes[i] > end) { g->used = 0; return 0; }
    int placed = defrag_place(g, p.offset, end);
    if (placed != 1) {
        if (placed < 0) { g->used = 0; return 0; } /* overlap: the whole datagram goes */
        for (int i = 0; i < g->pieces; i++) /* within what it holds: ignored; an exact copy is no fragment left */
            if (g->starts[i] == p.offset && g->sizes[i] == p.size) sc->copy = 1;
        return 0;
    }
    if (g->pieces >= MAX_PIECES) { g->used = 0; return 0; }
    if (end > MAX_DATAGRAM) g->poisoned = 1; /* an IPv4 piece past 65 535 bytes: its datagram is never whole */
    else memcpy(g->payload + p.offset, p.payload, p.size);
    g->starts[g->pieces] = p.offset; g->sizes[g->pieces] = p.size; g->pieces++;
    g->held += p.size;
    if (!p.more) g->total = end;
    if (p.offset == 0) {
        memcpy(g->header, d, p.header_len);
        g->header_len = p.header_len; g->ip_at = p.at; g->has_header = 1; g->names_fragment = p.names_fragment;
    }
    if (!g->has_header || g->total < 0 || g->held != g->total) return 0;
    if (g->poisoned) { g->used = 0; return 0; } /* longer than an IP packet can be: dropped whole */
    g->used = 2; /* kept until it times out or makes room, to know copies of its pieces */
    sc->joined = g->pieces - 1;
    if (!sc->rebuilt && !(sc->rebuilt = PyMem_Malloc(MAX_HEADER + MAX_DATAGRAM))) return -1;
    return defrag_rebuild(sc, g);
}

/* ---- bytes dropped unread (skipping.py): armed flows and their notices ---- */

#define MAX_ARMED 16384 /* skipping.MAX_ARMED */
#define TAIL_KEEP 2048  /* delivery.TAIL_KEEP: the end of the last segment dropped, for overlap conflict checks */
enum { SKIP_NONE = 0, SKIP_DOT = 1, SKIP_RAW = 2, SKIP_ALL = 3, SKIP_RULE = 3, SKIP_STRICT = 4, SKIP_PAWS = 8,
       SKIP_TS_SHIFT = 8 }; /* skipping.py */
#define PAWS_WINDOW 1u /* tcpoptions.PAWS_WINDOW */
enum { TCP_URG = 0x20, OPT_TIMESTAMP = 0x400, OPT_SIGNED = 0x800, OPT_BAD_SIGNATURE = 0x1000 }; /* linklayer's */
enum { INFO_SKIPPED = 1 << 15 }; /* linklayer.INFO_SKIPPED */
enum { AR_FREE = 0, AR_USED = 1, AR_GONE = 2 };

typedef struct {
    int mode, line_start, has_notice, tail_in_buf;
    int strict; /* the direction showed right checksums: one as offload leaves it is handed over (SKIP_STRICT) */
    int paws;   /* its receiver judges timestamps (SKIP_PAWS): `kept` the one kept, raised by the segments dropped */
    uint32_t kept;
    long long notice_ts; /* the notice's: `kept` at its last segment with bytes, -1 for none */
    const uint8_t *tail; /* the end of the last segment dropped: in `buf` (tail_in_buf), or in its tail store slot */
    Py_ssize_t tail_len;
    uint32_t next, first, ack;
    unsigned window;
    unsigned long long left, bytes, packets;
    long long frame, data_frame; /* the last packet's, the last one with bytes' */
    double ts, data_ts;
} rule_t;

typedef struct armed_s {
    uint8_t a[16], b[16];  /* the canonical 4-tuple */
    uint64_t vnet;         /* and the virtual network */
    uint16_t pa, pb;
    uint8_t alen, state, client_is_a;
    double last;
    size_t dirty_at;       /* its place in the dirty list while a notice is pending: its rules' tail store slots */
    uint32_t acked[2];     /* per direction, its receiver's latest acknowledgement (HalfStream.acked), then moved on */
    rule_t rule[2];        /* the client's direction first */
} armed_t;


static armed_t *armed_slot(Scanner *sc, const uint8_t *a, const uint8_t *b, int alen, unsigned pa, unsigned pb,
                           uint64_t vnet, int for_insert) {
    size_t mask = sc->armed_cap - 1, i = key_hash(a, b, alen, pa, pb, vnet) & mask;
    armed_t *gone = NULL;
    for (;;) {
        armed_t *e = &sc->armed[i];
        if (e->state == AR_FREE) return for_insert ? (gone ? gone : e) : NULL;
        if (e->state == AR_GONE) { if (!gone) gone = e; }
        else if (e->alen == alen && e->pa == pa && e->pb == pb && e->vnet == vnet && !memcmp(e->a, a, alen)
                 && !memcmp(e->b, b, alen))
            return e;
        i = (i + 1) & mask;
    }
}

/* Rebuild into `capacity` slots, keeping the armed flows seen since `keep_after`. Only between batches: no notice
 * is pending then, so no index in the dirty list moves. */
static int armed_rebuild(Scanner *sc, size_t capacity, double keep_after) {
    armed_t *old = sc->armed, *fresh = PyMem_Calloc(capacity, sizeof(armed_t));
    size_t old_cap = sc->armed_cap;
    if (!fresh) return -1;
    sc->armed = fresh; sc->armed_cap = capacity; sc->armed_used = 0; sc->armed_gone = 0;
    for (size_t i = 0; old && i < old_cap; i++) {
        armed_t *e = &old[i];
        if (e->state != AR_USED || e->last < keep_after) continue;
        *armed_slot(sc, e->a, e->b, e->alen, e->pa, e->pb, e->vnet, 1) = *e;
        sc->armed_used++;
    }
    PyMem_Free(old);
    return 0;
}

/* A notice as linklayer.Segment (see skipping.py), appended as an item. */
static int flush_rule(Scanner *sc, PyObject *items, armed_t *e, int direction) {
    rule_t *r = &e->rule[direction];
    if (!r->has_notice) return 0;
    r->has_notice = 0; r->tail_in_buf = 0;
    int sender_is_a = direction == 0 ? e->client_is_a : !e->client_is_a;
    const uint8_t *src = sender_is_a ? e->a : e->b, *dst = sender_is_a ? e->b : e->a;
    unsigned sport = sender_is_a ? e->pa : e->pb, dport = sender_is_a ? e->pb : e->pa;
    PyObject *t = PyTuple_New(12);
    if (!t) return -1;
    for (int i = 0; i < 12; i++) {
        PyObject *o;
        switch (i) {
            case 0: o = address_object(src, e->alen); break;
            case 1: o = address_object(dst, e->alen); break;
            case 2: o = u16_object(sport); break;
            case 3: o = u16_object(dport); break;
            case 4: o = PyLong_FromUnsignedLong(r->first); break;
            case 5: o = PyLong_FromUnsignedLong(r->ack); break;
            case 6: o = u16_object(TCP_ACK); break;
            case 7: o = PyBytes_FromStringAndSize((const char *)r->tail, r->tail_len); break;
            case 8: o = PyLong_FromUnsignedLongLong(r->bytes); break;
            case 9:
                o = e->vnet ? PyLong_FromUnsignedLongLong(INFO_SKIPPED | e->vnet << INFO_VNET_SHIFT)
                            : u16_object(INFO_SKIPPED);
                break;
            case 10: o = u16_object(r->window); break;
            default:
                o = Py_BuildValue("(KLdL)", r->packets, r->frame - r->data_frame, r->data_ts, r->notice_ts);
                if (o) PyObject_GC_UnTrack(o);
                break;
        }
        if (!o) { Py_DECREF(t); return -1; }
        PyTuple_SET_ITEM(t, i, o);
    }
    PyObject_GC_UnTrack(t); /* numbers and bytes only, as a segment's */
    return append_item(items, r->frame, r->ts, t);
}

/* Both directions' notices, in the order of their last packets: the flow's latest time and frame are its last
 * packet's, as when they were read. */
static int flush_armed(Scanner *sc, PyObject *items, armed_t *e) {
    int first = e->rule[0].has_notice && e->rule[1].has_notice && e->rule[1].frame < e->rule[0].frame;
    return flush_rule(sc, items, e, first) < 0 || flush_rule(sc, items, e, !first) < 0 ? -1 : 0;
}

/* Every pending notice, in the order the flows first dropped a packet (before a sweep tick, at a batch's end). */
static int flush_all(Scanner *sc, PyObject *items) {
    for (size_t i = 0; i < sc->dirty_used; i++)
        if (flush_armed(sc, items, &sc->armed[sc->dirty[i]]) < 0) return -1;
    sc->dirty_used = 0; sc->fresh_used = 0; /* every tail is in a bytes object now */
    return 0;
}

/* Hand over the flow's notices and forget it: its segment goes on. 0, or -1 on error. Its slot stays in the dirty
 * list (O(1)): a forgotten flow has no notice left, and no slot is reused before the batch's end (skip_flow). */
static int disarm(Scanner *sc, PyObject *items, armed_t *e) {
    if (flush_armed(sc, items, e) < 0) return -1;
    e->state = AR_GONE;
    sc->armed_used--; sc->armed_gone++;
    return 0;
}

/* A line starting with a dot in a body: after a LF, or after a CR (a server may take a bare CR for a line end). */
static int contains_line_dot(const uint8_t *p, Py_ssize_t n) {
    const uint8_t *end = p + n;
    for (int newline = '\n'; newline; newline = newline == '\n' ? '\r' : 0) {
        for (const uint8_t *q = p; q < end;) {
            const uint8_t *nl = memchr(q, newline, (size_t)(end - q));
            if (!nl || nl + 1 >= end) break;
            if (nl[1] == '.') return 1;
            q = nl + 1;
        }
    }
    return 0;
}

/* An admitted segment of an armed flow: 1 dropped into its direction's notice, 0 goes on (the flow disarmed), -1 on
 * error. The rules are PyScanner._skipped's. */
/* skipping.judged: a signature (or a damaged list), or a timestamp older than the kept one by more than PAWS_WINDOW:
 * Python judges it (1). Else the kept one is raised where the receiver would keep it (tcpoptions.keep_timestamp: a
 * segment not starting past its latest acknowledgement, whose own acknowledgement is not older than its sender's
 * last), and the acknowledgements move on. */
static int judged(armed_t *e, int direction, const seg_t *s) {
    rule_t *r = &e->rule[direction];
    uint64_t options = s->options;
    if (options & (OPT_SIGNED | OPT_BAD_SIGNATURE)) return 1;
    int fresh_ack = (uint32_t)(s->ack - e->acked[1 - direction]) < 0x80000000u;
    uint32_t unsent = s->ack - e->rule[1 - direction].next; /* past the peer's next byte */
    if (r->paws && (!fresh_ack || (unsent && unsent < 0x80000000u))) return 1; /* Python judges its timestamp */
    if (r->paws && (options & OPT_TIMESTAMP)) {
        uint32_t tsval = (uint32_t)(options >> 32), older = r->kept - tsval;
        if (r->kept && older > PAWS_WINDOW && older < 0x80000000u) return 1;
        uint32_t start = s->seq - e->acked[direction], end = s->seq + (uint32_t)s->wire_len - e->acked[direction];
        if ((start == 0 || start >= 0x80000000u) && end < 0x80000000u && (!r->kept || (uint32_t)(tsval - r->kept) < 0x80000000u))
            r->kept = tsval;
    }
    if (fresh_ack) e->acked[1 - direction] = s->ack;
    return 0;
}

static int skip_segment(Scanner *sc, PyObject *items, long long frame, double ts, const uint8_t *d, const seg_t *s,
                        int rebuilt) {
    const uint8_t *a, *b; unsigned pa, pb;
    canonical(s->src, s->sport, s->dst, s->dport, s->alen, &a, &pa, &b, &pb);
    armed_t *e = armed_slot(sc, a, b, s->alen, pa, pb, s->info >> INFO_VNET_SHIFT, 0);
    if (!e) return 0;
    int sender_is_a = a == s->src && pa == s->sport;
    rule_t *r = &e->rule[sender_is_a == e->client_is_a ? 0 : 1];
    /* A frame joined from pieces is not kept past its packet: its bytes are never dropped into a notice. */
    if (s->flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG) || !(s->flags & TCP_ACK) || rebuilt
        || (s->info & INFO_CSUM_BAD) || ((s->info & INFO_CSUM_LEFT) && r->strict))
        return disarm(sc, items, e); /* checksums Python doubts (doubtful.py): it decides what the receiver took */
    if (judged(e, (int)(r - e->rule), s)) return disarm(sc, items, e); /* Python judges it (tcpoptions.py) */
    if (e->last + sc->idle_timeout < ts) return disarm(sc, items, e); /* Python may have expired the flow */
    Py_ssize_t size = s->wire_len;
    const uint8_t *p = d + s->pstart;
    if (size) {
        if (r->mode == SKIP_NONE || s->seq != r->next || s->plen != size) return disarm(sc, items, e);
        if (r->mode == SKIP_DOT) {
            /* under two bytes: Python reads it, so that a notice's tail always says how a line before a dot ended */
            if (size < 2 || contains_line_dot(p, size) || (r->line_start && p[0] == '.')) return disarm(sc, items, e);
            r->line_start = p[size - 1] == '\n' || p[size - 1] == '\r';
        } else if (r->mode == SKIP_RAW) {
            if ((unsigned long long)size >= r->left) return disarm(sc, items, e);
            r->left -= (unsigned long long)size;
        } else if (r->mode != SKIP_ALL) {
            return disarm(sc, items, e);
        }
        r->next += (uint32_t)size;
    }
    if (!r->has_notice && !e->rule[0].has_notice && !e->rule[1].has_notice) {
        e->dirty_at = sc->dirty_used;
        sc->dirty[sc->dirty_used++] = (size_t)(e - sc->armed);
    }
    if (!r->has_notice) {
        r->has_notice = 1; r->first = s->seq; r->bytes = 0; r->packets = 0; r->tail_len = 0;
        r->data_frame = 0; r->data_ts = 0.0;
    }
    r->notice_ts = r->paws ? (long long)r->kept : -1; /* what Python's ts_recent moves to (skipping.apply_notice) */
    if (size) {
        if (!r->bytes) r->first = s->seq;
        r->bytes += (unsigned long long)size;

        r->tail_len = size < TAIL_KEEP ? size : TAIL_KEEP;
        r->tail = p + size - r->tail_len;
        if (!r->tail_in_buf) { /* at most once per rule until keep_tails or its flush: `fresh` never overflows */
            r->tail_in_buf = 1;
            sc->fresh[sc->fresh_used++] = e->dirty_at * 2 + (size_t)(r - e->rule);
        }
        r->data_frame = frame; r->data_ts = ts;
    }
    r->packets++;
    r->ack = s->ack; r->window = s->window; r->frame = frame; r->ts = ts;
    e->last = ts;
    return 1;
}

/* skip_flow(client, cport, server, sport, last, c_rule, c_next, c_left, c_line_start, s_rule, s_next, s_left,
 * s_line_start, *, vnet=0) -> bool. `last`: the capture time of the flow's latest packet (Python's). */
static PyObject *Scanner_skip_flow(Scanner *sc, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"", "", "", "", "", "", "", "", "", "", "", "", "", "vnet", "client_acked", "server_acked",
                            NULL};
    Py_buffer ca, sa;
    unsigned int cp, sp;
    unsigned long long cmode, smode;
    unsigned long cnext, snext;
    unsigned long long cleft, sleft, vnet = 0;
    unsigned long cacked = 0, sacked = 0;
    int cline, sline;
    double last;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*Iy*IdKkKpKkKp|$Kkk", names, &ca, &cp, &sa, &sp, &last, &cmode,
                                     &cnext, &cleft, &cline, &smode, &snext, &sleft, &sline, &vnet, &cacked, &sacked))
        return NULL;
    uint8_t client[16], server[16];
    int alen = (int)ca.len;
    int ok = (ca.len == 4 || ca.len == 16) && ca.len == sa.len && cp < 65536 && sp < 65536
             && (cmode & 0xFF) <= (SKIP_ALL | SKIP_STRICT | SKIP_PAWS) && (smode & 0xFF) <= (SKIP_ALL | SKIP_STRICT | SKIP_PAWS)
             && cmode >> SKIP_TS_SHIFT <= 0xFFFFFFFFull && smode >> SKIP_TS_SHIFT <= 0xFFFFFFFFull && cnext <= 0xFFFFFFFFul
             && snext <= 0xFFFFFFFFul;
    if (ok) { memcpy(client, ca.buf, ca.len); memcpy(server, sa.buf, sa.len); }
    PyBuffer_Release(&ca);
    PyBuffer_Release(&sa);
    if (!ok) { PyErr_SetString(PyExc_ValueError, "skip_flow: bad flow or rule"); return NULL; }
    if (sc->dirty_used) { PyErr_SetString(PyExc_RuntimeError, "skip_flow within a batch"); return NULL; }
    const uint8_t *a, *b; unsigned pa, pb;
    canonical(client, cp, server, sp, alen, &a, &pa, &b, &pb);
    armed_t *e = sc->armed ? armed_slot(sc, a, b, alen, pa, pb, vnet, 0) : NULL;
    if (!(cmode & SKIP_RULE) && !(smode & SKIP_RULE)) {
        if (e) { e->state = AR_GONE; sc->armed_used--; sc->armed_gone++; }
        Py_RETURN_TRUE;
    }
    if (!e) {
        if (sc->armed_used >= MAX_ARMED) {
            if (armed_rebuild(sc, sc->armed_cap, sc->now - sc->idle_timeout) < 0) return PyErr_NoMemory();
            if (sc->armed_used >= MAX_ARMED) Py_RETURN_FALSE;
        }
        if (!sc->armed || (sc->armed_used + sc->armed_gone + 1) * 2 > sc->armed_cap) {
            size_t capacity = sc->armed ? sc->armed_cap : 1024;
            while ((sc->armed_used + 1) * 2 > capacity) capacity *= 2;
            if (armed_rebuild(sc, capacity, -1.0 / 0.0) < 0) return PyErr_NoMemory();
        }
        if (!sc->dirty) sc->dirty = PyMem_Calloc(MAX_ARMED, sizeof *sc->dirty);
        if (!sc->fresh) sc->fresh = PyMem_Calloc(2 * (size_t)MAX_ARMED, sizeof *sc->fresh);
        if (!sc->dirty || !sc->fresh) return PyErr_NoMemory(); /* neither half is ever used alone */
        e = armed_slot(sc, a, b, alen, pa, pb, vnet, 1);
        if (e->state == AR_GONE) sc->armed_gone--;
        memset(e, 0, sizeof *e);
        memcpy(e->a, a, alen); memcpy(e->b, b, alen);
        e->vnet = vnet;
        e->pa = (uint16_t)pa; e->pb = (uint16_t)pb; e->alen = (uint8_t)alen; e->state = AR_USED;
        sc->armed_used++;
    }
    e->client_is_a = a == client && pa == cp;
    e->last = last;
    e->acked[0] = (uint32_t)cacked; e->acked[1] = (uint32_t)sacked;
    unsigned long long modes[2] = {cmode, smode};
    unsigned long nexts[2] = {cnext, snext};
    unsigned long long lefts[2] = {cleft, sleft};
    int lines[2] = {cline, sline};
    for (int i = 0; i < 2; i++) {
        rule_t *r = &e->rule[i];
        memset(r, 0, sizeof *r);
        r->mode = (int)(modes[i] & SKIP_RULE); r->strict = (modes[i] & SKIP_STRICT) != 0;
        r->paws = (modes[i] & SKIP_PAWS) != 0; r->kept = (uint32_t)(modes[i] >> SKIP_TS_SHIFT);
        r->next = (uint32_t)nexts[i]; r->left = lefts[i]; r->line_start = lines[i];
    }
    Py_RETURN_TRUE;
}

/* Forget the armed flows idle past the timeout at `now`, as Python's sweep closes them (Reassembler.expire). Only
 * right after every notice was handed over: no slot moves, none is reused. */
static void armed_expire(Scanner *sc, double now) {
    double limit = now - sc->idle_timeout;
    for (size_t i = 0; sc->armed_used && i < sc->armed_cap; i++) {
        armed_t *e = &sc->armed[i];
        if (e->state == AR_USED && e->last < limit) { e->state = AR_GONE; sc->armed_used--; sc->armed_gone++; }
    }
}

/* skip_none(): forget every armed flow (between batches). */
static PyObject *Scanner_skip_none(Scanner *sc, PyObject *Py_UNUSED(ignored)) {
    if (sc->dirty_used) { PyErr_SetString(PyExc_RuntimeError, "skip_none within a batch"); return NULL; }
    if (sc->armed_used || sc->armed_gone) {
        memset(sc->armed, 0, sc->armed_cap * sizeof *sc->armed);
        sc->armed_used = sc->armed_gone = 0;
    }
    Py_RETURN_NONE;
}

/* Whether an IPv4 piece left unjoined counts as a fragment (scanner.py _v4_piece): a later piece of a UDP packet has
 * no ports, and in port mode the filter passes it as a possible tunnel's only; a TCP packet's piece is a fragment. */
static int v4_pieces_counted(const Scanner *sc) { return sc->every_port || sc->all_named || sc->tcp_piece; }

/* One record: ADMIT (appended), DROP, STALL (nothing consumed), or -1 on error. */
static int scan_record(Scanner *sc, PyObject *items, long long frame, double ts, const uint8_t *d, Py_ssize_t n,
                       int linktype) {
    int lead = sc->shard == 0; /* packets of no flow are counted by the first worker only */
    sc->now = ts;
    if (!sc->stalled) {
        sc->counters[C_READ]++;
        if (sc->sweep_every > 0 && ts >= sc->sweep_at) {
            sc->sweep_at = ts + sc->sweep_every;
            if (flush_all(sc, items) < 0) return -1;
            armed_expire(sc, ts);
            Py_INCREF(Py_None);
            if (append_item(items, frame, ts, Py_None) < 0) return -1;
        }
        if (sc->bpf && !bpf_run(sc->bpf, d, (uint32_t)n, (uint32_t)n)) { sc->counters[C_FILTERED] += lead; return DROP; }
    }
    seg_t s;
    if (sc->stalled && sc->rebuilt_len) { d = sc->rebuilt; n = sc->rebuilt_len; } /* its admission waited */
    int status = decode_frame(linktype, d, n, &s);
    if ((status == FRAGMENT_V4 || status == FRAGMENT_V6) && !sc->stalled) {
        Py_ssize_t built = defrag_add(sc, linktype, d, n, ts);
        if (built < 0) { PyErr_NoMemory(); return -1; }
        if (built > 0) { /* the last piece of a tunnel packet: the packet, read as any other */
            /* the pieces before it, counted as they came (the slot below), are part of it now */
            int joined = status == FRAGMENT_V6 || v4_pieces_counted(sc) ? C_FRAGMENTS : C_NOT_TCP;
            sc->counters[joined] -= lead * sc->joined;
            sc->rebuilt_len = built;
            d = sc->rebuilt; n = built;
            status = decode_frame(linktype, d, n, &s);
        } else if (sc->copy) {
            return DROP; /* a copy of a piece: no fragment left unread */
        }
    }
    if (status != SEGMENT) {
        int slot = status == MALFORMED ? C_MALFORMED : status == FRAGMENT_V6 ? C_FRAGMENTS
                 : status == FRAGMENT_V4 ? (v4_pieces_counted(sc) ? C_FRAGMENTS : C_NOT_TCP)
                 : status == UNSUPPORTED_LINK ? C_UNSUPPORTED : C_NOT_TCP;
        sc->counters[slot] += lead;
        return DROP;
    }
    if (sc->shards > 1 && shard_of(&s) % (unsigned)sc->shards != (unsigned)sc->shard) {
        sc->counters[C_OTHER_WORKER]++;
        return DROP;
    }
    int named = port_named(sc, s.sport) || port_named(sc, s.dport);
    if (s.info & INFO_FIRST_FRAGMENT) { /* counted, never reassembled (linklayer.py) */
        sc->counters[named || sc->every_port ? C_FRAGMENTS : C_OTHER_PORT]++;
        return DROP;
    }
    if (!named) {
        if (!sc->every_port) { sc->counters[C_OTHER_PORT]++; return DROP; }
        int verdict = flow_admission(sc, &s, d, ts, PyList_GET_SIZE(items) == 0);
        if (verdict < 0) { PyErr_NoMemory(); return -1; }
        if (verdict == STALL) { sc->stalled = 1; return STALL; }
        if (verdict == DROP) return DROP;
    }
    s.info |= checksum_bits(d, n, &s); /* of the segments admitted only */
    int skipped = sc->armed_used ? skip_segment(sc, items, frame, ts, d, &s, sc->rebuilt_len != 0) : 0;
    if (skipped < 0) return -1;
    if (!skipped) {
        PyObject *segment = segment_tuple(d, &s);
        if (!segment || append_item(items, frame, ts, segment) < 0) return -1;
    }
    sc->counters[C_ADMITTED]++;
    if (s.plen < s.wire_len) sc->counters[C_TRUNCATED]++;
    if (s.info & (INFO_GRE | INFO_ERSPAN | INFO_VXLAN | INFO_GENEVE | INFO_MPLS | INFO_PPPOE | INFO_IPIP))
        for (int i = 0; i < 7; i++)
            if (s.info & TUNNEL_BITS[i]) sc->counters[C_GRE + i]++;
    return ADMIT;
}

/* ---- file source ---- */

static uint32_t rd32(const Scanner *sc, const uint8_t *p) {
    return sc->swapped ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
                       : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static void set_error(Scanner *sc, const char *format, ...) {
    va_list args;
    va_start(args, format);
    PyObject *message = PyUnicode_FromFormatV(format, args);
    va_end(args);
    if (!message) { PyErr_Clear(); return; }
    Py_XSETREF(sc->error, message);
}

/* The pending notices' tails (skip_segment) point into `buf`: before it is refilled, those still there (`fresh`) are
 * copied to their rule's slot in the tail store: slot dirty_at * 2 + direction, TAIL_KEEP bytes. A tail is copied once
 * per refill at most, and only a tail that came in since the last one, so a refill copies no more than the bytes it
 * replaces, however many notices are pending. The store grows to the slots in use: 64 MiB were all MAX_ARMED flows
 * pending at once in both directions (a crafted capture; a few KiB in practice), and a store past TAILS_KEPT is freed
 * between batches. 0, or -1 out of memory. */
static int keep_tails(Scanner *sc) {
    size_t need = 0;
    for (size_t j = 0; j < sc->fresh_used; j++)
        if (sc->fresh[j] + 1 > need) need = sc->fresh[j] + 1;
    if (need > sc->store_slots) {
        size_t slots = sc->store_slots ? sc->store_slots : 64;
        while (slots < need) slots *= 2;
        uint8_t *grown = PyMem_Realloc(sc->store, slots * TAIL_KEEP);
        if (!grown) return -1;
        sc->store = grown; sc->store_slots = slots;
        for (size_t i = 0; i < sc->dirty_used; i++) /* tails already in the store moved with it */
            for (int k = 0; k < 2; k++) {
                rule_t *r = &sc->armed[sc->dirty[i]].rule[k];
                if (r->has_notice && !r->tail_in_buf && r->tail_len) r->tail = grown + (i * 2 + (size_t)k) * TAIL_KEEP;
            }
    }
    for (size_t j = 0; j < sc->fresh_used; j++) {
        size_t slot = sc->fresh[j];
        rule_t *r = &sc->armed[sc->dirty[slot / 2]].rule[slot % 2];
        if (!r->has_notice || !r->tail_in_buf) continue; /* flushed since (its flow was handed back) */
        uint8_t *at = sc->store + slot * TAIL_KEEP;
        memcpy(at, r->tail, (size_t)r->tail_len);
        sc->tails_copied += (unsigned long long)r->tail_len;
        r->tail = at;
        r->tail_in_buf = 0;
    }
    sc->fresh_used = 0;
    return 0;
}

/* Between batches no tail is pending: a store grown past TAILS_KEPT (a burst of armed flows) is given back. */
static void trim_tails(Scanner *sc) {
    sc->fresh_used = 0;
    if (sc->store_slots * TAIL_KEEP > TAILS_KEPT) { PyMem_Free(sc->store); sc->store = NULL; sc->store_slots = 0; }
}

/* fill: make the file's next `want` bytes from `pos` on whole in `buf` (fewer where the file ends: reads stop at `size`,
 * and a read finding the file shorter than that moves `size` back to where it ended). The descriptor is read in
 * order, never sought: its offset is buf_at + buf_len. 0, or -1 with an exception. */
static int refill(Scanner *sc, size_t want) {
    if (sc->fresh_used && keep_tails(sc) < 0) { PyErr_NoMemory(); return -1; }
    /* pos is never before buf_at; it passes the buffer's end only when reading stops (moved to the file's end) */
    size_t end = sc->buf_at + sc->buf_len, keep = sc->pos < end ? end - sc->pos : 0;
    if (keep) memmove(sc->buf, sc->buf + (sc->pos - sc->buf_at), keep);
    sc->buf_at = sc->pos; sc->buf_len = keep;
    if (want > sc->buf_cap) { /* a pcapng block larger than the buffer (at most MAX_BLOCK): the tails are out of it */
        uint8_t *grown = PyMem_Realloc(sc->buf, want);
        if (!grown) { PyErr_NoMemory(); return -1; }
        sc->buf = grown; sc->buf_cap = want;
    }
    while (sc->buf_len < sc->buf_cap && sc->buf_at + sc->buf_len < sc->size) {
        size_t room = sc->buf_cap - sc->buf_len, left = sc->size - (sc->buf_at + sc->buf_len);
        /* read, not pread: the descriptor's position (/proc/PID/fdinfo) says how far the scanner has read. Other
         * threads run meanwhile: a pipe's writer (a decompressing thread) needs the interpreter to fill it. */
        ssize_t got;
        Py_BEGIN_ALLOW_THREADS
        got = read(sc->fd, sc->buf + sc->buf_len, room < left ? room : left);
        Py_END_ALLOW_THREADS
        if (got < 0 && errno == EINTR) {
            if (PyErr_CheckSignals() < 0) return -1; /* Ctrl-C while waiting on a pipe */
            continue;
        }
        if (got <= 0) { /* cut short since it was opened, or unreadable: it ends here */
            if (got < 0)
                set_error(sc, "read error at byte %zu: %s; stopped reading there", sc->buf_at + sc->buf_len,
                          strerror(errno));
            sc->size = sc->buf_at + sc->buf_len;
            break;
        }
        sc->buf_len += (size_t)got;
    }
    return 0;
}

static inline int fill(Scanner *sc, size_t want) {
    if (sc->pos + want <= sc->buf_at + sc->buf_len || sc->buf_at + sc->buf_len >= sc->size || sc->pos >= sc->size)
        return 0;
    return refill(sc, want);
}

/* Reading stops: at the end of a file, or, in a pipe (whose end is not known), here. */
static inline void stop_reading(Scanner *sc) {
    if (sc->size == SIZE_MAX) sc->size = sc->pos;
    sc->pos = sc->size;
}

/* Where reading stops early: the first reason is kept (a read error says more than the cut it causes). */
#define STOP_ERROR(...) do { if (sc->error == Py_None) set_error(sc, __VA_ARGS__); } while (0)

static int pcapng_records(Scanner *sc, PyObject *items);

static PyObject *Scanner_next_batch(Scanner *sc, PyObject *Py_UNUSED(ignored)) {
    if (!sc->buf) Py_RETURN_NONE;
    PyObject *items = PyList_New(0);
    if (!items) return NULL;
    if (sc->pcapng && pcapng_records(sc, items) < 0) { Py_DECREF(items); return NULL; }
    while (!sc->pcapng && PyList_GET_SIZE(items) < sc->batch_packets) {
        if (fill(sc, 16) < 0) { Py_DECREF(items); return NULL; }
        if (sc->pos + 16 > sc->size) {
            if (sc->pos < sc->size)
                STOP_ERROR("truncated capture: record header of frame %lld cut short", sc->frame + 1);
            stop_reading(sc);
            break;
        }
        const uint8_t *rec = sc->buf + (sc->pos - sc->buf_at);
        uint32_t sec = rd32(sc, rec), frac = rd32(sc, rec + 4), caplen = rd32(sc, rec + 8);
        if (caplen > MAX_RECORD) {
            sc->oversized++;
            STOP_ERROR("corrupt capture: frame %lld claims %lu captured bytes (limit %d); stopped reading there",
                       sc->frame + 1, (unsigned long)caplen, MAX_RECORD);
            stop_reading(sc);
            break;
        }
        if (fill(sc, 16 + (size_t)caplen) < 0) { Py_DECREF(items); return NULL; }
        if (sc->size - sc->pos - 16 < caplen) { /* after the fill: `size` is where the file really ends */
            STOP_ERROR("truncated capture: frame %lld cut short (%zd of %lu bytes)", sc->frame + 1,
                       (Py_ssize_t)(sc->size - sc->pos - 16), (unsigned long)caplen);
            stop_reading(sc);
            break;
        }
        rec = sc->buf + (sc->pos - sc->buf_at); /* the fill may have moved it */
        double ts = (double)sec + (double)frac / (sc->nsec ? 1e9 : 1e6);
        int rc = scan_record(sc, items, sc->frame + 1, ts, rec + 16, caplen, sc->linktype);
        if (rc < 0) { Py_DECREF(items); return NULL; }
        if (rc == STALL) break;
        sc->stalled = 0; sc->rebuilt_len = 0;
        sc->frame++;
        sc->pos += 16 + (size_t)caplen;
    }
    if (flush_all(sc, items) < 0) { Py_DECREF(items); return NULL; }
    trim_tails(sc);
    if (PyList_GET_SIZE(items) == 0 && sc->pos >= sc->size) {
        Py_DECREF(items);
        Py_RETURN_NONE;
    }
    return items;
}

/* ---- pcapng: the blocks of pcapfile.PacketReader._pcapng, to the same frames, times, counts and messages ---- */

static uint16_t rd16(const Scanner *sc, const uint8_t *p) {
    return sc->swapped ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

/* An interface description block's body: link type, snap length, if_tsresol (9) and if_tsoffset (14); the options
 * end at option 0 or at one running past the block. */
static int add_interface(Scanner *sc, const uint8_t *body, size_t len) {
    if (sc->ifaces_used == sc->ifaces_cap) {
        size_t cap = sc->ifaces_cap ? sc->ifaces_cap * 2 : 8;
        iface_t *grown = PyMem_Realloc(sc->ifaces, cap * sizeof(iface_t));
        if (!grown) { PyErr_NoMemory(); return -1; }
        sc->ifaces = grown; sc->ifaces_cap = cap;
    }
    iface_t *f = &sc->ifaces[sc->ifaces_used++];
    *f = (iface_t){-1, 1e6, 0, 0};
    if (len < 8) { sc->short_interface = 1; return 0; }
    f->linktype = rd16(sc, body);
    f->snaplen = rd32(sc, body + 4);
    sc->linktypes_seen[f->linktype >> 3] |= (uint8_t)(1 << (f->linktype & 7));
    for (size_t at = 8; at + 4 <= len;) {
        unsigned code = rd16(sc, body + at), length = rd16(sc, body + at + 2);
        if (code == 0 || at + 4 + length > len) break;
        const uint8_t *value = body + at + 4;
        if (code == 9 && length >= 1) {
            int exponent = value[0] & 0x7F;
            char text[8];
            snprintf(text, sizeof text, "1e%d", exponent); /* float(10**e) in Python: correctly rounded */
            f->units = value[0] & 0x80 ? ldexp(1.0, exponent) : strtod(text, NULL);
        } else if (code == 14 && length >= 8) {
            uint64_t first = rd32(sc, value), second = rd32(sc, value + 4); /* a 64-bit word in the section's order */
            f->offset = (long long)(sc->swapped ? first << 32 | second : second << 32 | first);
        }
        at += 4 + length + ((4 - length % 4) % 4);
    }
    return 0;
}

/* A packet block's interface, time, captured length and where its data starts; a message for a damaged one. */
static const char *packet_block(Scanner *sc, uint32_t type, const uint8_t *body, size_t len, uint32_t *iface,
                                double *ts, uint32_t *caplen, size_t *data_at, char *why, size_t why_len) {
    uint32_t hi = 0, lo = 0;
    if (type == 6 || type == 2) {
        if (len < 20) return type == 6 ? "enhanced packet block too short" : "packet block too short";
        *iface = type == 6 ? rd32(sc, body) : rd16(sc, body);
        hi = rd32(sc, body + 4); lo = rd32(sc, body + 8); *caplen = rd32(sc, body + 12);
        *data_at = 20;
    } else {
        if (len < 4) return "simple packet block too short";
        uint32_t wire = rd32(sc, body), snap = sc->ifaces_used ? sc->ifaces[0].snaplen : 0;
        *iface = 0; *data_at = 4;
        *caplen = wire < len - 4 ? wire : (uint32_t)(len - 4);
        if (snap && snap < *caplen) *caplen = snap;
    }
    if (*iface >= sc->ifaces_used) {
        snprintf(why, why_len, "packet on undeclared interface %lu", (unsigned long)*iface);
        return why;
    }
    if (*data_at + *caplen > len) {
        snprintf(why, why_len, "captured length %lu exceeds its block", (unsigned long)*caplen);
        return why;
    }
    const iface_t *f = &sc->ifaces[*iface];
    *ts = (double)((uint64_t)hi << 32 | lo) / f->units + (double)f->offset;
    return NULL;
}

static int pcapng_records(Scanner *sc, PyObject *items) {
    while (PyList_GET_SIZE(items) < sc->batch_packets) {
        if (fill(sc, 12) < 0) return -1;
        if (sc->pos + 12 > sc->size) {
            if (sc->pos < sc->size) STOP_ERROR("truncated capture: block header after frame %lld cut short", sc->frame);
            stop_reading(sc);
            break;
        }
        const uint8_t *b = sc->buf + (sc->pos - sc->buf_at);
        uint32_t type = rd32(sc, b);
        if (type == PCAPNG_SHB) {
            uint32_t bom = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24;
            if (bom != PCAPNG_BOM && __builtin_bswap32(bom) != PCAPNG_BOM) {
                STOP_ERROR("corrupt capture: bad section header after frame %lld", sc->frame);
                stop_reading(sc);
                break;
            }
            sc->swapped = bom != PCAPNG_BOM;
            sc->ifaces_used = 0;
        }
        uint32_t total = rd32(sc, b + 4);
        if (total < 12 || total % 4 || total > MAX_BLOCK) {
            STOP_ERROR("corrupt capture: block after frame %lld has impossible length %lu", sc->frame,
                       (unsigned long)total);
            stop_reading(sc);
            break;
        }
        if (fill(sc, total) < 0) return -1;
        if (sc->size - sc->pos < total) {
            STOP_ERROR("truncated capture: block after frame %lld cut short", sc->frame);
            stop_reading(sc);
            break;
        }
        b = sc->buf + (sc->pos - sc->buf_at); /* the fill may have moved it */
        if (rd32(sc, b + total - 4) != total) {
            STOP_ERROR("corrupt capture: block after frame %lld has mismatched trailing length", sc->frame);
            stop_reading(sc);
            break;
        }
        const uint8_t *body = b + 8;
        size_t len = total - 12;
        if (type == 1) {
            if (sc->ifaces_used >= MAX_INTERFACES) {
                STOP_ERROR("corrupt capture: more than %d interfaces in one section", MAX_INTERFACES);
                stop_reading(sc);
                break;
            }
            if (add_interface(sc, body, len) < 0) return -1;
            sc->pos += total;
            continue;
        }
        if (type != 6 && type != 2 && type != 3) { sc->pos += total; continue; }
        uint32_t iface = 0, caplen = 0;
        size_t data_at = 0;
        double ts = 0;
        char why[96];
        const char *bad = packet_block(sc, type, body, len, &iface, &ts, &caplen, &data_at, why, sizeof why);
        if (bad) {
            STOP_ERROR("corrupt capture: frame %lld: %s", sc->frame + 1, bad);
            stop_reading(sc);
            break;
        }
        uint32_t kept = caplen < MAX_RECORD ? caplen : MAX_RECORD;
        int rc = scan_record(sc, items, sc->frame + 1, ts, body + data_at, kept, sc->ifaces[iface].linktype);
        if (rc < 0) return -1;
        if (rc == STALL) break;
        sc->stalled = 0; sc->rebuilt_len = 0;
        if (caplen > MAX_RECORD) { sc->oversized++; sc->cut++; }
        sc->frame++;
        sc->pos += total;
    }
    return 0;
}

/* `prefix`: the first bytes of a pipe, taken from it before (by sniffing what it holds), read before the pipe's own.
 * The file is opened without waiting for a writer (a named pipe whose writer is gone then reads as ended). */
static int open_file(Scanner *sc, PyObject *path, const Py_buffer *prefix) {
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(path, &encoded)) return -1;
    sc->fd = open(PyBytes_AS_STRING(encoded), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    Py_DECREF(encoded);
    if (sc->fd < 0) { PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path); return -1; }
    struct stat st;
    int flags = fcntl(sc->fd, F_GETFL);
    if (flags < 0 || fcntl(sc->fd, F_SETFL, flags & ~O_NONBLOCK) < 0 || fstat(sc->fd, &st) < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    if (S_ISFIFO(st.st_mode)) sc->size = SIZE_MAX; /* a pipe (a compressed capture decompressed into it): to its end */
    else if (!S_ISREG(st.st_mode)) { PyErr_SetString(PyExc_ValueError, "not a regular file or a pipe"); return -1; }
    else sc->size = (size_t)st.st_size; /* what the file holds when opened: read up to there, never past it */
    if (sc->size < 24) { PyErr_SetString(PyExc_ValueError, "file too short to be a capture"); return -1; }
    if (prefix->len && (sc->size != SIZE_MAX || (size_t)prefix->len > READ_BUFFER)) {
        PyErr_SetString(PyExc_ValueError, "a prefix is for a pipe, and at most a read buffer long");
        return -1;
    }
    sc->buf = PyMem_Malloc(READ_BUFFER);
    if (!sc->buf) { PyErr_NoMemory(); return -1; }
    sc->buf_cap = READ_BUFFER;
    if (prefix->len) memcpy(sc->buf, prefix->buf, (size_t)prefix->len);
    sc->buf_len = (size_t)prefix->len;
    posix_fadvise(sc->fd, 0, 0, POSIX_FADV_SEQUENTIAL); /* a hint for read-ahead; nothing depends on it */
    int pipe = sc->size == SIZE_MAX;
    if (fill(sc, 24) < 0) return -1;
    const uint8_t *head = sc->buf;
    uint32_t magic = sc->buf_len < 4 ? 0
        : (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 24;
    if (pipe && magic != PCAPNG_SHB && sc->buf_len < 24) { /* read once: no other reader can explain it */
        set_error(sc, "truncated capture: global header cut short");
        stop_reading(sc);
        return 0;
    }
    if (sc->buf_len < 24 && !(pipe && magic == PCAPNG_SHB)) {
        if (sc->error != Py_None) PyErr_SetObject(PyExc_OSError, sc->error);
        else PyErr_SetString(PyExc_ValueError, "file too short to be a capture");
        return -1;
    }
    if (magic == PCAPNG_SHB) { /* blocks from the first on, the section header among them */
        sc->pcapng = 1; sc->linktype = -1; sc->pos = 0;
        sc->linktypes_seen = PyMem_Calloc(65536 / 8, 1);
        if (!sc->linktypes_seen) { PyErr_NoMemory(); return -1; }
        return 0;
    }
    if (magic == PCAP_MAGIC_USEC || magic == PCAP_MAGIC_NSEC) sc->swapped = 0;
    else if (__builtin_bswap32(magic) == PCAP_MAGIC_USEC || __builtin_bswap32(magic) == PCAP_MAGIC_NSEC) {
        sc->swapped = 1;
        magic = __builtin_bswap32(magic);
    } else { PyErr_SetString(PyExc_ValueError, "not a classic pcap file"); return -1; }
    sc->nsec = magic == PCAP_MAGIC_NSEC;
    sc->linktype = (int)(rd32(sc, head + 20) & 0x0FFFFFFF); /* upper bits may carry FCS information */
    sc->pos = 24;
    return 0;
}

/* ---- buffer source: libpcap's next_batch output (live capture) ---- */

static PyObject *Scanner_scan(Scanner *sc, PyObject *args) {
    Py_buffer buf, meta;
    int linktype;
    long long frame;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "y*y*iLn", &buf, &meta, &linktype, &frame, &start)) return NULL;
    PyObject *items = PyList_New(0), *result = NULL;
    Py_ssize_t records = meta.len / 16, i = start < 0 ? 0 : start;
    if (!items) goto done;
    for (; i < records && PyList_GET_SIZE(items) < sc->batch_packets; i++) {
        uint32_t m[4];
        memcpy(m, (const char *)meta.buf + i * 16, sizeof m); /* native-endian sec, usec, offset, caplen */
        if ((Py_ssize_t)m[2] > buf.len || (Py_ssize_t)m[3] > buf.len - (Py_ssize_t)m[2]) continue;
        double ts = (double)m[0] + (double)m[1] * 1e-6;
        int rc = scan_record(sc, items, frame + 1, ts, (const uint8_t *)buf.buf + m[2], m[3], linktype);
        if (rc < 0) { Py_CLEAR(items); goto done; }
        if (rc == STALL) break;
        sc->stalled = 0; sc->rebuilt_len = 0;
        frame++;
    }
    if (flush_all(sc, items) < 0) { Py_CLEAR(items); goto done; }
    result = Py_BuildValue("(NnL)", items, i, frame);
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&meta);
    return result;
}

/* ---- verdicts from Python ---- */

/* last (keep_flow, drop_flow): the flow's last time, when a new file's scanner of a stream, whose clock has not
 * started, is told a verdict reached in an earlier file (otherwise the entry looks idle at the flow's next packet
 * and starts over as a new head, its verdict lost). */
static int parse_flow(PyObject *args, uint8_t *src, unsigned *sport, uint8_t *dst, unsigned *dport, int *alen,
                      uint64_t *vnet, double *last) {
    Py_buffer a, b;
    unsigned int pa, pb;
    unsigned long long network = 0;
    if (!PyArg_ParseTuple(args, "y*Iy*I|Kd", &a, &pa, &b, &pb, &network, last)) return -1;
    *vnet = network;
    int ok = (a.len == 4 || a.len == 16) && a.len == b.len && pa < 65536 && pb < 65536;
    if (ok) {
        memcpy(src, a.buf, a.len);
        memcpy(dst, b.buf, b.len);
    }
    *alen = (int)a.len; *sport = pa; *dport = pb;
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    if (!ok) { PyErr_SetString(PyExc_ValueError, "a flow is (4- or 16-byte address, port, address, port)"); return -1; }
    return 0;
}

static PyObject *set_flow(Scanner *sc, PyObject *args, int state) {
    uint8_t src[16], dst[16]; unsigned sport, dport; int alen; uint64_t vnet; double last = -1.0 / 0.0;
    if (parse_flow(args, src, &sport, dst, &dport, &alen, &vnet, &last) < 0) return NULL;
    entry_t *e = flow_entry(sc, src, sport, dst, dport, alen, vnet, sc->now);
    if (!e) return PyErr_NoMemory();
    unextend(e);
    e->state = (uint8_t)state;
    if (last > e->last) e->last = last;
    Py_RETURN_NONE;
}

static PyObject *Scanner_keep_flow(Scanner *sc, PyObject *args) { return set_flow(sc, args, ST_KEEP); }
static PyObject *Scanner_drop_flow(Scanner *sc, PyObject *args) { return set_flow(sc, args, ST_DROP); }

static PyObject *Scanner_keep_server(Scanner *sc, PyObject *args) {
    Py_buffer a;
    unsigned int port;
    if (!PyArg_ParseTuple(args, "y*I", &a, &port)) return NULL;
    if ((a.len != 4 && a.len != 16) || port > 65535) {
        PyBuffer_Release(&a);
        PyErr_SetString(PyExc_ValueError, "a server is (4- or 16-byte address, port)");
        return NULL;
    }
    int found = server_index(sc, a.buf, (int)a.len, port, 1);
    PyBuffer_Release(&a);
    return PyBool_FromLong(found >= 0);
}

static PyObject *Scanner_counters(Scanner *sc, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyDict_New();
    for (int i = 0; out && i < N_COUNTERS; i++) {
        PyObject *value = PyLong_FromLongLong(sc->counters[i]);
        if (!value || PyDict_SetItemString(out, COUNTER_NAMES[i], value) < 0) Py_CLEAR(out);
        Py_XDECREF(value);
    }
    return out;
}

static void close_source(Scanner *sc) {
    PyMem_Free(sc->buf); sc->buf = NULL;
    if (sc->fd >= 0) { close(sc->fd); sc->fd = -1; }
}

/* The pieces of tunnel packets another scanner holds (the previous file's of a stream read as one) move to this
 * one, whose own (none yet) are dropped: a packet fragmented across a file switch is joined as in one file. */
static PyObject *Scanner_take_datagrams(Scanner *sc, PyObject *other) {
    if (!PyObject_TypeCheck(other, Py_TYPE(sc))) { PyErr_SetString(PyExc_TypeError, "a Scanner"); return NULL; }
    Scanner *from = (Scanner *)other;
    if (from != sc) {
        PyMem_Free(sc->datagrams);
        sc->datagrams = from->datagrams; sc->datagrams_born = from->datagrams_born;
        from->datagrams = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Scanner_close(Scanner *sc, PyObject *Py_UNUSED(ignored)) {
    close_source(sc);
    Py_RETURN_NONE;
}

/* ---- construction ---- */

static int load_bpf(Scanner *sc, PyObject *program) {
    PyObject *seq = PySequence_Fast(program, "bpf must be a sequence of (code, jt, jf, k)");
    if (!seq) return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    sc->bpf = len > 0 && len <= BPF_MAXINSNS ? PyMem_Calloc((size_t)len, sizeof(bpf_insn_t)) : NULL;
    if (!sc->bpf) { Py_DECREF(seq); PyErr_SetString(PyExc_ValueError, "BPF program of impossible size"); return -1; }
    int fits = 1;
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned int code, jt, jf; unsigned long k;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "IIIk", &code, &jt, &jf, &k)) {
            Py_DECREF(seq);
            return -1;
        }
        sc->bpf[i] = (bpf_insn_t){(uint16_t)code, (uint8_t)jt, (uint8_t)jf, (uint32_t)k};
        fits = fits && code <= 0xFFFF && jt <= 255 && jf <= 255 && k <= 0xFFFFFFFFul;
    }
    Py_DECREF(seq);
    sc->bpf_len = len;
    if (!fits || !bpf_valid(sc->bpf, len)) { PyErr_SetString(PyExc_ValueError, "invalid BPF program"); return -1; }
    return 0;
}

static int init_settings(Scanner *sc, PyObject *path, PyObject *ports, int every_port, int head, int shard, int shards,
                         double sweep_every, double idle_timeout, PyObject *bpf, Py_ssize_t batch_packets,
                         const Py_buffer *prefix);

static int Scanner_init(Scanner *sc, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"path", "ports", "every_port", "head", "shard", "shards", "sweep_every", "idle_timeout",
                            "bpf", "batch_packets", "prefix", NULL};
    PyObject *path = Py_None, *ports = NULL, *bpf = Py_None;
    int every_port = 0, head = 12, shard = 0, shards = 1;
    double sweep_every = 0, idle_timeout = 300;
    Py_ssize_t batch_packets = 256;
    Py_buffer prefix = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|piiiddOny*", names, &path, &ports, &every_port, &head, &shard,
                                     &shards, &sweep_every, &idle_timeout, &bpf, &batch_packets, &prefix))
        return -1;
    int done = init_settings(sc, path, ports, every_port, head, shard, shards, sweep_every, idle_timeout, bpf,
                             batch_packets, &prefix);
    if (prefix.obj) PyBuffer_Release(&prefix);
    return done;
}

static int init_settings(Scanner *sc, PyObject *path, PyObject *ports, int every_port, int head, int shard, int shards,
                         double sweep_every, double idle_timeout, PyObject *bpf, Py_ssize_t batch_packets,
                         const Py_buffer *prefix) {
    if (sc->flows.slots) {
        PyErr_SetString(PyExc_RuntimeError, "a scanner is initialised once");
        return -1;
    }
    if (shards < 1 || shard < 0 || shard >= shards || head < 0 || head > 65535 || batch_packets < 1) {
        PyErr_SetString(PyExc_ValueError, "bad scanner settings");
        return -1;
    }
    sc->every_port = every_port; sc->head = head; sc->shard = shard; sc->shards = shards;
    sc->sweep_every = sweep_every; sc->idle_timeout = idle_timeout; sc->batch_packets = batch_packets;
    sc->sweep_at = -1.0 / 0.0;
    sc->now = -1.0 / 0.0;
    PyObject *iter = PyObject_GetIter(ports), *item;
    if (!iter) return -1;
    while ((item = PyIter_Next(iter))) {
        long port = PyLong_AsLong(item);
        Py_DECREF(item);
        if (port < 0 || port > 65535) {
            Py_DECREF(iter);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "port out of range");
            return -1;
        }
        sc->ports[port >> 3] |= (uint8_t)(1 << (port & 7));
    }
    Py_DECREF(iter);
    if (PyErr_Occurred()) return -1;
    sc->all_named = 1;
    for (int i = 0; i < 8192; i++) sc->all_named = sc->all_named && sc->ports[i] == 0xFF;
    if (bpf != Py_None && load_bpf(sc, bpf) < 0) return -1;
    if (table_init(&sc->flows, 4096) < 0) { PyErr_NoMemory(); return -1; }
    sc->servers_cap = MAX_SERVERS * 2;
    sc->servers = PyMem_Calloc(sc->servers_cap, sizeof(server_t));
    if (!sc->servers) { PyErr_NoMemory(); return -1; }
    Py_INCREF(Py_None);
    sc->error = Py_None;
    if (path != Py_None && open_file(sc, path, prefix) < 0) return -1;
    return 0;
}

static PyObject *Scanner_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Scanner *sc = (Scanner *)type->tp_alloc(type, 0);
    if (sc) sc->fd = -1;
    return (PyObject *)sc;
}

static void Scanner_dealloc(Scanner *sc) {
    close_source(sc);
    PyMem_Free(sc->flows.slots);
    PyMem_Free(sc->servers);
    PyMem_Free(sc->bpf);
    PyMem_Free(sc->armed);
    PyMem_Free(sc->dirty);
    for (int i = 0; sc->datagrams && i < MAX_DATAGRAMS; i++) PyMem_Free(sc->datagrams[i].payload);
    PyMem_Free(sc->datagrams);
    PyMem_Free(sc->rebuilt);
    PyMem_Free(sc->store);
    PyMem_Free(sc->fresh);
    PyMem_Free(sc->ifaces);
    PyMem_Free(sc->linktypes_seen);
    Py_XDECREF(sc->error);
    Py_TYPE(sc)->tp_free((PyObject *)sc);
}

static PyObject *Scanner_get_error(Scanner *sc, void *closure) { return Py_NewRef(sc->error ? sc->error : Py_None); }
static PyObject *Scanner_get_linktype(Scanner *sc, void *closure) { return PyLong_FromLong(sc->linktype); }
static PyObject *Scanner_get_oversized(Scanner *sc, void *closure) { return PyLong_FromLongLong(sc->oversized); }
static PyObject *Scanner_get_frames(Scanner *sc, void *closure) { return PyLong_FromLongLong(sc->frame); }
static PyObject *Scanner_get_cut(Scanner *sc, void *closure) { return PyLong_FromLongLong(sc->cut); }
static PyObject *Scanner_get_last_time(Scanner *sc, void *closure) {
    if (sc->now == -1.0 / 0.0) Py_RETURN_NONE;
    return PyFloat_FromDouble(sc->now);
}
static PyObject *Scanner_get_linktypes(Scanner *sc, void *closure) {
    PyObject *out = PyFrozenSet_New(NULL), *value = NULL;
    for (int t = sc->pcapng ? -1 : sc->linktype; out && t <= (sc->pcapng ? 65535 : sc->linktype); t++) {
        int seen = !sc->pcapng || (t < 0 ? sc->short_interface : sc->linktypes_seen[t >> 3] >> (t & 7) & 1);
        if (!seen) continue;
        if (!(value = PyLong_FromLong(t)) || PySet_Add(out, value) < 0) Py_CLEAR(out);
        Py_XDECREF(value);
    }
    return out;
}
static PyObject *Scanner_get_position(Scanner *sc, void *closure) { return PyLong_FromSize_t(sc->pos); }
static PyObject *Scanner_get_flows(Scanner *sc, void *closure) { return PyLong_FromSize_t(sc->flows.used); }
static PyObject *Scanner_get_batch(Scanner *sc, void *closure) { return PyLong_FromSsize_t(sc->batch_packets); }
static PyObject *Scanner_get_tails_copied(Scanner *sc, void *closure) {
    return PyLong_FromUnsignedLongLong(sc->tails_copied);
}

static PyGetSetDef Scanner_getset[] = {
    {"error", (getter)Scanner_get_error, NULL, "why reading stopped before the end of the file, or None", NULL},
    {"linktype", (getter)Scanner_get_linktype, NULL, "the file's link type", NULL},
    {"oversized", (getter)Scanner_get_oversized, NULL, "records over MAX_RECORD (the one that stopped reading)", NULL},
    {"frames", (getter)Scanner_get_frames, NULL, "records read so far", NULL},
    {"cut", (getter)Scanner_get_cut, NULL, "pcapng packets cut to MAX_RECORD", NULL},
    {"last_time", (getter)Scanner_get_last_time, NULL, "the time of the last record read, or None", NULL},
    {"linktypes", (getter)Scanner_get_linktypes, NULL, "the link types the file declared (-1: an interface too short)",
     NULL},
    {"position", (getter)Scanner_get_position, NULL, "bytes of the file read so far (its header included)", NULL},
    {"flows", (getter)Scanner_get_flows, NULL, "flow states held", NULL},
    {"batch_packets", (getter)Scanner_get_batch, NULL, "segments per batch at most", NULL},
    {"tail_bytes_copied", (getter)Scanner_get_tails_copied, NULL,
     "bytes of dropped segments' tails copied out of the read buffer before a refill (at most the bytes read)", NULL},
    {NULL},
};

static PyMethodDef Scanner_methods[] = {
    {"next_batch", (PyCFunction)Scanner_next_batch, METH_NOARGS,
     "next_batch() -> list of (frame, ts, segment or None for a sweep tick), or None at the end of the file"},
    {"scan", (PyCFunction)Scanner_scan, METH_VARARGS,
     "scan(buf, meta, linktype, frame, start) -> (items, next record index, last frame): next_batch output"},
    {"take_datagrams", (PyCFunction)Scanner_take_datagrams, METH_O,
     "take_datagrams(other): the pieces of fragmented tunnel packets another scanner holds move here"},
    {"keep_flow", (PyCFunction)Scanner_keep_flow, METH_VARARGS,
     "keep_flow(src, sport, dst, dport, vnet=0, last=-inf): a mail flow (last: its last time)"},
    {"drop_flow", (PyCFunction)Scanner_drop_flow, METH_VARARGS, "drop_flow(src, sport, dst, dport, vnet=0, last=-inf): not mail"},
    {"keep_server", (PyCFunction)Scanner_keep_server, METH_VARARGS,
     "keep_server(address, port) -> bool: every flow to or from this endpoint is admitted"},
    {"skip_flow", (PyCFunction)(void (*)(void))Scanner_skip_flow, METH_VARARGS | METH_KEYWORDS,
     "skip_flow(client, cport, server, sport, last, rule, next, left, line_start (client's), then the server's, "
     "*, vnet=0) -> bool: "
     "drop what follows of the flow unread (skipping.py)"},
    {"skip_none", (PyCFunction)Scanner_skip_none, METH_NOARGS, "skip_none(): forget every flow skip_flow armed"},
    {"counters", (PyCFunction)Scanner_counters, METH_NOARGS, "counters() -> dict"},
    {"close", (PyCFunction)Scanner_close, METH_NOARGS, "release the file"},
    {NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "passive.capture._cscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Scanner(path, ports, every_port=False, head=12, shard=0, shards=1, sweep_every=0, idle_timeout=300, "
              "bpf=None, batch_packets=256)",
    .tp_new = Scanner_new,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
};

static PyObject *py_decode(PyObject *self, PyObject *args) {
    int linktype;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "iy*", &linktype, &data)) return NULL;
    seg_t s;
    int status = decode_frame(linktype, data.buf, data.len, &s);
    if (status == SEGMENT) s.info |= checksum_bits(data.buf, data.len, &s);
    PyObject *out = status == SEGMENT ? segment_tuple(data.buf, &s) : PyLong_FromLong(status);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef module_methods[] = {
    {"decode", py_decode, METH_VARARGS, "decode(linktype, frame) -> segment tuple or status (linklayer.decode_tcp)"},
    {NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cscan", "The compiled packet scanner.", -1,
                                    module_methods};

PyMODINIT_FUNC PyInit__cscan(void) {
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0
        || PyModule_AddIntConstant(m, "MAX_RECORD", MAX_RECORD) < 0
        || PyModule_AddIntConstant(m, "MAX_SCAN_FLOWS", MAX_TABLE_FLOWS) < 0
        || PyModule_AddIntConstant(m, "MAX_SERVERS", MAX_SERVERS) < 0
        || PyModule_AddIntConstant(m, "HEAD_QUIET", HEAD_QUIET) < 0
        || PyModule_AddIntConstant(m, "HEAD_LINE_BYTES", HEAD_LINE_BYTES) < 0
        || PyModule_AddIntConstant(m, "HEAD_SHARE", 1 << HEAD_SHARE_SHIFT) < 0
        || PyModule_AddIntConstant(m, "HEAD_FLOOR", HEAD_FLOOR) < 0
        || PyModule_AddIntConstant(m, "MAX_EXTENDING", MAX_EXTENDING) < 0
        || PyModule_AddIntConstant(m, "MAX_ARMED", MAX_ARMED) < 0
        || PyModule_AddIntConstant(m, "TAIL_KEEP", TAIL_KEEP) < 0
        || PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0
        || PyModule_AddIntConstant(m, "MAX_LABELS", MAX_LABELS) < 0
        || PyModule_AddIntConstant(m, "MAX_VLAN_TAGS", MAX_VLAN_TAGS) < 0
        || PyModule_AddIntConstant(m, "MAX_DATAGRAMS", MAX_DATAGRAMS) < 0
        || PyModule_AddIntConstant(m, "MAX_PIECES", MAX_PIECES) < 0
        || PyModule_AddIntConstant(m, "FRAGMENT_TIMEOUT_V6", FRAGMENT_TIMEOUT_V6) < 0
        || PyModule_AddIntConstant(m, "MAX_DATAGRAM", MAX_DATAGRAM) < 0
        || PyModule_AddIntConstant(m, "MAX_LINK_HEADER", MAX_LINK_HEADER) < 0
        || PyModule_AddIntConstant(m, "READ_BUFFER", READ_BUFFER) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *timeout = PyFloat_FromDouble(FRAGMENT_TIMEOUT); /* the limits' twins are compared in tests */
    if (!timeout || PyModule_AddObjectRef(m, "FRAGMENT_TIMEOUT", timeout) < 0) {
        Py_XDECREF(timeout);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(timeout);
    return m;
}
