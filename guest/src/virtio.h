/* virtio.h — ring-3 virtio-mmio + virtio-blk driver of the probe guest.
 * virtio 1.2: §4.2.2 (MMIO registers), §3.1.1 (init), §2.7 (split virtqueue), §5.2 (blk).
 * Completions are found by polling used->idx, or in interrupt mode (blk-verify with
 * probe.blk.irq=1) by waiting for the device's interrupt (IOAPIC -> LAPIC -> boot.S's counting
 * stub, ring 3 with IF=1 through SYS_IRQ): README.md. */
#ifndef PROBE_VIRTIO_H
#define PROBE_VIRTIO_H

#include "probe.h"

#define VIRTIO_MAX_DEVICES 8

struct virtio_dev {
    u64 base;          /* MMIO window, from virtio_mmio.device=<size>@<addr>:<irq> */
    u64 size;
    u32 irq;
    u32 device_id;     /* 0: nothing there */
    u32 version;
    u64 features;      /* offered by the device */
};

/* Finds every virtio_mmio.device= entry of the command line; returns the count. */
u32 virtio_scan(const char *cmdline, usize len, struct virtio_dev *out, u32 max);

/* Command-line options (virtio.c): last value of key=, and a number with K/M/G suffixes. */
/* Decimal or 0x-hex at s[*i..n), advancing *i; K/M/G suffixes when `suffix`. 0 when no digits. */
int parse_num(const char *s, usize n, usize *i, u64 *out, int suffix);
const char *opt_get(const struct boot_facts *f, const char *key, usize *len);
int opt_u64(const struct boot_facts *f, const char *key, u64 dflt, u64 *out);
int phys_is_ram(const struct boot_facts *f, u64 base, u64 size);

/* ---- one-queue driver (virtio-rng, virtio-nsm): polling, no EVENT_IDX, no indirect ---- */
struct vdesc { u64 addr; u32 len; u16 flags; u16 next; };   /* virtio 1.2 §2.7.5 */
struct vq {
    struct virtio_dev *dev;
    u32 qsize;
    volatile struct vdesc *desc;
    volatile u16 *avail;
    volatile u16 *used16;
    volatile u32 *used32;
    u16 avail_idx, used_seen;
    u32 next_desc;
};
struct vq_buf { u64 addr; u32 len; int write; };
/* Rings for one-queue devices: 12 KiB at `ring` (desc, avail, used). */
#define VQ_RING_BYTES 0x3000
/* First device with this ID on the command line, or NULL. */
struct virtio_dev *virtio_find(const struct boot_facts *f, u32 device_id);
/* §3.1.1 init with queue 0 at `ring`; accepts VERSION_1 plus `want`. Returns an error word or NULL. */
const char *vq_open(struct vq *q, struct virtio_dev *d, u64 want, u64 ring);
/* Publishes one chain (not kicked); returns its head. */
u32 vq_add(struct vq *q, const struct vq_buf *b, u32 n);
void vq_kick(struct vq *q);
/* Waits for the next used entry by polling (the device is asked for no interrupts); 0 on timeout (~20 s). */
int vq_take(struct vq *q, u32 *id, u32 *len);
void vq_close(struct vq *q);

int test_rng(const struct boot_facts *f);
int test_nsm(const struct boot_facts *f);

/* Shared by the block tests (virtio.c, ata.c, xenblk.c). */
/* The data pattern: the u64 at byte offset o is (o * 0x9E3779B97F4A7C15) ^ seed (README.md). */
u64 bench_pattern(u64 byte_off, u64 seed);
/* The benches' xorshift64 (Marsaglia): seeded with BENCH_SEED for the timed runs, BENCH_WARMUP_SEED before. */
#define BENCH_SEED        0x2545F4914F6CDD1DULL
#define BENCH_WARMUP_SEED 0x9E3779B97F4A7C15ULL
void bench_seed(u64 seed);
u64 bench_rand(void);
/* A bench report line's common fields, left open (the caller may add more, then line_end()). */
void bench_line(const char *test, const char *mode, u32 qd, u64 bs, u64 ops, u64 tsc, u64 errors);

int test_blk_verify(const struct boot_facts *f);
int test_blk_ro(const struct boot_facts *f);
int test_blk_bench(const struct boot_facts *f);
int test_blk_durable(const struct boot_facts *f);
int test_blk_hostile(const struct boot_facts *f);

#endif
