/*
 * The Linux guest side of the vsock KVM test (vsock-kvm.test.ts), a static program the starter
 * image runs through `typervisor.test=run:...`. Single-threaded, one connection at a time:
 *  1. guest -> host: connects to the host (CID 2, VMADDR_CID_HOST) on port HOST_PORT, sends
 *     "ping\n", expects "pong\n"; prints "vsock-test: guest->host ok" (or why not);
 *  2. host -> guest: listens on GUEST_PORT and serves connections until a 'Q' one. The first byte
 *     says what the host wants:
 *       'E'  echo every byte until the connection ends;
 *       'H'  read an 8-byte little-endian length, then that many bytes, and answer with the byte
 *            count and their FNV-1a 64 hash (8 + 8 bytes, little endian);
 *       'Q'  print the count of connections served and exit 0.
 * Usage: vsock-test <guest port> <host port>
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t w = write(fd, (const char *)buf + put, n - put);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    put += (size_t)w;
  }
  return 0;
}

static void put_le64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static int guest_to_host(unsigned port) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) { printf("vsock-test: socket: %s\n", strerror(errno)); return -1; }
  struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = port };
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { printf("vsock-test: connect to host port %u: %s\n", port, strerror(errno)); close(s); return -1; }
  char reply[5];
  if (write_full(s, "ping\n", 5) < 0 || read_full(s, reply, 5) < 0 || memcmp(reply, "pong\n", 5) != 0) {
    printf("vsock-test: guest->host exchange failed\n");
    close(s);
    return -1;
  }
  close(s);
  printf("vsock-test: guest->host ok\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: vsock-test <guest port> <host port>\n"); return 2; }
  unsigned gport = (unsigned)strtoul(argv[1], NULL, 10), hport = (unsigned)strtoul(argv[2], NULL, 10);
  setvbuf(stdout, NULL, _IONBF, 0);
  /* Listen first, so the host can connect as soon as it sees the guest->host connection. */
  int l = socket(AF_VSOCK, SOCK_STREAM, 0);
  struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = gport };
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 16) < 0) { printf("vsock-test: listen on %u: %s\n", gport, strerror(errno)); return 1; }
  printf("vsock-test: listening on port %u\n", gport);
  if (guest_to_host(hport) < 0) return 1;
  static unsigned char buf[65536];
  unsigned long served = 0;
  for (;;) {
    int c = accept(l, NULL, NULL);
    if (c < 0) { if (errno == EINTR) continue; printf("vsock-test: accept: %s\n", strerror(errno)); return 1; }
    served++;
    unsigned char op;
    if (read_full(c, &op, 1) < 0) { close(c); continue; }
    if (op == 'Q') { close(c); printf("vsock-test: served %lu connections\n", served); return 0; }
    if (op == 'E') {
      for (;;) {
        ssize_t r = read(c, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || write_full(c, buf, (size_t)r) < 0) break;
      }
    } else if (op == 'H') {
      unsigned char len8[8];
      if (read_full(c, len8, 8) == 0) {
        uint64_t left = 0, count = 0, h = 0xcbf29ce484222325ULL; /* FNV-1a 64 offset basis */
        for (int i = 0; i < 8; i++) left |= (uint64_t)len8[i] << (8 * i);
        while (left > 0) {
          ssize_t r = read(c, buf, left < sizeof buf ? (size_t)left : sizeof buf);
          if (r < 0 && errno == EINTR) continue;
          if (r <= 0) break;
          for (ssize_t i = 0; i < r; i++) { h ^= buf[i]; h *= 0x100000001b3ULL; } /* FNV-1a 64 prime */
          left -= (uint64_t)r;
          count += (uint64_t)r;
        }
        unsigned char out[16];
        put_le64(out, count);
        put_le64(out + 8, h);
        write_full(c, out, 16);
      }
    }
    close(c);
  }
}
