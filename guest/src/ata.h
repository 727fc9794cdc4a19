/* ata.h — the probe's ATA PIO driver tests (ata.c), the Xen blkfront tests (xenblk.c), and the
 * few helpers they share (options, RAM check, latency percentiles). */
#ifndef PROBE_ATA_H
#define PROBE_ATA_H

#include "probe.h"

/* Guest-physical scratch for these drivers: 20 MiB .. 32 MiB, above virtio.c's 16-20 MiB. */
#define BENCH_BASE        0x1400000ULL
#define BENCH_SIZE        0x0c00000ULL
#define LAT_SAMPLES_ADDR  0x1f00000ULL   /* u64 x LAT_MAX, last MiB of the scratch */
#define LAT_MAX           4096

int probe_opt_u64(const struct boot_facts *f, const char *key, u64 dflt, u64 *out);
/* Finds "key=" and returns its value (not NUL-terminated) and length, or NULL. */
const char *probe_opt_get(const struct boot_facts *f, const char *key, usize *len);
/* Parses decimal or 0x-hex at s[*i..n); K/M/G suffixes when `suffix`. */
int probe_parse_num(const char *s, usize n, usize *i, u64 *out, int suffix);
int ram_covers(const struct boot_facts *f, u64 base, u64 size);
/* Sorts n samples in place and prints lat_p50, lat_p99, lat_max (TSC cycles). */
void lat_report(u64 *samples, u64 n);
u64 bench_pattern(u64 byte_off, u64 seed);

int test_ata_verify(const struct boot_facts *f);
int test_ata_bench(const struct boot_facts *f);
int test_xenblk_verify(const struct boot_facts *f);
int test_xenblk_bench(const struct boot_facts *f);

#endif
