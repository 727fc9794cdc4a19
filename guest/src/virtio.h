/* virtio.h — ring-3 virtio-mmio + virtio-blk driver of the probe guest (polling mode).
 * virtio 1.2: §4.2.2 (MMIO registers), §3.1.1 (init), §2.7 (split virtqueue), §5.2 (blk).
 * Interrupt mode is not implemented: ring 3 runs with IF=0 (README.md), so completions are
 * found by polling used->idx. */
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

int test_blk_verify(const struct boot_facts *f);
int test_blk_ro(const struct boot_facts *f);
int test_blk_bench(const struct boot_facts *f);

#endif
