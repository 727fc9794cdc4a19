/* probe.h — shared declarations of the ring-3 side of the probe guest. */
#ifndef PROBE_H
#define PROBE_H

#include "layout.h"

typedef unsigned char      u8;
typedef unsigned short     u16;
typedef unsigned int       u32;
typedef unsigned long long u64;
typedef unsigned long      usize;

#define NORETURN __attribute__((noreturn))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Where the drivers' DMA areas start (virtio.c 16 MiB, rng.c +4 MiB, nsm.c +5 MiB): guest-physical
 * 16 MiB in the guest. The hosted build (hosted.c, PROBE_HOSTED) runs the same drivers as a host
 * library against the VMM's own transport and cards, with the areas in a memfd mapped wherever
 * the host put it. */
#ifdef PROBE_HOSTED
extern u64 hosted_dma_base;
#define PROBE_DMA_BASE hosted_dma_base
#else
#define PROBE_DMA_BASE 0x1000000ULL
#endif

/* The report protocol version printed by `PROBE start ... version=`. */
#define PROBE_REPORT_VERSION 1

/* ---- port I/O and CPU helpers (ring 3; ports granted by the TSS bitmap) -- */
#ifdef PROBE_HOSTED
/* The hosted build's port accesses go to the host's callbacks (hosted.c). */
u32 hosted_pio_in(u16 port, u32 size);
void hosted_pio_out(u16 port, u32 size, u32 v);
static inline void outb(u16 port, u8 v) { hosted_pio_out(port, 1, v); }
static inline u8 inb(u16 port) { return (u8)hosted_pio_in(port, 1); }
static inline void outw(u16 port, u16 v) { hosted_pio_out(port, 2, v); }
static inline u16 inw(u16 port) { return (u16)hosted_pio_in(port, 2); }
static inline void outl(u16 port, u32 v) { hosted_pio_out(port, 4, v); }
static inline u32 inl(u16 port) { return hosted_pio_in(port, 4); }
#else
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory"); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory"); return v; }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port) : "memory"); }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port) : "memory"); return v; }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory"); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory"); return v; }
#endif
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

/* A guest-physical address as a pointer (identity-mapped). The empty asm
 * hides the constant from gcc, which otherwise warns about low addresses. */
static inline const volatile void *phys(u64 a) { __asm__("" : "+r"(a)); return (const volatile void *)a; }

/* ---- ring-0 services (boot.S syscall_entry) ---------------------------- */
static inline long sys_call(long nr, long arg) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(arg) : "rcx", "r10", "r11", "memory");
    return ret;
}
NORETURN static inline void sys_park(void) { for (;;) sys_call(SYS_PARK, 0); }
NORETURN static inline void sys_triple_fault(void) { for (;;) sys_call(SYS_TRIPLE_FAULT, 0); }
/* Ring 3 runs with interrupts on (1) or off (0) from the return of this call. */
static inline void sys_irq(int on) { sys_call(SYS_IRQ, on); }

/* ---- lib.c ------------------------------------------------------------- */
void *memset(void *d, int c, usize n);
void *memcpy(void *d, const void *s, usize n);
void *memmove(void *d, const void *s, usize n);
int memcmp(const void *a, const void *b, usize n);
usize strnlen_(const char *s, usize max);
int str_eq_n(const char *a, usize alen, const char *b); /* a[0..alen) == NUL-terminated b */

u32 this_cpu(void);            /* from the stack pointer: ustacks[cpu] */
void uart_init(void);

/* One report line. line_begin takes the print lock (lines never interleave
 * between CPUs) and line_end releases it. */
void line_begin(const char *name);
void line_start(const char *name);            /* the print lock is already held */
void kv_flag(const char *word);               /* a bare word: "done", "ok" */
void kv_str(const char *key, const char *val);
void kv_strn(const char *key, const char *val, usize n);
void kv_dec(const char *key, u64 v);
void kv_hex(const char *key, u64 v);          /* 0x... minimal digits */
void kv_hex64(const char *key, u64 v);        /* 0x + 16 digits */
void kv_hexbytes(const char *key, const u8 *p, usize n);  /* key ends in _hex */
void line_end(void);
void text_line(const char *s);                /* a plain line, never "PROBE..." */
void print_lock_acquire(void);
void print_lock_release(void);
void print_lock_break(u32 cpu);               /* fault path: drop it if cpu holds it */

u64 fnv1a64(const u8 *p, u64 n);
int phys_readable(u64 addr, u64 len);          /* inside the identity-mapped 4 GiB */

/* ---- bootinfo.c -------------------------------------------------------- */
#define MAX_MEM_ENTRIES 128      /* boot.rst: E820_MAX_ENTRIES_ZEROPAGE */
struct mem_entry { u64 addr, size; u32 type; };
struct boot_facts {
    u32 entry;                   /* ENTRY_LINUX64 or ENTRY_PVH */
    u64 info_addr;               /* zero page or hvm_start_info */
    const char *error;           /* non-NULL: the info block is unusable */
    u32 loader_type;             /* boot.rst type_of_loader; 0 for PVH */
    u32 proto_version;           /* boot.rst version, or hvm_start_info.version */
    u64 cmdline_addr;
    u64 cmdline_len;
    const char *cmdline;         /* NULL when absent or unreadable */
    u64 initrd_addr, initrd_size;
    u32 mem_count;
    struct mem_entry mem[MAX_MEM_ENTRIES];
};
void bootinfo_read(struct boot_facts *f, u32 entry, u64 info);
const char *entry_name(u32 entry);

/* ---- tests.c ----------------------------------------------------------- */
struct options {
    const char *run; usize run_len;      /* probe.run= value, not NUL-terminated */
    int exits_mmio; u64 exits_n;          /* probe.exits.kind / probe.exits.n */
    u64 syscall_n;                         /* probe.syscall.n */
    u64 smp_wait_ms;                       /* probe.smp.wait_ms */
    const char *bad_option;                /* an option value we could not parse */
};
int test_boot(const struct boot_facts *f);
int test_smp(const struct options *o);
int test_pagefault(void);
int test_exits(const struct options *o);
int test_syscall(const struct options *o);
NORETURN void test_fault(void);
int test_demo(const struct boot_facts *f);
int test_hold(void);
NORETURN void ap_main(u32 cpu);
void smp_close(void);

#endif
