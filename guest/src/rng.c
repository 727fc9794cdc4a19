/* rng.c — ring-3 virtio-rng driver (virtio 1.2 §5.4), polling; the `rng` test. */
#include "virtio.h"

#define DEVICE_ID_ENTROPY 4            /* virtio 1.2 §5.4.1 */
#define RNG_DMA_BASE  (PROBE_DMA_BASE + 0x400000ULL) /* 20 MiB, above virtio.c's blk area (16-20 MiB) */
#define RNG_DMA_SIZE  0x100000ULL      /* 1 MiB: rings, then the buffer */
#define RNG_BUF_OFF   0x10000ULL
#define RNG_BUF_MAX   0x80000ULL       /* probe.rng.bytes at most 512 KiB */
#define RNG_CHUNK     4096u            /* bytes asked per request */

static u32 hist[256];

int test_rng(const struct boot_facts *f) {
    u64 want;
    if (!opt_u64(f, "probe.rng.bytes", 4096, &want)) return 1;
    if (want == 0 || want > RNG_BUF_MAX) {
        line_begin("error"); kv_str("bad_option", "probe.rng.bytes"); line_end();
        return 1;
    }
    if (!phys_is_ram(f, RNG_DMA_BASE, RNG_DMA_SIZE)) { line_begin("rng"); kv_str("error", "dma_not_ram"); kv_flag("ok=0"); line_end(); return 1; }
    struct virtio_dev *d = virtio_find(f, DEVICE_ID_ENTROPY);
    if (!d) { line_begin("rng"); kv_str("error", "no_rng"); kv_flag("ok=0"); line_end(); return 1; }
    struct vq q;
    const char *err = vq_open(&q, d, 0, RNG_DMA_BASE);
    if (err) { line_begin("rng"); kv_str("error", err); kv_flag("ok=0"); line_end(); return 1; }
    u8 *buf = (u8 *)(usize)(RNG_DMA_BASE + RNG_BUF_OFF);
    memset(buf, 0, want);
    u64 got = 0, requests = 0, zero_len = 0, timeouts = 0, too_long = 0;
    u64 t0 = rdtsc();
    /* §5.4.6.1: the device may return fewer bytes than asked; keep asking for the rest. */
    while (got < want && requests < want + 64) {
        u32 ask = want - got < RNG_CHUNK ? (u32)(want - got) : RNG_CHUNK;
        struct vq_buf b = { RNG_DMA_BASE + RNG_BUF_OFF + got, ask, 1 };
        vq_add(&q, &b, 1);
        vq_kick(&q);
        requests++;
        u32 id, len;
        if (!vq_take(&q, &id, &len)) { timeouts++; break; }
        if (len == 0) zero_len++;
        if (len > ask) { too_long++; len = ask; }
        got += len;
    }
    u64 t1 = rdtsc();
    vq_close(&q);
    memset(hist, 0, sizeof(hist));
    for (u64 i = 0; i < got; i++) hist[buf[i]]++;
    u32 distinct = 0, minc = ~0u, maxc = 0;
    for (u32 v = 0; v < 256; v++) {
        if (hist[v]) distinct++;
        if (hist[v] < minc) minc = hist[v];
        if (hist[v] > maxc) maxc = hist[v];
    }
    int all_equal = got > 0 && maxc == got;
    /* Crude quality: 4 KiB or more of uniform bytes hits nearly every value and none much above its share (got/256). */
    int spread = got < 4096 ? distinct > 1 : (distinct >= 250 && maxc <= got / 32);
    int ok = got == want && !all_equal && spread && !timeouts && !too_long;
    line_begin("rng");
    kv_hex("dev", d->base);
    kv_dec("bytes", got);
    kv_dec("requests", requests);
    kv_dec("zero_len", zero_len);
    kv_dec("distinct", distinct);
    kv_dec("min_count", minc);
    kv_dec("max_count", maxc);
    kv_dec("all_equal", (u64)all_equal);
    kv_hex64("fnv1a64", fnv1a64(buf, got));
    kv_dec("tsc", t1 - t0);
    kv_dec("ok", (u64)ok);
    line_end();
    return !ok;
}
