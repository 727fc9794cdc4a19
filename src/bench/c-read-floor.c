/*
 * The kernel's floor under the block card's per-request cost (`npm run bench:card-cost`): 4 KiB
 * reads at random sector-aligned offsets of an image, from C, with nothing else around them —
 *   1. one pread(2) per read, as the card does (src/cards/blk-file.ts);
 *   2. io_uring, IORING_OP_READ in batches of 32 (the card's QD32), one io_uring_enter per batch,
 *      the way issue 12 asks to weigh ("io_uring through the FFI layer if it measures better");
 *   3. getppid(2), the cost of entering the kernel at all.
 * Prints one JSON object on stdout: ns per read for each, and how many threads the process had
 * after the io_uring run (more than 1: the kernel handed the reads to io-wq workers, as it does
 * for a file that cannot be read without blocking, e.g. tmpfs).
 *
 * Usage: c-read-floor IMAGE [READS]   (the image is only read; READS a multiple of 32)
 * Build: gcc -O2 -o c-read-floor src/bench/c-read-floor.c   (guest/Makefile does)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define BATCH 32

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int threads(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  if (d == NULL) return -1;
  for (struct dirent *e; (e = readdir(d)) != NULL;) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static int fail(const char *what) {
  fprintf(stderr, "c-read-floor: %s: %s\n", what, strerror(errno));
  return 1;
}

/* Reads READS blocks at offs[] through io_uring, BATCH per io_uring_enter. ns per read, or < 0. */
static double uring_reads(int fd, const uint64_t *offs, long reads, char *buf) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  int ring = (int)syscall(__NR_io_uring_setup, 2 * BATCH, &p);
  if (ring < 0) return -errno;
  /* Linux io_uring ABI (include/uapi/linux/io_uring.h): three mappings at fixed offsets. */
  char *sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
  char *cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
  struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
  if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) return -errno;
  _Atomic unsigned *sq_tail = (_Atomic unsigned *)(sq + p.sq_off.tail);
  unsigned sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask), *sq_array = (unsigned *)(sq + p.sq_off.array);
  _Atomic unsigned *cq_head = (_Atomic unsigned *)(cq + p.cq_off.head), *cq_tail = (_Atomic unsigned *)(cq + p.cq_off.tail);
  unsigned cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
  struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  double t = now();
  for (long i = 0; i < reads; i += BATCH) {
    unsigned tail = atomic_load_explicit(sq_tail, memory_order_relaxed);
    for (int j = 0; j < BATCH; j++) {
      unsigned idx = (tail + j) & sq_mask;
      struct io_uring_sqe *s = &sqes[idx];
      memset(s, 0, sizeof *s);
      s->opcode = IORING_OP_READ;
      s->fd = fd;
      s->off = offs[i + j];
      s->addr = (uint64_t)(uintptr_t)(buf + j * BLOCK);
      s->len = BLOCK;
      sq_array[idx] = idx;
    }
    atomic_store_explicit(sq_tail, tail + BATCH, memory_order_release);
    long r = syscall(__NR_io_uring_enter, ring, BATCH, BATCH, IORING_ENTER_GETEVENTS, NULL, 0);
    if (r != BATCH) return r < 0 ? -errno : -1;
    unsigned head = atomic_load_explicit(cq_head, memory_order_relaxed), end = atomic_load_explicit(cq_tail, memory_order_acquire);
    for (; head != end; head++) if (cqes[head & cq_mask].res != BLOCK) return -1;
    atomic_store_explicit(cq_head, head, memory_order_release);
  }
  return (now() - t) / (double)reads;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: c-read-floor IMAGE [READS]\n");
    return 2;
  }
  long reads = argc > 2 ? atol(argv[2]) : 320000;
  if (reads < BATCH || reads % BATCH != 0) {
    fprintf(stderr, "c-read-floor: READS must be a positive multiple of %d\n", BATCH);
    return 2;
  }
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) return fail(argv[1]);
  struct stat st;
  if (fstat(fd, &st) != 0) return fail("fstat");
  uint64_t blocks = (uint64_t)st.st_size / BLOCK;
  if (blocks == 0) {
    fprintf(stderr, "c-read-floor: %s is smaller than %d bytes\n", argv[1], BLOCK);
    return 2;
  }
  uint64_t *offs = malloc((size_t)reads * sizeof *offs);
  char *buf = aligned_alloc(BLOCK, BATCH * BLOCK);
  if (offs == NULL || buf == NULL) return fail("malloc");
  memset(buf, 0, BATCH * BLOCK);
  srandom(12);
  for (long i = 0; i < reads; i++) offs[i] = ((uint64_t)random() % blocks) * BLOCK;

  double t = now();
  for (long i = 0; i < reads; i++) {
    if (pread(fd, buf + (i % BATCH) * BLOCK, BLOCK, (off_t)offs[i]) != BLOCK) return fail("pread");
  }
  double pread_ns = (now() - t) / (double)reads;

  double uring_ns = uring_reads(fd, offs, reads, buf);
  int after = threads();

  t = now();
  for (long i = 0; i < reads; i++) syscall(__NR_getppid);
  double syscall_ns = (now() - t) / (double)reads;

  printf("{\"reads\":%ld,\"preadNs\":%.1f,", reads, pread_ns);
  if (uring_ns < 0) printf("\"uringBatch32Ns\":null,\"uringError\":%d,", (int)-uring_ns);
  else printf("\"uringBatch32Ns\":%.1f,", uring_ns);
  printf("\"threadsAfterUring\":%d,\"getppidNs\":%.1f}\n", after, syscall_ns);
  return 0;
}
