/* virtio.c — ring-3 virtio-mmio transport and virtio-blk driver, polling mode (virtio.h). */
#include "virtio.h"
#include "ata.h"   /* lat_report, LAT_SAMPLES_ADDR */

/* ---- virtio 1.2 numbers ------------------------------------------------- */
#define MMIO_MAGIC_VALUE      0x000  /* §4.2.2 */
#define MMIO_VERSION          0x004
#define MMIO_DEVICE_ID        0x008
#define MMIO_DEVICE_FEATURES  0x010
#define MMIO_DEVICE_FEATURES_SEL 0x014
#define MMIO_DRIVER_FEATURES  0x020
#define MMIO_DRIVER_FEATURES_SEL 0x024
#define MMIO_QUEUE_SEL        0x030
#define MMIO_QUEUE_NUM_MAX    0x034
#define MMIO_QUEUE_NUM        0x038
#define MMIO_QUEUE_READY      0x044
#define MMIO_QUEUE_NOTIFY     0x050
#define MMIO_INTERRUPT_STATUS 0x060
#define MMIO_INTERRUPT_ACK    0x064
#define MMIO_STATUS           0x070
#define MMIO_QUEUE_DESC_LOW   0x080
#define MMIO_QUEUE_DESC_HIGH  0x084
#define MMIO_QUEUE_DRIVER_LOW 0x090
#define MMIO_QUEUE_DRIVER_HIGH 0x094
#define MMIO_QUEUE_DEVICE_LOW 0x0a0
#define MMIO_QUEUE_DEVICE_HIGH 0x0a4
#define MMIO_CONFIG           0x100
#define MMIO_MAGIC            0x74726976u  /* "virt" */

#define ST_ACKNOWLEDGE 1       /* §2.1 */
#define ST_DRIVER      2
#define ST_DRIVER_OK   4
#define ST_FEATURES_OK 8
#define ST_NEEDS_RESET 64
#define ST_FAILED      128

#define F_VERSION_1    32      /* §6 */
#define BLK_F_SIZE_MAX 1       /* §5.2.3 */
#define BLK_F_SEG_MAX  2
#define BLK_F_RO       5
#define BLK_F_BLK_SIZE 6
#define BLK_F_FLUSH    9

#define BLK_T_IN     0         /* §5.2.6 */
#define BLK_T_OUT    1
#define BLK_T_FLUSH  4
#define BLK_T_GET_ID 8
#define BLK_S_OK     0
#define BLK_S_IOERR  1
#define BLK_S_UNSUPP 2
#define BLK_STATUS_NONE 0xff   /* written before submitting: "no answer yet" */

#define BLK_CFG_CAPACITY 0     /* §5.2.4 */
#define BLK_CFG_SIZE_MAX 8
#define BLK_CFG_SEG_MAX  12
#define SECTOR 512

#define AVAIL_F_NO_INTERRUPT 1 /* §2.7.7: the driver does not want interrupts (it polls) */
#define USED_F_NO_NOTIFY     1 /* §2.7.8: the device does not want kicks (it polls) */
#define DESC_F_NEXT  1         /* §2.7.5 */
#define DESC_F_WRITE 2
#define DEVICE_ID_BLOCK 2

/* ---- driver memory -------------------------------------------------------
 * Rings and buffers live in guest RAM at a fixed physical range, checked
 * against the memory map, identity-mapped (and so device-visible as is). */
#define DMA_BASE   PROBE_DMA_BASE /* 16 MiB: above the image, below any initrd */
#define DMA_SIZE   0x400000ULL    /* 4 MiB */
#define QSIZE      128            /* our queue size (min with QueueNumMax) */
#define DESC_OFF   0x0            /* 16 * 128 */
#define AVAIL_OFF  0x800          /* 6 + 2 * 128 */
#define USED_OFF   0x1000         /* 6 + 8 * 128, 4-aligned */
#define HDR_OFF    0x2000         /* per-slot request headers and status bytes */
#define SLOT_STRIDE 32
#define MAX_SLOTS  32             /* QD32 */
#define SMALL_OFF  0x10000        /* MAX_SLOTS x 4 KiB data buffers */
#define BIG_OFF    0x100000       /* 2 MiB for large transfers */
#define BIG_SIZE   0x200000
#define ID_OFF     0x3000
#define AREA2_OFF  0x300000       /* blk-hostile's second device: its own rings, headers and buffer */

struct blk_hdr { u32 type; u32 reserved; u64 sector; };

struct blk {
    struct virtio_dev *dev;
    u64 area;              /* offset of this device's rings and request headers in the DMA range */
    u32 qsize;
    u64 capacity;          /* sectors */
    u64 negotiated;
    u32 seg_bytes;         /* largest data segment we build */
    u32 seg_max;
    volatile struct vdesc *desc;
    volatile u16 *avail;   /* flags, idx, ring[qsize], used_event */
    volatile u16 *used16;  /* flags, idx */
    volatile u32 *used32;  /* ring elements start at used16 + 2 (byte 4) */
    u16 avail_idx, used_seen;
    u32 next_desc;
    u32 irq_vector;        /* interrupt mode: the vector the device's GSI is routed to; 0 = polling */
    u64 irq_seen;          /* vector_count[irq_vector] last acknowledged */
    u64 irq_base;          /* vector_count[irq_vector] at set-up */
    u64 interrupts;        /* interrupts delivered since set-up (counted at teardown) */
};

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
/* A full barrier: the avail.idx store is visible before the used.flags load that follows it
 * (§2.7.10; x86 may otherwise perform the load first). Unprivileged, so ring 3 may use it. */
static inline void full_barrier(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline u8 *dma(u64 off) { return (u8 *)(DMA_BASE + off); }

#ifdef PROBE_HOSTED
/* The host library's register accesses go to the VMM's transport (hosted.c). */
u32 hosted_mmio_r32(u64 addr);
void hosted_mmio_w32(u64 addr, u32 v);
static u32 mmio_r32(const struct virtio_dev *d, u32 off) { return hosted_mmio_r32(d->base + off); }
static void mmio_w32(const struct virtio_dev *d, u32 off, u32 v) { hosted_mmio_w32(d->base + off, v); }
#else
static u32 mmio_r32(const struct virtio_dev *d, u32 off) { return *(volatile u32 *)(d->base + off); }
static void mmio_w32(const struct virtio_dev *d, u32 off, u32 v) {
    /* a plain 4-byte mov, which any instruction emulator decodes (§4.2.2.2: 32-bit accesses) */
    __asm__ volatile("movl %k0, (%1)" : : "r"(v), "r"(d->base + off) : "memory");
}
#endif

/* ---- command line ------------------------------------------------------- */
static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Parses decimal or 0x-hex at s[*i..n); memparse suffixes K/M/G when `suffix`. */
int parse_num(const char *s, usize n, usize *i, u64 *out, int suffix) {
    u64 v = 0; usize start = *i;
    if (*i + 1 < n && s[*i] == '0' && (s[*i + 1] == 'x' || s[*i + 1] == 'X')) {
        *i += 2; start = *i;
        for (; *i < n; (*i)++) {
            char c = s[*i]; u32 dgt;
            if (c >= '0' && c <= '9') dgt = (u32)(c - '0');
            else if (c >= 'a' && c <= 'f') dgt = (u32)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') dgt = (u32)(c - 'A' + 10);
            else break;
            v = v * 16 + dgt;
        }
    } else {
        for (; *i < n && s[*i] >= '0' && s[*i] <= '9'; (*i)++) v = v * 10 + (u64)(s[*i] - '0');
    }
    if (*i == start) return 0;
    if (suffix && *i < n) {
        char c = s[*i];
        if (c == 'K' || c == 'k') { v <<= 10; (*i)++; }
        else if (c == 'M' || c == 'm') { v <<= 20; (*i)++; }
        else if (c == 'G' || c == 'g') { v <<= 30; (*i)++; }
    }
    *out = v;
    return 1;
}

/* "virtio_mmio.device=<size>@<addr>:<irq>" (Linux virtio_mmio.c vm_cmdline_set). */
u32 virtio_scan(const char *s, usize n, struct virtio_dev *out, u32 max) {
    static const char key[] = "virtio_mmio.device=";
    const usize klen = sizeof(key) - 1;
    u32 count = 0;
    for (usize i = 0; i < n;) {
        while (i < n && is_space(s[i])) i++;
        usize start = i;
        while (i < n && !is_space(s[i])) i++;
        if (i - start <= klen || memcmp(s + start, key, klen) != 0) continue;
        usize j = start + klen;
        u64 size, addr, irq;
        if (!parse_num(s, i, &j, &size, 1) || j >= i || s[j++] != '@') continue;
        if (!parse_num(s, i, &j, &addr, 0) || j >= i || s[j++] != ':') continue;
        if (!parse_num(s, i, &j, &irq, 0)) continue;
        if (count < max && phys_readable(addr, size) && size >= MMIO_CONFIG) {
            struct virtio_dev *d = &out[count++];
            memset(d, 0, sizeof(*d));
            d->base = addr; d->size = size; d->irq = (u32)irq;
            if (mmio_r32(d, MMIO_MAGIC_VALUE) != MMIO_MAGIC) continue;
            d->version = mmio_r32(d, MMIO_VERSION);
            d->device_id = mmio_r32(d, MMIO_DEVICE_ID);
            mmio_w32(d, MMIO_DEVICE_FEATURES_SEL, 1);
            u64 hi = mmio_r32(d, MMIO_DEVICE_FEATURES);
            mmio_w32(d, MMIO_DEVICE_FEATURES_SEL, 0);
            d->features = (hi << 32) | mmio_r32(d, MMIO_DEVICE_FEATURES);
        }
    }
    return count;
}

/* Last value of key= on the command line. */
const char *opt_get(const struct boot_facts *f, const char *key, usize *len) {
    const char *s = f->cmdline; usize n = f->cmdline ? f->cmdline_len : 0, klen = strnlen_(key, 64);
    const char *found = 0;
    for (usize i = 0; i < n;) {
        while (i < n && is_space(s[i])) i++;
        usize start = i;
        while (i < n && !is_space(s[i])) i++;
        if (i - start > klen && memcmp(s + start, key, klen) == 0 && s[start + klen] == '=') {
            found = s + start + klen + 1; *len = i - start - klen - 1;
        }
    }
    return found;
}

/* A numeric option (K/M/G suffixes allowed); 0 and a PROBE error line when malformed. */
int opt_u64(const struct boot_facts *f, const char *key, u64 dflt, u64 *out) {
    usize len = 0, i = 0;
    const char *v = opt_get(f, key, &len);
    *out = dflt;
    if (!v) return 1;
    if (parse_num(v, len, &i, out, 1) && i == len) return 1;
    line_begin("error"); kv_str("bad_option", key); line_end();
    return 0;
}

/* ---- blk set-up: virtio 1.2 §3.1.1 ---------------------------------------- */
static struct virtio_dev devs[VIRTIO_MAX_DEVICES];
static u32 ndevs;
static struct blk blk_state;

static u32 find_devices(const struct boot_facts *f) {
    ndevs = virtio_scan(f->cmdline ? f->cmdline : "", f->cmdline ? f->cmdline_len : 0, devs, VIRTIO_MAX_DEVICES);
    return ndevs;
}

int phys_is_ram(const struct boot_facts *f, u64 base, u64 size) {
    for (u32 i = 0; i < f->mem_count; i++)
        if (f->mem[i].type == 1 && f->mem[i].addr <= base && f->mem[i].addr + f->mem[i].size >= base + size) return 1;
    return 0;
}

static int dma_is_ram(const struct boot_facts *f) { return phys_is_ram(f, DMA_BASE, DMA_SIZE); }

static void report_error(const char *test, const char *why) {
    line_begin(test); kv_str("error", why); kv_flag("ok=0"); line_end();
}

/* Brings device `d` up with one queue, its rings at DMA offset `area`; returns an error word or NULL. */
static const char *blk_init(struct blk *b, struct virtio_dev *d, u64 area) {
    memset(b, 0, sizeof(*b));
    b->dev = d;
    b->area = area;
    if (d->version != 2) return "legacy_version";   /* §4.2.4: we drive modern devices only */
    if (d->device_id != DEVICE_ID_BLOCK) return "not_blk";
    mmio_w32(d, MMIO_STATUS, 0);
    mmio_w32(d, MMIO_STATUS, ST_ACKNOWLEDGE);
    mmio_w32(d, MMIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER);
    u64 want = (1ULL << F_VERSION_1) | (1ULL << BLK_F_FLUSH) | (1ULL << BLK_F_RO) | (1ULL << BLK_F_BLK_SIZE) |
               (1ULL << BLK_F_SEG_MAX) | (1ULL << BLK_F_SIZE_MAX);
    b->negotiated = d->features & want;
    if (!(b->negotiated & (1ULL << F_VERSION_1))) return "no_version_1";
    mmio_w32(d, MMIO_DRIVER_FEATURES_SEL, 0);
    mmio_w32(d, MMIO_DRIVER_FEATURES, (u32)b->negotiated);
    mmio_w32(d, MMIO_DRIVER_FEATURES_SEL, 1);
    mmio_w32(d, MMIO_DRIVER_FEATURES, (u32)(b->negotiated >> 32));
    mmio_w32(d, MMIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK);
    if (!(mmio_r32(d, MMIO_STATUS) & ST_FEATURES_OK)) return "features_refused";
    /* config space: 32-bit reads (§4.2.2.2 allows any width there; 4 keeps one access path) */
    b->capacity = mmio_r32(d, MMIO_CONFIG + BLK_CFG_CAPACITY) | ((u64)mmio_r32(d, MMIO_CONFIG + BLK_CFG_CAPACITY + 4) << 32);
    b->seg_bytes = 0x10000;
    if (b->negotiated & (1ULL << BLK_F_SIZE_MAX)) {
        u32 sm = mmio_r32(d, MMIO_CONFIG + BLK_CFG_SIZE_MAX);
        if (sm >= 4096 && sm < b->seg_bytes) b->seg_bytes = sm & ~(u32)(SECTOR - 1);
    }
    b->seg_max = 16;
    if (b->negotiated & (1ULL << BLK_F_SEG_MAX)) {
        u32 sm = mmio_r32(d, MMIO_CONFIG + BLK_CFG_SEG_MAX);
        if (sm && sm < b->seg_max) b->seg_max = sm;
    }
    mmio_w32(d, MMIO_QUEUE_SEL, 0);
    u32 max = mmio_r32(d, MMIO_QUEUE_NUM_MAX);
    if (max == 0) return "no_queue";
    if (mmio_r32(d, MMIO_QUEUE_READY)) return "queue_busy";
    b->qsize = QSIZE;
    while (b->qsize > max) b->qsize >>= 1;
    memset(dma(area), 0, HDR_OFF);
    b->desc = (volatile struct vdesc *)dma(area + DESC_OFF);
    b->avail = (volatile u16 *)dma(area + AVAIL_OFF);
    /* Polling (the default): no interrupts wanted, so none to acknowledge — as a polling driver
     * disables its callbacks. Interrupt mode clears the flag (irq_setup). */
    b->avail[0] = AVAIL_F_NO_INTERRUPT;
    b->used16 = (volatile u16 *)dma(area + USED_OFF);
    b->used32 = (volatile u32 *)dma(area + USED_OFF + 4);
    mmio_w32(d, MMIO_QUEUE_NUM, b->qsize);
    u64 ring = DMA_BASE + area;
    mmio_w32(d, MMIO_QUEUE_DESC_LOW, (u32)(ring + DESC_OFF));
    mmio_w32(d, MMIO_QUEUE_DESC_HIGH, (u32)((ring + DESC_OFF) >> 32));
    mmio_w32(d, MMIO_QUEUE_DRIVER_LOW, (u32)(ring + AVAIL_OFF));
    mmio_w32(d, MMIO_QUEUE_DRIVER_HIGH, (u32)((ring + AVAIL_OFF) >> 32));
    mmio_w32(d, MMIO_QUEUE_DEVICE_LOW, (u32)(ring + USED_OFF));
    mmio_w32(d, MMIO_QUEUE_DEVICE_HIGH, (u32)((ring + USED_OFF) >> 32));
    mmio_w32(d, MMIO_QUEUE_READY, 1);
    mmio_w32(d, MMIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    if (mmio_r32(d, MMIO_STATUS) & (ST_NEEDS_RESET | ST_FAILED)) return "device_failed";
    return 0;
}

#define POLL_TSC_LIMIT 60000000000ULL           /* ~20 s even at 3 GHz: a dead device, not a slow one */

/* ---- interrupt mode ---------------------------------------------------------
 * The device's interrupt line (its GSI on the command line) is routed through the IOAPIC to
 * vector IRQ_VECTOR_BASE + gsi on this CPU's LAPIC; ring 3 then runs with IF=1 (SYS_IRQ), the
 * interrupt lands in boot.S's counting stub (vector_count), and the driver waits for the count to
 * move instead of polling the used ring, then EOIs. Registers: Intel SDM Vol.3 §10.4-10.9 (LAPIC:
 * ID 0x20, EOI 0xb0, SVR 0xf0), 82093AA datasheet §3.2 (IOAPIC: IOREGSEL 0x00, IOWIN 0x10,
 * redirection entry n at 0x10 + 2n). The legacy 8259 PICs are masked (OCW1) so nothing reaches
 * the CPU through LINT0. Not in the hosted build (no CPU interrupts there). */
#define LAPIC_BASE      0xfee00000ULL
#define LAPIC_ID        0x20
#define LAPIC_EOI       0xb0
#define LAPIC_SVR       0xf0
#define LAPIC_SVR_ENABLE 0x100
#define SPURIOUS_VECTOR 0xff
#define IOAPIC_BASE     0xfec00000ULL
#define IOAPIC_REGSEL   0x00
#define IOAPIC_WIN      0x10
#define IOAPIC_REDIR(n) (0x10 + 2 * (n))
#define IOAPIC_MASKED   0x10000   /* redirection entry bit 16 */
#define IOAPIC_PINS     24
#define IRQ_VECTOR_BASE 0x40
#define PIC1_DATA 0x21            /* 8259A IMR (OCW1) */
#define PIC2_DATA 0xa1

#ifndef PROBE_HOSTED
extern volatile u64 vector_count[256];   /* boot.S: per vector, all CPUs */
static volatile u32 *lapic(u32 reg) { return (volatile u32 *)phys(LAPIC_BASE + reg); }
static void ioapic_write(u32 reg, u32 v) {
    *(volatile u32 *)phys(IOAPIC_BASE + IOAPIC_REGSEL) = reg;
    *(volatile u32 *)phys(IOAPIC_BASE + IOAPIC_WIN) = v;
}
#endif

/* Routes b's interrupt to this CPU and turns interrupts on in ring 3; 0 when it cannot. */
static int irq_setup(struct blk *b) {
#ifdef PROBE_HOSTED
    (void)b;
    return 0;
#else
    u32 gsi = b->dev->irq;
    if (gsi >= IOAPIC_PINS) return 0;
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
    *lapic(LAPIC_SVR) = LAPIC_SVR_ENABLE | SPURIOUS_VECTOR;
    u32 apic_id = *lapic(LAPIC_ID) >> 24;
    b->irq_vector = IRQ_VECTOR_BASE + gsi;
    b->irq_seen = b->irq_base = vector_count[b->irq_vector];
    b->avail[0] = 0;                                                /* interrupts wanted (§2.7.7) */
    ioapic_write(IOAPIC_REDIR(gsi) + 1, apic_id << 24);            /* destination: this LAPIC */
    ioapic_write(IOAPIC_REDIR(gsi), b->irq_vector);                 /* fixed, physical, edge, high, unmasked */
    sys_irq(1);
    return 1;
#endif
}

static void irq_teardown(struct blk *b) {
#ifndef PROBE_HOSTED
    if (!b->irq_vector) return;
    sys_irq(0);
    ioapic_write(IOAPIC_REDIR(b->dev->irq), IOAPIC_MASKED);
    if (vector_count[b->irq_vector] != b->irq_seen) *lapic(LAPIC_EOI) = 0;
    b->interrupts = vector_count[b->irq_vector] - b->irq_base;
    b->irq_vector = 0;
#else
    (void)b;
#endif
}

/* Interrupt mode: sleeps (spins on the count, not on the ring) until the next interrupt; EOI. */
static void irq_wait(struct blk *b, u64 t0) {
#ifndef PROBE_HOSTED
    while (vector_count[b->irq_vector] == b->irq_seen) {
        if (rdtsc() - t0 > POLL_TSC_LIMIT) return;
        cpu_relax();
    }
    b->irq_seen = vector_count[b->irq_vector];
    *lapic(LAPIC_EOI) = 0;
#else
    (void)b; (void)t0;
#endif
}

static void blk_shutdown(struct blk *b) { irq_teardown(b); mmio_w32(b->dev, MMIO_STATUS, 0); }

/* ---- requests ------------------------------------------------------------ */
static volatile struct blk_hdr *slot_hdr(const struct blk *b, u32 slot) { return (volatile struct blk_hdr *)dma(b->area + HDR_OFF + slot * SLOT_STRIDE); }
static volatile u8 *slot_status(const struct blk *b, u32 slot) { return dma(b->area + HDR_OFF + slot * SLOT_STRIDE + 16); }

static u32 alloc_desc(struct blk *b) { u32 i = b->next_desc; b->next_desc = (b->next_desc + 1) % b->qsize; return i; }

/* Queues one request (not yet notified): header, data split in seg_bytes pieces, status. */
static void blk_queue(struct blk *b, u32 slot, u32 type, u64 sector, u64 buf, u32 len) {
    volatile struct blk_hdr *h = slot_hdr(b, slot);
    h->type = type; h->reserved = 0; h->sector = sector;
    *slot_status(b, slot) = BLK_STATUS_NONE;
    u32 head = alloc_desc(b), cur = head;
    b->desc[cur].addr = (u64)(usize)h; b->desc[cur].len = 16; b->desc[cur].flags = DESC_F_NEXT;
    u16 dflags = (type == BLK_T_IN || type == BLK_T_GET_ID) ? DESC_F_WRITE : 0;
    for (u32 off = 0; off < len;) {
        u32 n = len - off < b->seg_bytes ? len - off : b->seg_bytes;
        u32 nx = alloc_desc(b);
        b->desc[cur].next = (u16)nx;
        cur = nx;
        b->desc[cur].addr = buf + off; b->desc[cur].len = n; b->desc[cur].flags = dflags | DESC_F_NEXT;
        off += n;
    }
    u32 st = alloc_desc(b);
    b->desc[cur].next = (u16)st;
    b->desc[st].addr = (u64)(usize)slot_status(b, slot); b->desc[st].len = 1; b->desc[st].flags = DESC_F_WRITE;
    b->avail[2 + (b->avail_idx % b->qsize)] = (u16)head;
    barrier();                                  /* ring entry before idx (§2.7.13) */
    b->avail_idx++;
    b->avail[1] = b->avail_idx;
}

/* Kicks unless the device asked for none (§2.7.10: without EVENT_IDX, used.flags NO_NOTIFY means
 * the driver SHOULD NOT notify; a polling device picks the buffer up by itself). */
static void blk_kick(struct blk *b) {
    full_barrier();
    if (b->used16[0] & USED_F_NO_NOTIFY) return;
    mmio_w32(b->dev, MMIO_QUEUE_NOTIFY, 0);
}


/* Waits (polling used->idx) until `n` more requests completed; 0 on timeout. */
static int blk_wait(struct blk *b, u32 n) {
    u16 target = (u16)(b->used_seen + n);
    u64 t0 = rdtsc();
    while (b->used16[1] != target) {
        if (rdtsc() - t0 > POLL_TSC_LIMIT) return 0;
        if (b->irq_vector) irq_wait(b, t0);   /* the interrupt says when to look again */
        else cpu_relax();
    }
    barrier();
    b->used_seen = target;
    if (b->irq_vector) {
        /* interrupt mode: acknowledge what the device raised (§4.2.2 InterruptStatus/ACK) */
        u32 isr = mmio_r32(b->dev, MMIO_INTERRUPT_STATUS);
        if (isr) mmio_w32(b->dev, MMIO_INTERRUPT_ACK, isr);
    }
    return 1;
}

/* One synchronous request; returns the status byte, or 0x100 on timeout. */
static u32 blk_do(struct blk *b, u32 type, u64 sector, u64 buf, u32 len) {
    b->next_desc = 0;
    blk_queue(b, 0, type, sector, buf, len);
    blk_kick(b);
    if (!blk_wait(b, 1)) return 0x100;
    return *slot_status(b, 0);
}

/* ---- shared by the block tests (blk-*, ata-*, xenblk-*: virtio.h) ---------------- */
u64 bench_pattern(u64 byte_off, u64 seed) { return (byte_off * 0x9E3779B97F4A7C15ULL) ^ seed; }

static u64 rng_state;
void bench_seed(u64 seed) { rng_state = seed; }
u64 bench_rand(void) { u64 x = rng_state; x ^= x << 13; x ^= x >> 7; x ^= x << 17; return rng_state = x; }

void bench_line(const char *test, const char *mode, u32 qd, u64 bs, u64 ops, u64 tsc, u64 errors) {
    line_begin(test);
    kv_str("mode", mode);
    kv_dec("qd", qd);
    kv_dec("bs", bs);
    kv_dec("ops", tsc ? ops : 0);
    kv_dec("bytes", tsc ? ops * bs : 0);
    kv_dec("tsc", tsc);
    kv_dec("errors", errors);
    kv_dec("ok", tsc != 0 && errors == 0);
}

/* First blk device with (want_ro) or without the RO feature; -1 when none. */
static int pick_blk(int want_ro) {
    for (u32 i = 0; i < ndevs; i++)
        if (devs[i].device_id == DEVICE_ID_BLOCK && !!(devs[i].features & (1ULL << BLK_F_RO)) == want_ro) return (int)i;
    return -1;
}

/* Shared prologue: find the device, check DMA memory, init. */
static struct blk *blk_open(const struct boot_facts *f, const char *test, int want_ro) {
    find_devices(f);
    if (!dma_is_ram(f)) { report_error(test, "dma_not_ram"); return 0; }
    int i = pick_blk(want_ro);
    if (i < 0) { report_error(test, want_ro ? "no_ro_blk" : "no_rw_blk"); return 0; }
    const char *err = blk_init(&blk_state, &devs[i], 0);
    if (err) { report_error(test, err); return 0; }
    return &blk_state;
}

/* ---- blk-verify: write a pattern, flush, read it back ---------------------- */
#define VERIFY_CHUNK 0x10000u

/* `bytes` of the disk to use: all of it when 0 or more than it has, in whole sectors. */
static u64 disk_span(const struct blk *b, u64 bytes) {
    u64 disk = b->capacity * SECTOR;
    if (bytes == 0 || bytes > disk) bytes = disk;
    return bytes & ~(u64)(SECTOR - 1);
}

/* Writes bench_pattern() over [0, bytes) in VERIFY_CHUNK requests; returns how many were not answered OK. */
static u64 write_pattern(struct blk *b, u64 bytes, u64 seed, u64 *writes) {
    u64 bad = 0;
    u64 *buf = (u64 *)dma(BIG_OFF);
    for (u64 off = 0; off < bytes; off += VERIFY_CHUNK) {
        u32 n = (u32)(bytes - off < VERIFY_CHUNK ? bytes - off : VERIFY_CHUNK);
        for (u32 i = 0; i < n / 8; i++) buf[i] = bench_pattern(off + 8ULL * i, seed);
        if (blk_do(b, BLK_T_OUT, off / SECTOR, (u64)(usize)buf, n) != BLK_S_OK) bad++;
        (*writes)++;
    }
    return bad;
}

int test_blk_verify(const struct boot_facts *f) {
    u64 bytes, seed, irq;
    if (!opt_u64(f, "probe.blk.bytes", 0, &bytes) || !opt_u64(f, "probe.blk.seed", 0x5eed, &seed) ||
        !opt_u64(f, "probe.blk.irq", 0, &irq)) return 1;
    struct blk *b = blk_open(f, "blk-verify", 0);
    if (!b) return 1;
    /* probe.blk.irq=1: completions are waited for by interrupt (hosted builds have none: polling). */
    int irq_mode = irq && irq_setup(b);
    bytes = disk_span(b, bytes);
    u64 writes = 0, reads = 0, mismatch = 0, first_bad = 0;
    u64 t0 = rdtsc();
    u64 *buf = (u64 *)dma(BIG_OFF);
    u64 bad_status = write_pattern(b, bytes, seed, &writes);
    u32 flush = blk_do(b, BLK_T_FLUSH, 0, 0, 0);
    for (u64 off = 0; off < bytes; off += VERIFY_CHUNK) {
        u32 n = (u32)(bytes - off < VERIFY_CHUNK ? bytes - off : VERIFY_CHUNK);
        memset(buf, 0xa5, n);
        if (blk_do(b, BLK_T_IN, off / SECTOR, (u64)(usize)buf, n) != BLK_S_OK) bad_status++;
        reads++;
        for (u32 i = 0; i < n / 8; i++)
            if (buf[i] != bench_pattern(off + 8ULL * i, seed)) { if (!mismatch++) first_bad = off + 8ULL * i; }
    }
    u64 t1 = rdtsc();
    /* GET_ID (§5.2.6): up to 20 bytes, NUL-padded */
    u8 *id = dma(ID_OFF);
    memset(id, 0, 21);
    u32 id_status = blk_do(b, BLK_T_GET_ID, 0, (u64)(usize)id, 20);
    /* beyond the end of the disk: must be IOERR (§5.2.6.1 sector bounds) */
    u32 oob = blk_do(b, BLK_T_IN, b->capacity, (u64)(usize)buf, SECTOR);
    blk_shutdown(b);               /* interrupt mode ends here: b->interrupts is final */
    u64 interrupts = b->interrupts;
    int ok = mismatch == 0 && bad_status == 0 && flush == BLK_S_OK && oob == BLK_S_IOERR && (!irq_mode || interrupts > 0);
    line_begin("blk-verify");
    kv_hex("dev", b->dev->base);
    kv_dec("capacity", b->capacity);
    kv_dec("bytes", bytes);
    kv_hex("seed", seed);
    kv_dec("writes", writes);
    kv_dec("reads", reads);
    kv_dec("flush_status", flush);
    kv_dec("bad_status", bad_status);
    kv_dec("mismatch", mismatch);
    if (mismatch) kv_hex("first_bad", first_bad);
    kv_dec("oob_status", oob);
    kv_dec("id_status", id_status);
    kv_hexbytes("id_hex", id, id_status == BLK_S_OK ? strnlen_((const char *)id, 20) : 0);
    kv_dec("tsc", t1 - t0);
    kv_dec("irq", (u64)irq_mode);
    kv_dec("interrupts", interrupts);
    kv_dec("ok", (u64)ok);
    line_end();
    return !ok;
}

/* ---- blk-ro: a read-only drive refuses writes ------------------------------ */
int test_blk_ro(const struct boot_facts *f) {
    struct blk *b = blk_open(f, "blk-ro", 1);
    if (!b) return 1;
    u8 *buf = dma(BIG_OFF);
    u32 rd = blk_do(b, BLK_T_IN, 0, (u64)(usize)buf, SECTOR);
    u64 before = fnv1a64(buf, SECTOR);
    for (u32 i = 0; i < SECTOR; i++) buf[i] = (u8)(0xc3 ^ i);
    u32 wr = blk_do(b, BLK_T_OUT, 0, (u64)(usize)buf, SECTOR);
    memset(buf, 0, SECTOR);
    u32 rd2 = blk_do(b, BLK_T_IN, 0, (u64)(usize)buf, SECTOR);
    u64 after = fnv1a64(buf, SECTOR);
    u32 fl = blk_do(b, BLK_T_FLUSH, 0, 0, 0);
    blk_shutdown(b);
    int ok = rd == BLK_S_OK && wr == BLK_S_IOERR && rd2 == BLK_S_OK && before == after;
    line_begin("blk-ro");
    kv_hex("dev", b->dev->base);
    kv_dec("ro", 1);
    kv_dec("read_status", rd);
    kv_dec("write_status", wr);
    kv_dec("flush_status", fl);
    kv_hex64("sector0_fnv1a64", after);
    kv_dec("unchanged", before == after);
    kv_dec("ok", (u64)ok);
    line_end();
    return !ok;
}

/* ---- blk-durable: write a pattern and flush, report, then (hold=1) wait to be killed ---------- */
int test_blk_durable(const struct boot_facts *f) {
    u64 bytes, seed, hold;
    if (!opt_u64(f, "probe.blk.bytes", 1 << 20, &bytes) || !opt_u64(f, "probe.blk.seed", 0x5eed, &seed) ||
        !opt_u64(f, "probe.blk.durable.hold", 0, &hold)) return 1;
    struct blk *b = blk_open(f, "blk-durable", 0);
    if (!b) return 1;
    bytes = disk_span(b, bytes);
    u64 writes = 0;
    u64 bad_status = write_pattern(b, bytes, seed, &writes);
    u32 flush = blk_do(b, BLK_T_FLUSH, 0, 0, 0);
    int ok = bad_status == 0 && flush == BLK_S_OK;
    /* Reported once the FLUSH completed: from here on the host may kill the VMM (the durability test). */
    line_begin("blk-durable");
    kv_hex("dev", b->dev->base);
    kv_dec("bytes", bytes);
    kv_hex("seed", seed);
    kv_dec("writes", writes);
    kv_dec("bad_status", bad_status);
    kv_dec("flush_status", flush);
    kv_dec("ok", (u64)ok);
    line_end();
#ifndef PROBE_HOSTED
    if (hold && ok) for (;;) sys_park();   /* the VMM stays up until the host kills it */
#endif
    blk_shutdown(b);
    return !ok;
}

/* ---- blk-hostile: bad descriptors of each kind (virtio 1.2 §2.7) on one device; each is answered or
 * the device asks for a reset (DEVICE_NEEDS_RESET), never a hang; a second, well-formed device keeps
 * working after every case, and the first works again once reset. ------------------------------ */
enum hostile_case { H_OOB_ADDR, H_HUGE_LEN, H_ZERO_LEN, H_LOOP, H_NEXT_OOB, H_WO_HEADER, H_RO_STATUS, H_BAD_HEAD, H_AVAIL_JUMP, H_COUNT };
static const char *const HOSTILE_NAMES[H_COUNT] = {
    "oob_addr", "huge_len", "zero_len", "loop", "next_oob", "wo_header", "ro_status", "bad_head", "avail_jump",
};
#define HOSTILE_WAIT_TSC 6000000000ULL          /* ~2 s at 3 GHz */
static struct blk good_state;

/* Queues one IN request of 512 bytes at sector 0 with one defect, kicks, and waits for a used entry
 * ("answered"), DEVICE_NEEDS_RESET ("reset") or nothing ("timeout"). */
static const char *hostile_run(struct blk *b, enum hostile_case c, u32 *used_len, u32 *status) {
    volatile struct blk_hdr *h = slot_hdr(b, 0);
    h->type = BLK_T_IN; h->reserved = 0; h->sector = 0;
    *slot_status(b, 0) = BLK_STATUS_NONE;
    volatile struct vdesc *d = b->desc;
    d[0].addr = (u64)(usize)h;                   d[0].len = 16;  d[0].flags = DESC_F_NEXT;                d[0].next = 1;
    d[1].addr = DMA_BASE + BIG_OFF;              d[1].len = 512; d[1].flags = DESC_F_WRITE | DESC_F_NEXT; d[1].next = 2;
    d[2].addr = (u64)(usize)slot_status(b, 0);   d[2].len = 1;   d[2].flags = DESC_F_WRITE;               d[2].next = 0;
    u16 head = 0, step = 1;
    switch (c) {
    case H_OOB_ADDR:   d[1].addr = 0xfffffffff000ULL; break;          /* not guest RAM */
    case H_HUGE_LEN:   d[1].len = 0xffffffffu; break;                 /* runs far past RAM */
    case H_ZERO_LEN:   d[1].len = 0; break;                           /* an empty data buffer */
    case H_LOOP:       d[2].flags |= DESC_F_NEXT; d[2].next = 0; break; /* 0 -> 1 -> 2 -> 0 ... */
    case H_NEXT_OOB:   d[1].next = 0xffff; break;                     /* next past the table */
    case H_WO_HEADER:  d[0].flags |= DESC_F_WRITE; break;             /* the header must be device-readable */
    case H_RO_STATUS:  d[2].flags = 0; break;                         /* the status byte must be device-writable */
    case H_BAD_HEAD:   head = (u16)(b->qsize + 5); break;             /* avail names a descriptor past the table */
    case H_AVAIL_JUMP: step = (u16)(b->qsize + 1); break;             /* avail.idx runs more than a queue ahead */
    default: break;
    }
    b->avail[2 + (b->avail_idx % b->qsize)] = head;
    barrier();
    b->avail_idx = (u16)(b->avail_idx + step);
    b->avail[1] = b->avail_idx;
    blk_kick(b);
    *used_len = 0;
    u64 t0 = rdtsc();
    for (;;) {
        if (b->used16[1] != b->used_seen) {
            barrier();
            *used_len = b->used32[2 * (b->used_seen % b->qsize) + 1];
            b->used_seen++;
            *status = *slot_status(b, 0);
            return "answered";
        }
        if (mmio_r32(b->dev, MMIO_STATUS) & ST_NEEDS_RESET) return "reset";
        if (rdtsc() - t0 > HOSTILE_WAIT_TSC) return "timeout";
        cpu_relax();
    }
}

/* One well-formed write and read-back of sector `sector` on `b`; 1 when the data came back. */
static int blk_roundtrip(struct blk *b, u64 sector, u64 seed) {
    u64 *buf = (u64 *)dma(b->area + SMALL_OFF);
    for (u32 i = 0; i < SECTOR / 8; i++) buf[i] = bench_pattern(8ULL * i, seed);
    if (blk_do(b, BLK_T_OUT, sector, (u64)(usize)buf, SECTOR) != BLK_S_OK) return 0;
    memset(buf, 0, SECTOR);
    if (blk_do(b, BLK_T_IN, sector, (u64)(usize)buf, SECTOR) != BLK_S_OK) return 0;
    for (u32 i = 0; i < SECTOR / 8; i++) if (buf[i] != bench_pattern(8ULL * i, seed)) return 0;
    return 1;
}

int test_blk_hostile(const struct boot_facts *f) {
    find_devices(f);
    if (!dma_is_ram(f)) { report_error("blk-hostile", "dma_not_ram"); return 1; }
    int first = -1, second = -1;
    for (u32 i = 0; i < ndevs; i++) {
        if (devs[i].device_id != DEVICE_ID_BLOCK || (devs[i].features & (1ULL << BLK_F_RO))) continue;
        if (first < 0) first = (int)i; else if (second < 0) second = (int)i;
    }
    if (second < 0) { report_error("blk-hostile", "needs_two_rw_blk"); return 1; }
    const char *err = blk_init(&good_state, &devs[second], AREA2_OFF);
    if (err) { report_error("blk-hostile", err); return 1; }
    u64 timeouts = 0, good_ok = 0;
    for (u32 c = 0; c < H_COUNT; c++) {
        err = blk_init(&blk_state, &devs[first], 0);    /* a fresh device for each case (reset first) */
        if (err) { report_error("blk-hostile", err); return 1; }
        u32 used_len = 0, status = BLK_STATUS_NONE;
        const char *outcome = hostile_run(&blk_state, (enum hostile_case)c, &used_len, &status);
        if (outcome[0] == 't') timeouts++;
        int good = blk_roundtrip(&good_state, 8 + c, 0x600d + c);
        good_ok += (u64)good;
        line_begin("blk-hostile-case");
        kv_str("case", HOSTILE_NAMES[c]);
        kv_str("outcome", outcome);
        kv_dec("used_len", used_len);
        kv_hex("status", status);
        kv_dec("good_device_ok", (u64)good);
        line_end();
    }
    err = blk_init(&blk_state, &devs[first], 0);
    int recovered = !err && blk_roundtrip(&blk_state, 1, 0xfeed);
    blk_shutdown(&blk_state);
    blk_shutdown(&good_state);
    int ok = timeouts == 0 && good_ok == H_COUNT && recovered;
    line_begin("blk-hostile");
    kv_hex("dev", devs[first].base);
    kv_hex("good_dev", devs[second].base);
    kv_dec("cases", H_COUNT);
    kv_dec("timeouts", timeouts);
    kv_dec("good_ok", good_ok);
    kv_dec("recovered", (u64)recovered);
    kv_dec("ok", (u64)ok);
    line_end();
    return !ok;
}

/* ---- blk-bench: 4 KiB random at QD1 and QD32, 1 MiB sequential ------------- */

/* Runs `ops` requests of `len` bytes, `qd` in flight; returns TSC cycles, or 0 on error. */
/* Per-request latency samples: submit TSC by head descriptor, and the last LAT_MAX completions'
 * submit-to-completion cycles (a ring, so a long run reports its steady state, not its start). */
static u64 head_tsc[QSIZE];
static u64 *lat, nlat;

static u64 bench_run(struct blk *b, u32 type, u32 qd, u64 ops, u32 len, u64 span_sectors, int sequential, u64 *errors) {
    u32 per = 2 + (len + b->seg_bytes - 1) / b->seg_bytes;   /* descriptors per request */
    if (qd * per > b->qsize) qd = b->qsize / per;
    if (qd == 0 || qd > MAX_SLOTS) qd = qd ? MAX_SLOTS : 1;
    u64 issued = 0, done = 0, seq = 0;
    u32 lens = len / SECTOR;
    u64 slots = span_sectors / lens;
    if (slots == 0) return 0;
    b->next_desc = 0;
    u64 t0 = rdtsc();
    while (done < ops) {
        /* fill the queue to qd, then one kick for the batch */
        u32 batch = 0;
        while (issued - done < qd && issued < ops) {
            u32 slot = (u32)(issued % qd);
            u64 sector = sequential ? (seq++ % slots) * lens : (bench_rand() % slots) * lens;
            u64 buf = len > 4096 ? DMA_BASE + BIG_OFF : DMA_BASE + SMALL_OFF + (u64)slot * 4096;
            head_tsc[b->next_desc] = rdtsc();   /* blk_queue takes its head from next_desc */
            blk_queue(b, slot, type, sector, buf, len);
            issued++; batch++;
        }
        if (batch) blk_kick(b);
        /* reap at least one completion; the used ring tells how many */
        u64 t = rdtsc();
        while (b->used16[1] == b->used_seen) { if (rdtsc() - t > POLL_TSC_LIMIT) return 0; cpu_relax(); }
        u16 now = b->used16[1];
        while (b->used_seen != now) {
            u32 id = b->used32[2 * (b->used_seen % b->qsize)];
            if (id < b->qsize) lat[nlat++ % LAT_MAX] = rdtsc() - head_tsc[id];
            b->used_seen++;
            done++;
        }
    }
    u64 t1 = rdtsc();
    for (u32 s = 0; s < qd; s++) if (*slot_status(b, s) != BLK_S_OK) (*errors)++;
    return t1 - t0;
}

int test_blk_bench(const struct boot_facts *f) {
    u64 bytes, n, seq_n;
    u64 warmup;
    if (!opt_u64(f, "probe.blk.bytes", 0, &bytes) || !opt_u64(f, "probe.blk.bench.n", 256, &n) ||
        !opt_u64(f, "probe.blk.seq.n", 8, &seq_n) || !opt_u64(f, "probe.blk.warmup", 2000, &warmup)) return 1;
    struct blk *b = blk_open(f, "blk-bench", 0);
    if (!b) return 1;
    u64 span = disk_span(b, bytes) / SECTOR;
    lat = (u64 *)LAT_SAMPLES_ADDR;
    /* Untimed 4 KiB reads, then as many writes, first: the back end's first requests of each kind (a
     * JIT compiling that path, cold caches) are not the steady state the runs measure. */
    u64 warm_errors = 0;
    bench_seed(BENCH_WARMUP_SEED);
    if (warmup) bench_run(b, BLK_T_IN, 1, warmup, 4096, span, 0, &warm_errors);
    if (warmup) bench_run(b, BLK_T_OUT, 1, warmup, 4096, span, 0, &warm_errors);
    bench_seed(BENCH_SEED);
    static const struct { const char *mode; u32 type; u32 qd; u32 len; int seq; } runs[] = {
        { "randread", BLK_T_IN, 1, 4096, 0 },   { "randwrite", BLK_T_OUT, 1, 4096, 0 },
        { "randread", BLK_T_IN, 32, 4096, 0 },  { "randwrite", BLK_T_OUT, 32, 4096, 0 },
        { "seqread", BLK_T_IN, 1, 1 << 20, 1 }, { "seqwrite", BLK_T_OUT, 1, 1 << 20, 1 },
    };
    int status = 0;
    for (u32 r = 0; r < ARRAY_LEN(runs); r++) {
        u64 ops = runs[r].seq ? seq_n : n, errors = 0;
        nlat = 0;
        u64 tsc = bench_run(b, runs[r].type, runs[r].qd, ops, runs[r].len, span, runs[r].seq, &errors);
        bench_line("blk-bench", runs[r].mode, runs[r].qd, runs[r].len, ops, tsc, errors);
        lat_report(lat, nlat < LAT_MAX ? nlat : LAT_MAX);
        line_end();
        if (!tsc || errors) status = 1;
    }
    blk_shutdown(b);
    return status;
}

/* ---- one-queue devices (rng.c, nsm.c): virtio 1.2 §3.1.1 init, §2.7 split ring ---- */
#define VQ_DESC_OFF  0x0
#define VQ_AVAIL_OFF 0x1000
#define VQ_USED_OFF  0x2000
#define VQ_QSIZE     64

struct virtio_dev *virtio_find(const struct boot_facts *f, u32 device_id) {
    find_devices(f);
    for (u32 i = 0; i < ndevs; i++)
        if (devs[i].device_id == device_id) return &devs[i];
    return 0;
}

const char *vq_open(struct vq *q, struct virtio_dev *d, u64 want, u64 ring) {
    memset(q, 0, sizeof(*q));
    q->dev = d;
    if (d->version != 2) return "legacy_version";   /* §4.2.4: modern devices only */
    mmio_w32(d, MMIO_STATUS, 0);
    mmio_w32(d, MMIO_STATUS, ST_ACKNOWLEDGE);
    mmio_w32(d, MMIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER);
    u64 neg = d->features & (want | (1ULL << F_VERSION_1));
    if (!(neg & (1ULL << F_VERSION_1))) return "no_version_1";
    mmio_w32(d, MMIO_DRIVER_FEATURES_SEL, 0);
    mmio_w32(d, MMIO_DRIVER_FEATURES, (u32)neg);
    mmio_w32(d, MMIO_DRIVER_FEATURES_SEL, 1);
    mmio_w32(d, MMIO_DRIVER_FEATURES, (u32)(neg >> 32));
    mmio_w32(d, MMIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK);
    if (!(mmio_r32(d, MMIO_STATUS) & ST_FEATURES_OK)) return "features_refused";
    mmio_w32(d, MMIO_QUEUE_SEL, 0);
    u32 max = mmio_r32(d, MMIO_QUEUE_NUM_MAX);
    if (max == 0) return "no_queue";
    if (mmio_r32(d, MMIO_QUEUE_READY)) return "queue_busy";
    q->qsize = VQ_QSIZE;
    while (q->qsize > max) q->qsize >>= 1;
    memset((void *)(usize)ring, 0, 0x3000);
    /* polling: no interrupts wanted (§2.7.7), none to acknowledge */
    ((volatile u16 *)(usize)(ring + VQ_AVAIL_OFF))[0] = AVAIL_F_NO_INTERRUPT;
    q->desc = (volatile struct vdesc *)(usize)(ring + VQ_DESC_OFF);
    q->avail = (volatile u16 *)(usize)(ring + VQ_AVAIL_OFF);
    q->used16 = (volatile u16 *)(usize)(ring + VQ_USED_OFF);
    q->used32 = (volatile u32 *)(usize)(ring + VQ_USED_OFF + 4);
    mmio_w32(d, MMIO_QUEUE_NUM, q->qsize);
    mmio_w32(d, MMIO_QUEUE_DESC_LOW, (u32)(ring + VQ_DESC_OFF));
    mmio_w32(d, MMIO_QUEUE_DESC_HIGH, (u32)((ring + VQ_DESC_OFF) >> 32));
    mmio_w32(d, MMIO_QUEUE_DRIVER_LOW, (u32)(ring + VQ_AVAIL_OFF));
    mmio_w32(d, MMIO_QUEUE_DRIVER_HIGH, (u32)((ring + VQ_AVAIL_OFF) >> 32));
    mmio_w32(d, MMIO_QUEUE_DEVICE_LOW, (u32)(ring + VQ_USED_OFF));
    mmio_w32(d, MMIO_QUEUE_DEVICE_HIGH, (u32)((ring + VQ_USED_OFF) >> 32));
    mmio_w32(d, MMIO_QUEUE_READY, 1);
    mmio_w32(d, MMIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
    if (mmio_r32(d, MMIO_STATUS) & (ST_NEEDS_RESET | ST_FAILED)) return "device_failed";
    return 0;
}

u32 vq_add(struct vq *q, const struct vq_buf *b, u32 n) {
    u32 head = q->next_desc, cur = head;
    for (u32 i = 0; i < n; i++) {
        cur = (head + i) % q->qsize;
        q->desc[cur].addr = b[i].addr;
        q->desc[cur].len = b[i].len;
        q->desc[cur].flags = (u16)((b[i].write ? DESC_F_WRITE : 0) | (i + 1 < n ? DESC_F_NEXT : 0));
        q->desc[cur].next = (u16)((cur + 1) % q->qsize);
    }
    q->next_desc = (head + n) % q->qsize;
    q->avail[2 + (q->avail_idx % q->qsize)] = (u16)head;
    barrier();                                  /* ring entry before idx (§2.7.13) */
    q->avail_idx++;
    q->avail[1] = q->avail_idx;
    return head;
}

void vq_kick(struct vq *q) {
    full_barrier();
    if (q->used16[0] & USED_F_NO_NOTIFY) return;   /* as blk_kick */
    mmio_w32(q->dev, MMIO_QUEUE_NOTIFY, 0);
}

int vq_take(struct vq *q, u32 *id, u32 *len) {
    u64 t0 = rdtsc();
    while (q->used16[1] == q->used_seen) {
        if (rdtsc() - t0 > POLL_TSC_LIMIT) return 0;
        cpu_relax();
    }
    barrier();
    u32 slot = q->used_seen % q->qsize;
    *id = q->used32[2 * slot];
    *len = q->used32[2 * slot + 1];
    q->used_seen++;
    return 1;
}

void vq_close(struct vq *q) { mmio_w32(q->dev, MMIO_STATUS, 0); }
