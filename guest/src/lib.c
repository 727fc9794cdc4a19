/* lib.c — freestanding helpers for ring 3: memory, 8250 UART, report lines. */
#include "probe.h"

#ifndef PROBE_HOSTED   /* the hosted build (hosted.c) has libc's */
/* ---- memory (gcc may emit calls to these even when freestanding) ------- */
void *memset(void *d, int c, usize n) {
    u8 *p = d;
    while (n--) *p++ = (u8)c;
    return d;
}
void *memcpy(void *d, const void *s, usize n) {
    u8 *p = d; const u8 *q = s;
    while (n--) *p++ = *q++;
    return d;
}
void *memmove(void *d, const void *s, usize n) {
    u8 *p = d; const u8 *q = s;
    if (p < q) { while (n--) *p++ = *q++; }
    else { while (n--) p[n] = q[n]; }
    return d;
}
int memcmp(const void *a, const void *b, usize n) {
    const u8 *p = a, *q = b;
    for (; n; n--, p++, q++) if (*p != *q) return *p < *q ? -1 : 1;
    return 0;
}
#endif
usize strnlen_(const char *s, usize max) {
    usize n = 0;
    while (n < max && s[n]) n++;
    return n;
}
int str_eq_n(const char *a, usize alen, const char *b) {
    usize i = 0;
    for (; i < alen; i++) if (b[i] != a[i] || !b[i]) return 0;
    return b[i] == 0;
}

/* ---- per-CPU identity from the stack (boot.S user_entry: ustacks[cpu]) -- */
#ifdef PROBE_HOSTED
u32 this_cpu(void) { return 0; }   /* one host thread runs the hosted drivers */
#else
extern u8 ustacks[];
u32 this_cpu(void) {
    u64 sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    u64 base = (u64)ustacks;
    if (sp < base || sp >= base + (u64)MAX_CPUS * USTACK_SIZE) return 0xff;
    return (u32)((sp - base) >> USTACK_SHIFT);
}
#endif

/* ---- 8250/16550 UART at COM1, polled (PC16550D datasheet register map) -- */
#define COM1      0x3f8
#define UART_THR  0          /* transmit holding (DLAB=0) */
#define UART_DLL  0          /* divisor low (DLAB=1) */
#define UART_IER  1
#define UART_DLM  1
#define UART_FCR  2
#define UART_LCR  3
#define UART_MCR  4
#define UART_LSR  5
#define LCR_DLAB  0x80
#define LCR_8N1   0x03
#define FCR_ENABLE_CLEAR 0x07
#define MCR_DTR_RTS_OUT2 0x0b
#define LSR_THR_EMPTY    0x20
#define UART_SCR  7          /* scratch register */
#define SCR_PROBE 0x5a
/* Wait for THRE at most this many TSC cycles per byte (~0.1-0.3 s): a real or
 * emulated UART drains long before (QEMU holds THRE clear while its stdout
 * pipe is full, so a fixed small spin count would drop bytes); a stuck one
 * must not hang the probe. */
#define THRE_WAIT_CYCLES (1ULL << 28)

#ifdef PROBE_HOSTED
/* The hosted build's "serial port": report bytes go to hosted.c's buffer. */
void hosted_putc(char c);
void uart_init(void) {}
static void uart_putc(char c) { hosted_putc(c); }
#else
static int uart_present;

void uart_init(void) {
    /* Presence: the scratch register keeps what we write (PC16550D §8.11);
     * a missing UART reads back 0x00 or 0xff. Then each byte costs only the
     * LSR read(s) and the THR write (each a ~25 µs exit under PVM). */
    outb(COM1 + UART_SCR, SCR_PROBE);
    uart_present = inb(COM1 + UART_SCR) == SCR_PROBE;
    if (!uart_present) return;
    outb(COM1 + UART_IER, 0);
    outb(COM1 + UART_LCR, LCR_DLAB);
    outb(COM1 + UART_DLL, 1);            /* 115200 baud */
    outb(COM1 + UART_DLM, 0);
    outb(COM1 + UART_LCR, LCR_8N1);
    outb(COM1 + UART_FCR, FCR_ENABLE_CLEAR);
    outb(COM1 + UART_MCR, MCR_DTR_RTS_OUT2);
}

static void uart_putc(char c) {
    if (!uart_present) return;
    if (!(inb(COM1 + UART_LSR) & LSR_THR_EMPTY)) {
        u64 deadline = rdtsc() + THRE_WAIT_CYCLES;
        while (!(inb(COM1 + UART_LSR) & LSR_THR_EMPTY) && rdtsc() < deadline) cpu_relax();
    }
    outb(COM1 + UART_THR, (u8)c);
}
#endif
static void uart_puts(const char *s) { while (*s) uart_putc(*s++); }

/* ---- the print lock: ring-3 spinlock with xchg; holds owner cpu + 1 ---- */
static volatile u32 print_lock;

void print_lock_acquire(void) {
    u32 me = this_cpu() + 1;
    for (;;) {
        u32 old = __atomic_exchange_n(&print_lock, me, __ATOMIC_ACQUIRE);
        if (old == 0) return;
        while (__atomic_load_n(&print_lock, __ATOMIC_RELAXED) != 0) cpu_relax();
    }
}
void print_lock_release(void) { __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE); }
void print_lock_break(u32 cpu) {
    u32 me = cpu + 1;
    __atomic_compare_exchange_n(&print_lock, &me, 0, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

/* ---- report lines ------------------------------------------------------ */
static const char HEX[] = "0123456789abcdef";

static void put_dec(u64 v) {
    char buf[24]; int n = 0;
    do { buf[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) uart_putc(buf[--n]);
}
static void put_hex(u64 v, int min_digits) {
    char buf[16]; int n = 0;
    do { buf[n++] = HEX[v & 15]; v >>= 4; } while (v || n < min_digits);
    uart_puts("0x");
    while (n) uart_putc(buf[--n]);
}
static void put_key(const char *key) { uart_putc(' '); uart_puts(key); uart_putc('='); }

void line_start(const char *name) { uart_puts("PROBE "); uart_puts(name); }
void line_begin(const char *name) { print_lock_acquire(); line_start(name); }
void kv_flag(const char *word) { uart_putc(' '); uart_puts(word); }
void kv_str(const char *key, const char *val) { put_key(key); uart_puts(val); }
void kv_strn(const char *key, const char *val, usize n) {
    put_key(key);
    for (usize i = 0; i < n; i++) {
        char c = val[i];
        uart_putc(c > ' ' && c < 0x7f ? c : '?');    /* values never contain spaces */
    }
}
void kv_dec(const char *key, u64 v) { put_key(key); put_dec(v); }
void kv_hex(const char *key, u64 v) { put_key(key); put_hex(v, 1); }
void kv_hex64(const char *key, u64 v) { put_key(key); put_hex(v, 16); }
void kv_hexbytes(const char *key, const u8 *p, usize n) {
    put_key(key);
    for (usize i = 0; i < n; i++) { uart_putc(HEX[p[i] >> 4]); uart_putc(HEX[p[i] & 15]); }
}
void line_end(void) { uart_putc('\n'); print_lock_release(); }
void text_line(const char *s) { print_lock_acquire(); uart_puts(s); uart_putc('\n'); print_lock_release(); }

/* ---- FNV-1a 64 (http://www.isthe.com/chongo/tech/comp/fnv/) ------------ */
#define FNV64_OFFSET_BASIS 0xcbf29ce484222325ULL
#define FNV64_PRIME        0x100000001b3ULL
u64 fnv1a64(const u8 *p, u64 n) {
    u64 h = FNV64_OFFSET_BASIS;
    for (u64 i = 0; i < n; i++) { h ^= p[i]; h *= FNV64_PRIME; }
    return h;
}

/* Our page tables identity-map 0..4 GiB (layout.h PD_COUNT x 1 GiB). */
#define MAPPED_LIMIT ((u64)PD_COUNT << 30)
int phys_readable(u64 addr, u64 len) {
    return addr < MAPPED_LIMIT && len <= MAPPED_LIMIT - addr;
}
