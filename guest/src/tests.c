/* tests.c — the probe tests selected by probe.run= (see README.md). */
#include "probe.h"

/* ---- boot -------------------------------------------------------------- */
int test_boot(const struct boot_facts *f) {
    int status = 0;
    line_begin("boot");
    kv_str("entry", entry_name(f->entry));
    kv_hex("loader_type", f->loader_type);
    kv_hex("cmdline_addr", f->cmdline_addr);
    kv_dec("cmdline_len", f->cmdline_len);
    kv_hexbytes("cmdline_hex", (const u8 *)f->cmdline, f->cmdline ? f->cmdline_len : 0);
    kv_hex("proto_version", f->proto_version);
    kv_hex("info_addr", f->info_addr);
    line_end();

    for (u32 i = 0; i < f->mem_count; i++) {
        line_begin("e820");
        kv_dec("i", i);
        kv_hex("addr", f->mem[i].addr);
        kv_hex("size", f->mem[i].size);
        kv_dec("type", f->mem[i].type);
        line_end();
    }
    line_begin("e820");
    kv_dec("count", f->mem_count);
    line_end();

    line_begin("initrd");
    kv_hex("addr", f->initrd_addr);
    kv_dec("size", f->initrd_size);
    if (f->initrd_size == 0 || phys_readable(f->initrd_addr, f->initrd_size)) {
        kv_hex64("fnv1a64", fnv1a64((const u8 *)f->initrd_addr, f->initrd_size));
    } else {
        kv_str("error", "not_identity_mapped");
        status = 1;
    }
    line_end();
    return status;
}

/* ---- demo -------------------------------------------------------------- */
int test_demo(const struct boot_facts *f) {
    /* Banner: plain text lines, none starts with "PROBE". */
    text_line("+--------------------------------------------------+");
    text_line("|  Typervisor probe guest                          |");
    text_line("|  ring 0: a few dozen instructions, then iretq    |");
    text_line("|  ring 3: everything else, reporting PROBE lines  |");
    text_line("+--------------------------------------------------+");
    int status = test_boot(f);
    line_begin("demo");
    kv_flag(status ? "failed" : "ok");
    line_end();
    /* "PROBE demo ok" exactly when all went well */
    return status;
}

/* ---- hold -------------------------------------------------------------- */
/* Reports, then spins in ring 3 (pause, no exits) for good: the VM stays up until the host pauses or
 * stops it. It does not park (cli; hlt): on a PVM host those #GP in the guest's ring 0. Never
 * returns, so tests named after it in probe.run do not run. (bench:density boots many, pausing each.) */
int test_hold(void) {
    line_begin("hold");
    line_end();
    for (;;) cpu_relax();
}

/* ---- exits ------------------------------------------------------------- */
#define EXITS_PORT 0x600          /* unassigned on QEMU microvm and our VMM (DESIGN.md §6) */
#define EXITS_MMIO 0xd0000000ULL  /* likewise */

int test_exits(const struct options *o) {
    const char *kind = o->exits_mmio ? "mmio" : "pio";
    line_begin("exits");
    kv_str("kind", kind);
    kv_dec("n", o->exits_n);
    line_end();
    u64 t0 = rdtsc();
    if (o->exits_mmio) {
        volatile u32 *reg = (volatile u32 *)EXITS_MMIO;
        for (u64 i = 0; i < o->exits_n; i++)
            /* a plain 4-byte mov, easy for any instruction emulator */
            __asm__ volatile("movl %k0, (%1)" : : "r"(i), "r"(reg) : "memory");
    } else {
        for (u64 i = 0; i < o->exits_n; i++) outb(EXITS_PORT, (u8)i);
    }
    u64 t1 = rdtsc();
    line_begin("exits");
    kv_flag("done");
    kv_str("kind", kind);
    kv_dec("n", o->exits_n);
    kv_dec("tsc", t1 - t0);
    line_end();
    return 0;
}

/* ---- syscall: ring-3 -> ring-0 -> iretq round trips -------------------- */
int test_syscall(const struct options *o) {
    int bad = 0;
    u64 t0 = rdtsc();
    for (u64 i = 0; i < o->syscall_n; i++) bad |= sys_call(SYS_NULL, 0) != 0;
    u64 t1 = rdtsc();
    bad |= sys_call(0x7fff, 0) != -1;      /* unknown service -> -1 */
    line_begin("syscall");
    kv_dec("n", o->syscall_n);
    kv_dec("tsc", t1 - t0);
    kv_str("ok", bad ? "0" : "1");
    line_end();
    return bad;
}

/* ---- fault ------------------------------------------------------------- */
void test_fault(void) {
    line_begin("fault");
    kv_flag("triple");
    line_end();
    sys_triple_fault();
}

/* ---- pagefault: a ring-3 #PF must reach boot.S exc_common, which hands it
 * to probe_fault (main.c): "PROBE exception vector=14 ... cr2=0x100000000",
 * then "PROBE done status=1". */
#define UNMAPPED_ADDR 0x100000000ULL   /* first byte above the 4 GiB we map */
int test_pagefault(void) {
    line_begin("pagefault");
    kv_hex("addr", UNMAPPED_ADDR);
    line_end();
    (void)*(const volatile u8 *)phys(UNMAPPED_ADDR);
    line_begin("error");
    kv_str("pagefault", "no_fault");
    line_end();
    return 1;
}

/* ---- smp --------------------------------------------------------------- */
/* MP spec 1.4 (Intel MultiProcessor Specification, May 1997):
 * §4.1 floating pointer "_MP_": u32 physaddr @4, u8 length (16-byte units)
 *      @8, u8 checksum @10, u8 feature1 @11 (non-zero: default config);
 *      searched in the first KiB of the EBDA, the last KiB of base memory
 *      and 0xf0000..0xfffff.
 * §4.2 config table "PCMP": u16 base length @4, u16 entry count @34,
 *      44-byte header; §4.3 entries: processor (type 0) 20 bytes with
 *      flags @3 (bit 0 EN), all other base entries (types 1..4) 8 bytes.
 * §5 default configurations have two processors. */
#define BDA_EBDA_SEGMENT  0x40e
#define MPF_SIG           0x5f504d5f   /* "_MP_" */
#define MPC_SIG           0x504d4350   /* "PCMP" */
#define MPC_HEADER_SIZE   44
#define MP_PROCESSOR      0
#define MP_PROCESSOR_SIZE 20
#define MP_OTHER_SIZE     8
#define MP_CPU_ENABLED    0x01
#define MP_DEFAULT_CPUS   2

static u8 sum8(const u8 *p, u64 n) { u8 s = 0; while (n--) s += *p++; return s; }

static const u8 *mpf_scan(u64 start, u64 len) {
    for (u64 a = start; a + 16 <= start + len; a += 16) {
        const u8 *p = (const u8 *)a;
        if (*(const u32 *)p == MPF_SIG && p[8] == 1 && sum8(p, 16) == 0) return p;
    }
    return 0;
}

static u32 mp_cpu_count(const char **source) {
    const u8 *mpf = 0;
    u64 ebda = (u64)*(const volatile u16 *)phys(BDA_EBDA_SEGMENT) << 4;
    if (ebda >= 0x80000 && ebda < 0xa0000) mpf = mpf_scan(ebda, 1024);
    if (!mpf) mpf = mpf_scan(0x9fc00, 1024);
    if (!mpf) mpf = mpf_scan(0xf0000, 0x10000);
    if (!mpf) { *source = "none"; return 1; }
    u64 cfg = *(const u32 *)(mpf + 4);
    if (cfg == 0) { *source = mpf[11] ? "mp_default" : "mp_invalid"; return mpf[11] ? MP_DEFAULT_CPUS : 1; }
    const u8 *t = (const u8 *)cfg;
    u16 len = *(const u16 *)(t + 4);
    if (*(const u32 *)t != MPC_SIG || len < MPC_HEADER_SIZE || sum8(t, len) != 0) {
        *source = "mp_invalid";
        return 1;
    }
    /* Walk by the base table length, as Linux's smp_read_mpc() does: QEMU
     * microvm's table leaves the entry count at 0. A non-zero count bounds it. */
    u16 count = *(const u16 *)(t + 34);
    u32 cpus = 0;
    u64 off = MPC_HEADER_SIZE;
    for (u32 i = 0; (count == 0 || i < count) && off < len; i++) {
        if (t[off] == MP_PROCESSOR) {
            if (off + MP_PROCESSOR_SIZE > len) break;
            if (t[off + 3] & MP_CPU_ENABLED) cpus++;
            off += MP_PROCESSOR_SIZE;
        } else if (t[off] <= 4) {
            off += MP_OTHER_SIZE;
        } else {
            break;                     /* unknown entry type: stop counting */
        }
    }
    *source = "mptable";
    return cpus ? cpus : 1;
}

/* APIC ID: CPUID leaf 0xB EDX (x2APIC ID) when present, else leaf 1
 * EBX[31:24] (SDM Vol.2A CPUID). */
static u32 apic_id(void) {
    u32 a, b, c, d;
    cpuid(0, 0, &a, &b, &c, &d);
    u32 max = a;
    if (max >= 0xb) {
        cpuid(0xb, 0, &a, &b, &c, &d);
        if (b != 0) return d;
    }
    cpuid(1, 0, &a, &b, &c, &d);
    return b >> 24;
}

/* TSC rate: KVM/VMware hypervisor leaf 0x40000010 EAX (kHz), else CPUID 0x15
 * (crystal Hz * EBX / EAX), else 0x16 EAX (base MHz), else a guess. */
#define TSC_HZ_GUESS 3000000000ULL
static u64 tsc_hz(void) {
    u32 a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    if (c & (1u << 31)) {               /* CPUID.1:ECX[31] hypervisor present */
        cpuid(0x40000000, 0, &a, &b, &c, &d);
        if (a >= 0x40000010 && a < 0x40010000) {
            cpuid(0x40000010, 0, &a, &b, &c, &d);
            if (a) return (u64)a * 1000;
        }
    }
    cpuid(0, 0, &a, &b, &c, &d);
    u32 max = a;
    if (max >= 0x15) {
        cpuid(0x15, 0, &a, &b, &c, &d);
        if (a && b && c) return (u64)c * b / a;
    }
    if (max >= 0x16) {
        cpuid(0x16, 0, &a, &b, &c, &d);
        if (a & 0xffff) return (u64)(a & 0xffff) * 1000000;
    }
    return TSC_HZ_GUESS;
}

#define SMP_WAIT   0
#define SMP_GO     1
#define SMP_CLOSED 2
static volatile u32 smp_state;
static volatile u32 smp_online;

/* Print this CPU's line unless the BSP already closed the check-in. */
static int smp_check_in(u32 cpu) {
    print_lock_acquire();
    /* the state moves GO -> CLOSED only under the print lock, held here */
    if (__atomic_load_n(&smp_state, __ATOMIC_ACQUIRE) != SMP_GO) { print_lock_release(); return 0; }
    __atomic_fetch_add(&smp_online, 1, __ATOMIC_ACQ_REL);
    line_start("smp");
    kv_dec("cpu", cpu);
    kv_dec("apic_id", apic_id());
    line_end();
    return 1;
}

void smp_close(void) {
    print_lock_acquire();
    __atomic_store_n(&smp_state, SMP_CLOSED, __ATOMIC_RELEASE);
    print_lock_release();
}

int test_smp(const struct options *o) {
    const char *source;
    u32 expected = mp_cpu_count(&source);
    if (__atomic_load_n(&smp_state, __ATOMIC_ACQUIRE) == SMP_CLOSED) {
        line_begin("error");
        kv_str("smp", "already_run");
        line_end();
        return 1;
    }
    __atomic_store_n(&smp_state, SMP_GO, __ATOMIC_RELEASE);
    smp_check_in(0);
    u64 deadline = rdtsc() + tsc_hz() / 1000 * o->smp_wait_ms;
    while (__atomic_load_n(&smp_online, __ATOMIC_ACQUIRE) < expected && rdtsc() < deadline) cpu_relax();
    smp_close();
    line_begin("smp");
    kv_dec("expected", expected);
    kv_dec("online", __atomic_load_n(&smp_online, __ATOMIC_ACQUIRE));
    kv_str("source", source);
    line_end();
    return 0;
}

/* APs (vCPU index >= 1, entered through the Typervisor note) wait for the
 * smp test, check in once, and park; if the run ends first they just park. */
void ap_main(u32 cpu) {
    for (;;) {
        u32 s = __atomic_load_n(&smp_state, __ATOMIC_ACQUIRE);
        if (s == SMP_CLOSED) break;
        if (s == SMP_GO) { smp_check_in(cpu); break; }
        cpu_relax();
    }
    sys_park();
}
