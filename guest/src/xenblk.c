/* xenblk.c — ring-3 Xen blkfront for the typervisor xenblk device (src/dom0/blkif.ts), and the
 * xenblk-verify / xenblk-bench tests. Wire format: xen/include/public/io/ring.h (sring header,
 * RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, RING_FINAL_CHECK_FOR_RESPONSES), io/blkif.h (requests,
 * responses), grant_table.h (grant_entry_v1), io/xenbus.h (states). Polling: rsp_prod is watched
 * (ring 3 runs with IF=0); rsp_event is still kept current, as a real front end does.
 *
 * Device: typervisor_xenblk=<ring gpa>@<port>:<irq>:<sectors>. Ring page at <ring gpa>, grant
 * table page right after it; port+0 = event-channel doorbell, port+4 = xenbus state. */
#include "ata.h"

#define PAGE 4096
#define SECTOR 512
#define RING_SIZE 32          /* ring.h __RING_SIZE for blkif on one page: (4096-64)/112 -> 32 */
#define ENTRY 112             /* sizeof(union blkif_sring_entry) on x86-64 */
#define HDR 64                /* sring header (4 indices + pvt[4] + __pad[44]) */
#define MAX_SEGS 11           /* BLKIF_MAX_SEGMENTS_PER_REQUEST */
#define OP_READ 0
#define OP_WRITE 1
#define OP_FLUSH 3            /* BLKIF_OP_FLUSH_DISKCACHE */
#define RSP_OKAY 0
#define GTF_permit_access 1
#define GTF_readonly 4
#define XB_INITIALISED 3      /* xenbus.h */
#define XB_CONNECTED 4
#define XB_CLOSING 5
#define FIRST_GREF 8          /* Linux keeps refs 0-7 for the toolstack (GNTTAB_NR_RESERVED_ENTRIES) */
#define DOORBELL_NOTIFY 0
#define DOORBELL_XENBUS 4
#define XB_TSC_LIMIT 30000000000ULL

/* Data frames: one big 1 MiB buffer (256 frames) and 32 x 4 KiB slots, in the bench scratch. */
#define XB_BIG   (BENCH_BASE + 0x200000)   /* 2 MiB-aligned, 1 MiB */
#define XB_SMALL (BENCH_BASE + 0x300000)   /* 32 x 4 KiB */
#define BIG_FRAMES 256
#define SMALL_SLOTS 32

struct sring { u32 req_prod, req_event, rsp_prod, rsp_event; u8 pad[48]; };
struct seg { u32 gref; u8 first, last; u16 pad; };
struct req { u8 op; u8 nseg; u16 handle; u32 pad; u64 id; u64 sector; struct seg seg[MAX_SEGS]; };
struct rsp { u64 id; u8 op; u8 pad; short status; };
struct gnt { u16 flags; u16 domid; u32 frame; };
_Static_assert(sizeof(struct sring) == HDR, "ring.h header");
_Static_assert(sizeof(struct req) == ENTRY, "blkif_request");
_Static_assert(sizeof(struct rsp) == 16, "blkif_response");

static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void wmb(void) { __asm__ volatile("" ::: "memory"); }   /* x86 TSO: stores stay ordered */

static struct {
    volatile struct sring *s;
    volatile u8 *ring;
    volatile struct gnt *gnt;
    u16 port;
    u64 sectors;
    u32 req_prod_pvt, rsp_cons;
    u64 notifies;
} xb;

static void report_error(const char *test, const char *why) {
    line_begin(test); kv_str("error", why); kv_flag("ok=0"); line_end();
}

/* typervisor_xenblk=<ring>@<port>:<irq>:<sectors> */
static const char *xb_parse(const struct boot_facts *f, u64 *ring, u64 *port, u64 *sectors) {
    usize len = 0, i = 0; u64 irq;
    const char *v = opt_get(f, "typervisor_xenblk", &len);
    if (!v) return "no_xenblk";
    if (!parse_num(v, len, &i, ring, 0) || i >= len || v[i++] != '@') return "bad_xenblk";
    if (!parse_num(v, len, &i, port, 0) || i >= len || v[i++] != ':') return "bad_xenblk";
    if (!parse_num(v, len, &i, &irq, 0) || i >= len || v[i++] != ':') return "bad_xenblk";
    if (!parse_num(v, len, &i, sectors, 0) || i != len) return "bad_xenblk";
    return 0;
}

static const char *xb_open(const struct boot_facts *f) {
    u64 ring, port, sectors;
    const char *err = xb_parse(f, &ring, &port, &sectors);
    if (err) return err;
    if ((ring & (PAGE - 1)) || !phys_is_ram(f, ring, 2 * PAGE)) return "ring_not_ram";
    if (!phys_is_ram(f, BENCH_BASE, BENCH_SIZE)) return "dma_not_ram";
    xb.s = (volatile struct sring *)phys(ring);
    xb.ring = (volatile u8 *)phys(ring + HDR);
    xb.gnt = (volatile struct gnt *)phys(ring + PAGE);
    xb.port = (u16)port;
    xb.sectors = sectors;
    /* SHARED_RING_INIT + FRONT_RING_INIT (ring.h) */
    memset((void *)xb.s, 0, PAGE);
    memset((void *)xb.gnt, 0, PAGE);
    xb.s->req_event = 1;
    xb.s->rsp_event = 1;
    xb.req_prod_pvt = 0;
    xb.rsp_cons = 0;
    /* Grant every data frame to Dom0 (domid 0): gnttab_grant_foreign_access, v1 entries. */
    for (u32 k = 0; k < BIG_FRAMES + SMALL_SLOTS; k++) {
        u64 a = k < BIG_FRAMES ? XB_BIG + (u64)k * PAGE : XB_SMALL + (u64)(k - BIG_FRAMES) * PAGE;
        volatile struct gnt *g = &xb.gnt[FIRST_GREF + k];
        g->frame = (u32)(a / PAGE);
        g->domid = 0;
        wmb();
        g->flags = GTF_permit_access;   /* flags last: the entry becomes valid */
    }
    mb();
    outl(xb.port + DOORBELL_XENBUS, XB_INITIALISED);
    /* Each look at the xenbus state is a port read, an exit in a VM: while the back end starts,
     * look less and less often (from ~1k cycles up to ~2M, about 1 ms), as a front end sleeping on
     * xenstore would, so the connection costs tens of exits however long Dom0 takes to come up. */
    u64 t0 = rdtsc(), gap = 1000;
    while ((inl(xb.port + DOORBELL_XENBUS) & 0xff) != XB_CONNECTED) {
        if (rdtsc() - t0 > XB_TSC_LIMIT) return "backend_not_connected";
        for (u64 t = rdtsc(); rdtsc() - t < gap; ) cpu_relax();
        if (gap < 2000000) gap *= 2;
    }
    return 0;
}

static void xb_close(void) { outl(xb.port + DOORBELL_XENBUS, XB_CLOSING); }

/* grant ref of the data frame holding guest-physical a */
static u32 gref_of(u64 a) {
    if (a >= XB_SMALL) return FIRST_GREF + BIG_FRAMES + (u32)((a - XB_SMALL) / PAGE);
    return FIRST_GREF + (u32)((a - XB_BIG) / PAGE);
}

/* Queues one request of up to 11 pages (page-aligned buf, len a multiple of 512). */
static void xb_queue(u8 op, u64 id, u64 sector, u64 buf, u32 len) {
    volatile struct req *r = (volatile struct req *)(xb.ring + (xb.req_prod_pvt & (RING_SIZE - 1)) * ENTRY);
    r->op = op; r->handle = 0; r->id = id; r->sector = sector;
    u32 n = 0;
    for (u32 off = 0; off < len && n < MAX_SEGS; off += PAGE, n++) {
        u32 chunk = len - off < PAGE ? len - off : PAGE;
        r->seg[n].gref = gref_of(buf + off);
        r->seg[n].first = 0;
        r->seg[n].last = (u8)(chunk / SECTOR - 1);
    }
    r->nseg = (u8)n;
    xb.req_prod_pvt++;
}

/* RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, then the doorbell if the back end asked. */
static void xb_push(void) {
    u32 old = xb.s->req_prod, now = xb.req_prod_pvt;
    wmb();
    xb.s->req_prod = now;
    mb();
    if ((u32)(now - xb.s->req_event) < (u32)(now - old)) { outl(xb.port + DOORBELL_NOTIFY, 0); xb.notifies++; }
}

/* Reaps whatever responses are there; calls back per response. Returns how many. */
static u32 xb_reap(void (*each)(u64 id, short status)) {
    u32 got = 0;
    for (;;) {
        u32 rp = xb.s->rsp_prod;
        __asm__ volatile("" ::: "memory");
        while (xb.rsp_cons != rp) {
            volatile struct rsp *p = (volatile struct rsp *)(xb.ring + (xb.rsp_cons & (RING_SIZE - 1)) * ENTRY);
            each(p->id, p->status);
            xb.rsp_cons++; got++;
        }
        /* RING_FINAL_CHECK_FOR_RESPONSES */
        xb.s->rsp_event = xb.rsp_cons + 1;
        mb();
        if (xb.s->rsp_prod == xb.rsp_cons) return got;
    }
}

static u64 bad_status_count;
static void count_bad(u64 id, short status) { (void)id; if (status != RSP_OKAY) bad_status_count++; }

/* Waits until `n` responses arrived; 0 on timeout. */
static int xb_wait(u32 n, void (*each)(u64, short)) {
    u64 t0 = rdtsc();
    while (n) {
        u32 got = xb_reap(each);
        n = got >= n ? 0 : n - got;
        if (!n) break;
        if (rdtsc() - t0 > XB_TSC_LIMIT) return 0;
        cpu_relax();
    }
    return 1;
}

/* One synchronous transfer of any length from the big buffer (split into <=11-page requests). */
static u32 xb_do(u8 op, u64 sector, u64 buf, u32 len) {
    bad_status_count = 0;
    u32 reqs = 0;
    if (op == OP_FLUSH) { xb_queue(OP_FLUSH, 0, 0, 0, 0); reqs = 1; }
    for (u32 off = 0; off < len; off += MAX_SEGS * PAGE, reqs++) {
        u32 chunk = len - off < MAX_SEGS * PAGE ? len - off : MAX_SEGS * PAGE;
        xb_queue(op, reqs, sector + off / SECTOR, buf + off, chunk);
    }
    xb_push();
    if (!xb_wait(reqs, count_bad)) return 0x100;
    return bad_status_count ? 1 : 0;
}

/* ---- xenblk-verify --------------------------------------------------------- */
#define VERIFY_CHUNK 0x10000u

int test_xenblk_verify(const struct boot_facts *f) {
    u64 bytes, seed;
    if (!opt_u64(f, "probe.blk.bytes", 0, &bytes) || !opt_u64(f, "probe.blk.seed", 0x5eed, &seed)) return 1;
    const char *err = xb_open(f);
    if (err) { report_error("xenblk-verify", err); return 1; }
    u64 disk = xb.sectors * SECTOR;
    if (bytes == 0 || bytes > disk) bytes = disk;
    bytes &= ~(u64)(SECTOR - 1);
    u64 writes = 0, reads = 0, mismatch = 0, first_bad = 0, bad = 0;
    u64 *buf = (u64 *)XB_BIG;
    u64 t0 = rdtsc();
    for (u64 off = 0; off < bytes; off += VERIFY_CHUNK) {
        u32 n = (u32)(bytes - off < VERIFY_CHUNK ? bytes - off : VERIFY_CHUNK);
        for (u32 i = 0; i < n / 8; i++) buf[i] = bench_pattern(off + 8ULL * i, seed);
        if (xb_do(OP_WRITE, off / SECTOR, XB_BIG, n)) bad++;
        writes++;
    }
    u32 flush = xb_do(OP_FLUSH, 0, 0, 0);
    for (u64 off = 0; off < bytes; off += VERIFY_CHUNK) {
        u32 n = (u32)(bytes - off < VERIFY_CHUNK ? bytes - off : VERIFY_CHUNK);
        memset(buf, 0xa5, n);
        if (xb_do(OP_READ, off / SECTOR, XB_BIG, n)) bad++;
        reads++;
        for (u32 i = 0; i < n / 8; i++)
            if (buf[i] != bench_pattern(off + 8ULL * i, seed)) { if (!mismatch++) first_bad = off + 8ULL * i; }
    }
    u64 t1 = rdtsc();
    u32 oob = xb_do(OP_READ, xb.sectors, XB_BIG, SECTOR);   /* past the end: BLKIF_RSP_ERROR */
    xb_close();
    int ok = mismatch == 0 && bad == 0 && flush == 0 && oob == 1;
    line_begin("xenblk-verify");
    kv_hex("dev", xb.port);
    kv_dec("capacity", xb.sectors);
    kv_dec("bytes", bytes);
    kv_hex("seed", seed);
    kv_dec("writes", writes);
    kv_dec("reads", reads);
    kv_dec("flush_status", flush);
    kv_dec("bad_status", bad);
    kv_dec("mismatch", mismatch);
    if (mismatch) kv_hex("first_bad", first_bad);
    kv_dec("oob_status", oob);
    kv_dec("id_status", 2);           /* blkif has no GET_ID: "unsupported" in virtio-blk's terms */
    kv_hexbytes("id_hex", 0, 0);
    kv_dec("notifies", xb.notifies);
    kv_dec("tsc", t1 - t0);
    kv_dec("ok", (u64)ok);
    line_end();
    return !ok;
}

/* ---- xenblk-bench ---------------------------------------------------------- */
static u64 submit_tsc[RING_SIZE];
static u64 *lat; static u64 nlat, done_ops, bench_errors;
static void bench_done(u64 id, short status) {
    if (status != RSP_OKAY) bench_errors++;
    lat[nlat++ % LAT_MAX] = rdtsc() - submit_tsc[id % RING_SIZE];   /* the last LAT_MAX: steady state */
    done_ops++;
}

/* `ops` 4 KiB requests at `qd` in flight; TSC cycles, 0 on timeout. */
static u64 bench_rand_ops(u8 op, u32 qd, u64 ops, u64 span_pages) {
    u64 issued = 0; done_ops = 0;
    u64 t0 = rdtsc();
    while (done_ops < ops) {
        while (issued - done_ops < qd && issued < ops) {
            u32 slot = (u32)(issued % RING_SIZE);
            submit_tsc[slot] = rdtsc();
            xb_queue(op, slot, (bench_rand() % span_pages) * (PAGE / SECTOR), XB_SMALL + (u64)(slot % SMALL_SLOTS) * PAGE, PAGE);
            issued++;
        }
        xb_push();
        u64 t = rdtsc();
        while (!xb_reap(bench_done)) { if (rdtsc() - t > XB_TSC_LIMIT) return 0; cpu_relax(); }
    }
    return rdtsc() - t0;
}

int test_xenblk_bench(const struct boot_facts *f) {
    u64 bytes, n, seq_n;
    u64 warmup;
    if (!opt_u64(f, "probe.blk.bytes", 0, &bytes) || !opt_u64(f, "probe.blk.bench.n", 256, &n) ||
        !opt_u64(f, "probe.blk.seq.n", 8, &seq_n) || !opt_u64(f, "probe.blk.warmup", 2000, &warmup)) return 1;
    const char *err = xb_open(f);
    if (err) { report_error("xenblk-bench", err); return 1; }
    if (bytes == 0 || bytes > xb.sectors * SECTOR) bytes = xb.sectors * SECTOR;
    u64 span_pages = bytes / PAGE;
    lat = (u64 *)LAT_SAMPLES_ADDR;
    /* Untimed reads, then writes, first, as blk-bench does (virtio.c): the runs measure the steady state. */
    bench_seed(BENCH_WARMUP_SEED);
    if (warmup && span_pages) bench_rand_ops(OP_READ, 1, warmup, span_pages);
    if (warmup && span_pages) bench_rand_ops(OP_WRITE, 1, warmup, span_pages);
    bench_seed(BENCH_SEED);
    static const struct { const char *mode; u8 op; u32 qd; u32 len; } runs[] = {
        { "randread", OP_READ, 1, PAGE },   { "randwrite", OP_WRITE, 1, PAGE },
        { "randread", OP_READ, 32, PAGE },  { "randwrite", OP_WRITE, 32, PAGE },
        { "seqread", OP_READ, 1, 1 << 20 }, { "seqwrite", OP_WRITE, 1, 1 << 20 },
    };
    int status = 0;
    for (u32 r = 0; r < ARRAY_LEN(runs); r++) {
        u64 ops = runs[r].len > PAGE ? seq_n : n, tsc = 0;
        nlat = 0; bench_errors = 0;
        if (runs[r].len == PAGE) {
            if (span_pages) tsc = bench_rand_ops(runs[r].op, runs[r].qd, ops, span_pages);
        } else {
            u64 slots = bytes / runs[r].len, t0 = rdtsc();
            for (u64 k = 0; k < ops && slots; k++) {
                u64 s0 = rdtsc();
                if (xb_do(runs[r].op, (k % slots) * (runs[r].len / SECTOR), XB_BIG, runs[r].len)) bench_errors++;
                lat[nlat++ % LAT_MAX] = rdtsc() - s0;
            }
            tsc = slots ? rdtsc() - t0 : 0;
        }
        bench_line("xenblk-bench", runs[r].mode, runs[r].qd, runs[r].len, ops, tsc, bench_errors);
        lat_report(lat, nlat < LAT_MAX ? nlat : LAT_MAX);
        line_end();
        if (!tsc || bench_errors) status = 1;
    }
    xb_close();
    return status;
}
