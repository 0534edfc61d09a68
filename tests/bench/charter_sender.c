// Traffic generator for `./dev bench charter` (compiled with gcc by tests/bench/charter.py at bench time).
//
//     charter_sender DST_IP PORT SECONDS FILE
//
// Sends the datagrams in FILE (each a 2-byte big-endian length then the bytes), round robin, to DST_IP:PORT from
// one connected UDP socket with sendmmsg(2) in batches of BATCH, for SECONDS of wall time (after a short warm-up).
// Prints one line: "<datagrams sent> <wall nanoseconds> <sender CPU nanoseconds> <failed sendmmsg calls>
// <datagrams sent including the warm-up>" (the last is what a filter on the path saw). A datagram the TC egress filter
// drops still counts as sent: UDP does not report the drop to the sender (no IP_RECVERR).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_DATAGRAMS 4096
#define MAX_LEN 2048

static unsigned char data[MAX_DATAGRAMS][MAX_LEN];
static size_t lens[MAX_DATAGRAMS];

static long long now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s DST_IP PORT SECONDS FILE\n", argv[0]);
        return 2;
    }
    double seconds = atof(argv[3]);
    FILE *f = fopen(argv[4], "rb");
    if (!f) {
        perror(argv[4]);
        return 1;
    }
    size_t n = 0;
    unsigned char hdr[2];
    while (n < MAX_DATAGRAMS && fread(hdr, 1, 2, f) == 2) {
        lens[n] = ((size_t)hdr[0] << 8) | hdr[1];
        if (lens[n] > MAX_LEN || fread(data[n], 1, lens[n], f) != lens[n]) {
            fprintf(stderr, "%s: truncated or too long datagram %zu\n", argv[4], n);
            return 1;
        }
        n++;
    }
    fclose(f);
    if (n == 0) {
        fprintf(stderr, "%s: no datagrams\n", argv[4]);
        return 1;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (s < 0 || inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1 || connect(s, (struct sockaddr *)&dst, sizeof(dst))) {
        perror("socket/connect");
        return 1;
    }
    // The batches cycle through the datagrams: n x BATCH message headers (and BATCH more, so a batch starting
    // anywhere below `slots` stays in the array), built once.
    size_t slots = n * BATCH;
    struct mmsghdr *msgs = calloc(slots + BATCH, sizeof(*msgs));
    struct iovec *iov = calloc(slots + BATCH, sizeof(*iov));
    for (size_t i = 0; i < slots + BATCH; i++) {
        iov[i].iov_base = data[i % n];
        iov[i].iov_len = lens[i % n];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0, errors = 0, warm = 0;
    size_t at = 0;
    long long warm_until = now_ns(CLOCK_MONOTONIC) + 200000000LL;
    while (now_ns(CLOCK_MONOTONIC) < warm_until) {
        int r = sendmmsg(s, &msgs[at], BATCH, 0);
        if (r < 0) {
            if (errno != ENOBUFS && errno != ECONNREFUSED) {
                perror("sendmmsg");
                return 1;
            }
            continue;
        }
        warm += r;
        at = (at + (size_t)r) % slots;
    }
    long long start = now_ns(CLOCK_MONOTONIC), cpu0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    long long stop = start + (long long)(seconds * 1e9), end;
    while ((end = now_ns(CLOCK_MONOTONIC)) < stop) {
        int r = sendmmsg(s, &msgs[at], BATCH, 0);
        if (r < 0) {
            if (errno != ENOBUFS && errno != ECONNREFUSED) {
                perror("sendmmsg");
                return 1;
            }
            errors++;
            continue;
        }
        sent += r;
        at = (at + (size_t)r) % slots;
    }
    long long cpu = now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    printf("%lld %lld %lld %lld %lld\n", sent, end - start, cpu, errors, warm + sent);
    return 0;
}
