/* ata.c — ring-3 ATA PIO driver for the primary channel (ports from the TSS I/O bitmap), and
 * the ata-verify / ata-bench tests. Register sequences: ATA/ATAPI-6 §9.7 (PIO data-in),
 * §9.8 (PIO data-out), §8.15 IDENTIFY DEVICE, §8.27 READ SECTORS, §8.45 WRITE SECTORS,
 * §8.13 FLUSH CACHE. LBA28, 16-bit Data register (one `inw`/`outw` per word: every word is
 * an exit under a VMM, which is what this path is for). Polling; nIEN set. */
#include "ata.h"

#define ATA_DATA      0   /* §7.1 register offsets from the command block base */
#define ATA_ERROR     1
#define ATA_FEATURES  1
#define ATA_COUNT     2
#define ATA_LBA_LOW   3
#define ATA_LBA_MID   4
#define ATA_LBA_HIGH  5
#define ATA_DEVICE    6
#define ATA_STATUS    7
#define ATA_COMMAND   7
#define ST_ERR  0x01      /* §7.15.6 */
#define ST_DRQ  0x08
#define ST_DF   0x20
#define ST_DRDY 0x40
#define ST_BSY  0x80
#define DEV_LBA 0xe0      /* obsolete bits 7,5 + LBA (§7.7.6), device 0 */
#define CTL_NIEN 0x02     /* §7.8.6 */
#define CMD_READ_SECTORS  0x20
#define CMD_WRITE_SECTORS 0x30
#define CMD_FLUSH_CACHE   0xe7
#define CMD_IDENTIFY      0xec
#define SECTOR 512
#define MAX_COUNT 256     /* Sector Count 0 = 256 (§8.27.3.1) */
#define ATA_TSC_LIMIT 30000000000ULL   /* ~10 s: a dead device */

#define ATA_DEFAULT_BASE 0x1f0   /* PC/AT primary channel */
#define ATA_DEFAULT_CTL  0x3f6


/* ---- shared helpers ------------------------------------------------------ */

void lat_report(u64 *a, u64 n) {
    if (n == 0) return;
    /* Shell sort (Ciura gaps): n <= LAT_MAX, no allocation. */
    static const u64 gaps[] = { 701, 301, 132, 57, 23, 10, 4, 1 };
    for (u32 g = 0; g < ARRAY_LEN(gaps); g++)
        for (u64 i = gaps[g]; i < n; i++) {
            u64 t = a[i], j = i;
            for (; j >= gaps[g] && a[j - gaps[g]] > t; j -= gaps[g]) a[j] = a[j - gaps[g]];
            a[j] = t;
        }
    kv_dec("lat_p50", a[(n - 1) / 2]);
    kv_dec("lat_p99", a[(n * 99 + 99) / 100 - 1]);
    kv_dec("lat_max", a[n - 1]);
}

/* ---- the driver ------------------------------------------------------------ */
static u16 cmd_base = ATA_DEFAULT_BASE, ctl_base = ATA_DEFAULT_CTL;

/* Polls until BSY clears; returns the status, or 0xff00 on timeout. */
static u32 ata_wait(void) {
    u64 t0 = rdtsc();
    for (;;) {
        u8 st = inb(cmd_base + ATA_STATUS);
        if (!(st & ST_BSY)) return st;
        if (rdtsc() - t0 > ATA_TSC_LIMIT) return 0xff00;
        cpu_relax();
    }
}

static void ata_setup(u32 lba, u32 count) {
    outb(cmd_base + ATA_DEVICE, (u8)(DEV_LBA | ((lba >> 24) & 0x0f)));
    outb(cmd_base + ATA_FEATURES, 0);
    outb(cmd_base + ATA_COUNT, (u8)(count & 0xff));     /* 256 -> 0 */
    outb(cmd_base + ATA_LBA_LOW, (u8)lba);
    outb(cmd_base + ATA_LBA_MID, (u8)(lba >> 8));
    outb(cmd_base + ATA_LBA_HIGH, (u8)(lba >> 16));
}

/* READ/WRITE SECTORS of `count` (1..256) sectors; returns 0, or 0x100 | Error register. */
static u32 ata_rw(u32 lba, u32 count, u16 *buf, int write) {
    if (ata_wait() & 0xff00) return 0x1ff;
    ata_setup(lba, count);
    outb(cmd_base + ATA_COMMAND, write ? CMD_WRITE_SECTORS : CMD_READ_SECTORS);
    for (u32 s = 0; s < count; s++) {
        u32 st = ata_wait();
        if (st & (0xff00 | ST_ERR | ST_DF)) return 0x100 | inb(cmd_base + ATA_ERROR);
        if (!(st & ST_DRQ)) return 0x1fe;
        u16 *p = buf + s * (SECTOR / 2);
        if (write) for (u32 i = 0; i < SECTOR / 2; i++) outw(cmd_base + ATA_DATA, p[i]);
        else for (u32 i = 0; i < SECTOR / 2; i++) p[i] = inw(cmd_base + ATA_DATA);
    }
    u32 st = ata_wait();
    if (st & (0xff00 | ST_ERR | ST_DF)) return 0x100 | inb(cmd_base + ATA_ERROR);
    return 0;
}

static u32 ata_flush(void) {
    if (ata_wait() & 0xff00) return 0x1ff;
    outb(cmd_base + ATA_DEVICE, DEV_LBA);
    outb(cmd_base + ATA_COMMAND, CMD_FLUSH_CACHE);
    u32 st = ata_wait();
    return (st & (0xff00 | ST_ERR)) ? (0x100 | inb(cmd_base + ATA_ERROR)) : 0;
}

#define ident ((u16 *)(usize)BENCH_BASE)               /* 512 bytes of IDENTIFY data */
#define ATA_BUF (BENCH_BASE + 0x10000)            /* 128 KiB transfer buffer */

/* Finds the drive: typervisor_ata=<port>[:<irq>] or 0x1f0; IDENTIFY; returns capacity or 0 with *why. */
static u64 ata_open(const struct boot_facts *f, const char **why) {
    usize len = 0, i = 0; u64 port;
    const char *v = opt_get(f, "typervisor_ata", &len);
    if (v && parse_num(v, len, &i, &port, 0)) { cmd_base = (u16)port; ctl_base = (u16)(port + 0x206); }
    if (!phys_is_ram(f, BENCH_BASE, BENCH_SIZE)) { *why = "dma_not_ram"; return 0; }
    outb(cmd_base + ATA_DEVICE, DEV_LBA);
    u8 st = inb(cmd_base + ATA_STATUS);
    if (st == 0xff || st == 0x00) { *why = "no_ata"; return 0; }   /* floating bus / nothing selected */
    outb(ctl_base, CTL_NIEN);                                        /* we poll */
    outb(cmd_base + ATA_COMMAND, CMD_IDENTIFY);
    u32 s = ata_wait();
    if (s & (0xff00 | ST_ERR) || !(s & ST_DRQ)) { *why = "identify_failed"; return 0; }
    for (u32 k = 0; k < 256; k++) ident[k] = inw(cmd_base + ATA_DATA);
    if (!(ident[49] & (1 << 9))) { *why = "no_lba"; return 0; }     /* §8.15.7 word 49 bit 9 */
    return (u64)ident[60] | ((u64)ident[61] << 16);                  /* words 60-61 */
}

static void report_error(const char *test, const char *why) {
    line_begin(test); kv_str("error", why); kv_flag("ok=0"); line_end();
}

/* ---- ata-verify ------------------------------------------------------------ */
#define VERIFY_SECTORS 128u   /* 64 KiB per command, as blk-verify's requests */

int test_ata_verify(const struct boot_facts *f) {
    u64 bytes, seed;
    if (!opt_u64(f, "probe.blk.bytes", 0, &bytes) || !opt_u64(f, "probe.blk.seed", 0x5eed, &seed)) return 1;
    const char *why = 0;
    u64 cap = ata_open(f, &why);
    if (!cap) { report_error("ata-verify", why); return 1; }
    u64 disk = cap * SECTOR;
    if (bytes == 0 || bytes > disk) bytes = disk;
    bytes &= ~(u64)(SECTOR - 1);
    u64 writes = 0, reads = 0, mismatch = 0, first_bad = 0, bad_status = 0;
    u64 *buf = (u64 *)ATA_BUF;
    u64 t0 = rdtsc();
    for (u64 off = 0; off < bytes; off += VERIFY_SECTORS * SECTOR) {
        u32 n = (u32)((bytes - off) / SECTOR < VERIFY_SECTORS ? (bytes - off) / SECTOR : VERIFY_SECTORS);
        for (u32 i = 0; i < n * SECTOR / 8; i++) buf[i] = bench_pattern(off + 8ULL * i, seed);
        if (ata_rw((u32)(off / SECTOR), n, (u16 *)buf, 1)) bad_status++;
        writes++;
    }
    u32 flush = ata_flush() ? 1 : 0;
    for (u64 off = 0; off < bytes; off += VERIFY_SECTORS * SECTOR) {
        u32 n = (u32)((bytes - off) / SECTOR < VERIFY_SECTORS ? (bytes - off) / SECTOR : VERIFY_SECTORS);
        memset(buf, 0xa5, n * SECTOR);
        if (ata_rw((u32)(off / SECTOR), n, (u16 *)buf, 0)) bad_status++;
        reads++;
        for (u32 i = 0; i < n * SECTOR / 8; i++)
            if (buf[i] != bench_pattern(off + 8ULL * i, seed)) { if (!mismatch++) first_bad = off + 8ULL * i; }
    }
    u64 t1 = rdtsc();
    u32 oob = ata_rw((u32)cap, 1, (u16 *)buf, 0) ? 1 : 0;   /* IDNF past the end (§8.27.6) */
    /* the model string (IDENTIFY words 27-46, high byte first), trimmed */
    u8 model[41]; u32 mlen = 0;
    for (u32 k = 0; k < 20; k++) { model[2 * k] = (u8)(ident[27 + k] >> 8); model[2 * k + 1] = (u8)ident[27 + k]; }
    for (mlen = 40; mlen > 0 && model[mlen - 1] == ' '; mlen--) {}
    int ok = mismatch == 0 && bad_status == 0 && flush == 0 && oob == 1;
    line_begin("ata-verify");
    kv_hex("dev", cmd_base);
    kv_dec("capacity", cap);
    kv_dec("bytes", bytes);
    kv_hex("seed", seed);
    kv_dec("writes", writes);
    kv_dec("reads", reads);
    kv_dec("flush_status", flush);
    kv_dec("bad_status", bad_status);
    kv_dec("mismatch", mismatch);
    if (mismatch) kv_hex("first_bad", first_bad);
    kv_dec("oob_status", oob);
    kv_dec("id_status", 0);
    kv_hexbytes("id_hex", model, mlen);
    kv_dec("tsc", t1 - t0);
    kv_dec("ok", (u64)ok);
    line_end();
    return !ok;
}

/* ---- ata-bench ------------------------------------------------------------- */

int test_ata_bench(const struct boot_facts *f) {
    u64 bytes, n, seq_n;
    u64 warmup;
    if (!opt_u64(f, "probe.blk.bytes", 0, &bytes) || !opt_u64(f, "probe.blk.bench.n", 64, &n) ||
        !opt_u64(f, "probe.blk.seq.n", 2, &seq_n) || !opt_u64(f, "probe.blk.warmup", 8, &warmup)) return 1;
    const char *why = 0;
    u64 cap = ata_open(f, &why);
    if (!cap) { report_error("ata-bench", why); return 1; }
    if (bytes == 0 || bytes > cap * SECTOR) bytes = cap * SECTOR;
    u64 span = bytes / SECTOR;
    /* Untimed reads, then writes, first, as blk-bench does (virtio.c): the runs measure the steady state. */
    bench_seed(BENCH_WARMUP_SEED);
    for (int w = 0; w < 2; w++)
        for (u64 k = 0; k < warmup && span >= 8; k++) (void)ata_rw((u32)((bench_rand() % (span / 8)) * 8), 8, (u16 *)ATA_BUF, w);
    bench_seed(BENCH_SEED);
    /* No QD32: PIO ATA has one command in flight. Sequential uses the largest PIO command (256 sectors). */
    static const struct { const char *mode; int write; u32 sectors; int seq; } runs[] = {
        { "randread", 0, 8, 0 }, { "randwrite", 1, 8, 0 }, { "seqread", 0, MAX_COUNT, 1 }, { "seqwrite", 1, MAX_COUNT, 1 },
    };
    u64 *lat = (u64 *)LAT_SAMPLES_ADDR;
    int status = 0;
    for (u32 r = 0; r < ARRAY_LEN(runs); r++) {
        u64 ops = runs[r].seq ? seq_n : n, errors = 0, samples = 0;
        u64 slots = span / runs[r].sectors, seq = 0;
        u64 t0 = rdtsc();
        for (u64 k = 0; k < ops && slots; k++) {
            u64 lba = (runs[r].seq ? (seq++ % slots) : (bench_rand() % slots)) * runs[r].sectors;
            u64 s0 = rdtsc();
            if (ata_rw((u32)lba, runs[r].sectors, (u16 *)ATA_BUF, runs[r].write)) errors++;
            lat[samples++ % LAT_MAX] = rdtsc() - s0;   /* the last LAT_MAX: steady state */
        }
        u64 tsc = slots ? rdtsc() - t0 : 0;
        bench_line("ata-bench", runs[r].mode, 1, runs[r].sectors * SECTOR, ops, tsc, errors);
        lat_report(lat, samples < LAT_MAX ? samples : LAT_MAX);
        line_end();
        if (!tsc || errors) status = 1;
    }
    return status;
}
