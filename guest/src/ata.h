/* ata.h — the probe's ATA PIO driver tests (ata.c), the Xen blkfront tests (xenblk.c), and the
 * few helpers they share (latency percentiles, the test pattern). Options and the RAM check are
 * virtio.c's (virtio.h). */
#ifndef PROBE_ATA_H
#define PROBE_ATA_H

#include "probe.h"
#include "virtio.h"

/* Guest-physical scratch for these drivers: 20 MiB .. 32 MiB, above virtio.c's 16-20 MiB. */
#define BENCH_BASE        (PROBE_DMA_BASE + 0x400000ULL)
#define BENCH_SIZE        0x0c00000ULL
#define LAT_SAMPLES_ADDR  (PROBE_DMA_BASE + 0xf00000ULL)   /* u64 x LAT_MAX, last MiB of the scratch */
#define LAT_MAX           4096

/* Sorts n samples in place and prints lat_p50, lat_p99, lat_max (TSC cycles). */
void lat_report(u64 *samples, u64 n);

int test_ata_verify(const struct boot_facts *f);
int test_ata_bench(const struct boot_facts *f);
int test_xenblk_verify(const struct boot_facts *f);
int test_xenblk_bench(const struct boot_facts *f);

#endif
