/* main.c — ring-3 entry: parse the command line, run the tests, report. */
#include "probe.h"
#include "virtio.h"
#include "ata.h"

#define DEBUG_EXIT_PORT  0xf4   /* QEMU isa-debug-exit: exit status (v << 1) | 1 */
#define I8042_CMD_PORT   0x64   /* 8042 command register */
#define I8042_CMD_RESET  0xfe   /* pulse the reset line: our VMM stops on it */
#define EXITS_N_DEFAULT  100000
#define SYSCALL_N_DEFAULT 1000
#define SMP_WAIT_MS_DEFAULT 3000

static struct boot_facts facts;   /* large (mem[]): keep it off the stack */
static u8 fault_depth[MAX_CPUS];

/* ---- command line ------------------------------------------------------- */
static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Finds "key=" at the start of a whitespace-separated token; returns the
 * value (not NUL-terminated) and its length, or NULL. The last one wins. */
static const char *cmdline_get(const char *s, usize n, const char *key, usize *len) {
    usize klen = strnlen_(key, 64);
    const char *found = 0;
    for (usize i = 0; i < n;) {
        while (i < n && is_space(s[i])) i++;
        usize start = i;
        while (i < n && !is_space(s[i])) i++;
        if (i - start > klen && memcmp(s + start, key, klen) == 0 && s[start + klen] == '=') {
            found = s + start + klen + 1;
            *len = i - start - klen - 1;
        }
    }
    return found;
}

static int parse_u64(const char *s, usize n, u64 *out) {
    u64 v = 0;
    if (n == 0 || n > 19) return 0;
    for (usize i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (u64)(s[i] - '0');
    }
    *out = v;
    return 1;
}

static void parse_options(const struct boot_facts *f, struct options *o) {
    const char *s = f->cmdline ? f->cmdline : "";
    usize n = f->cmdline ? f->cmdline_len : 0, len = 0;
    o->run = cmdline_get(s, n, "probe.run", &o->run_len);
    if (!o->run) { o->run = "demo"; o->run_len = 4; }
    o->exits_n = EXITS_N_DEFAULT;
    o->syscall_n = SYSCALL_N_DEFAULT;
    o->smp_wait_ms = SMP_WAIT_MS_DEFAULT;
    const char *v = cmdline_get(s, n, "probe.exits.kind", &len);
    if (v) {
        if (str_eq_n(v, len, "mmio")) o->exits_mmio = 1;
        else if (!str_eq_n(v, len, "pio")) o->bad_option = "probe.exits.kind";
    }
    v = cmdline_get(s, n, "probe.exits.n", &len);
    if (v && !parse_u64(v, len, &o->exits_n)) o->bad_option = "probe.exits.n";
    v = cmdline_get(s, n, "probe.syscall.n", &len);
    if (v && !parse_u64(v, len, &o->syscall_n)) o->bad_option = "probe.syscall.n";
    v = cmdline_get(s, n, "probe.smp.wait_ms", &len);
    if (v && !parse_u64(v, len, &o->smp_wait_ms)) o->bad_option = "probe.smp.wait_ms";
}

/* ---- the end of a run ---------------------------------------------------- */
NORETURN static void finish(int status) {
    smp_close();                          /* late APs park silently */
    line_begin("done");
    kv_dec("status", (u64)status);
    line_end();
    outb(DEBUG_EXIT_PORT, (u8)status);    /* QEMU: exits here */
    outb(I8042_CMD_PORT, I8042_CMD_RESET);/* our VMM: stops here */
    sys_park();
}

static int run_test(const char *name, usize len, const struct options *o) {
    if (str_eq_n(name, len, "boot")) return test_boot(&facts);
    if (str_eq_n(name, len, "demo")) return test_demo(&facts);
    if (str_eq_n(name, len, "hold")) return test_hold();
    if (str_eq_n(name, len, "smp")) return test_smp(o);
    if (str_eq_n(name, len, "exits")) return test_exits(o);
    if (str_eq_n(name, len, "syscall")) return test_syscall(o);
    if (str_eq_n(name, len, "pagefault")) return test_pagefault();
    if (str_eq_n(name, len, "blk-verify")) return test_blk_verify(&facts);
    if (str_eq_n(name, len, "blk-ro")) return test_blk_ro(&facts);
    if (str_eq_n(name, len, "blk-bench")) return test_blk_bench(&facts);
    if (str_eq_n(name, len, "blk-durable")) return test_blk_durable(&facts);
    if (str_eq_n(name, len, "blk-hostile")) return test_blk_hostile(&facts);
    if (str_eq_n(name, len, "rng")) return test_rng(&facts);
    if (str_eq_n(name, len, "nsm")) return test_nsm(&facts);
    if (str_eq_n(name, len, "ata-verify")) return test_ata_verify(&facts);
    if (str_eq_n(name, len, "ata-bench")) return test_ata_bench(&facts);
    if (str_eq_n(name, len, "xenblk-verify")) return test_xenblk_verify(&facts);
    if (str_eq_n(name, len, "xenblk-bench")) return test_xenblk_bench(&facts);
    if (str_eq_n(name, len, "fault")) test_fault();
    line_begin("error");
    kv_strn("unknown_test", name, len);
    line_end();
    return 1;
}

/* Ring-3 entry (boot.S user_entry). */
void probe_main(u64 cpu, u64 info, u64 entry) {
    if (entry == ENTRY_AP) ap_main((u32)cpu);
    uart_init();
    bootinfo_read(&facts, (u32)entry, info);
    line_begin("start");
    kv_str("entry", entry_name((u32)entry));
    kv_dec("version", PROBE_REPORT_VERSION);
    line_end();

    int status = 0;
    if (facts.error) {
        line_begin("error");
        kv_str("boot_info", facts.error);
        kv_hex("addr", info);
        line_end();
        status = 1;
    }
    struct options o;
    memset(&o, 0, sizeof(o));
    parse_options(&facts, &o);
    if (o.bad_option) {
        line_begin("error");
        kv_str("bad_option", o.bad_option);
        line_end();
        finish(1);
    }
    for (usize i = 0; i < o.run_len;) {
        usize start = i;
        while (i < o.run_len && o.run[i] != ',') i++;
        if (i > start) status |= run_test(o.run + start, i - start, &o);
        i++;
    }
    finish(status);
}

/* Ring-3 side of a ring-3 exception (boot.S exc_common redirects here). */
void probe_fault(u64 vector, u64 rip, u64 error, u64 cr2, u64 cpu) {
    if (cpu >= MAX_CPUS || fault_depth[cpu]++) sys_triple_fault();
    print_lock_break((u32)cpu);
    line_begin("exception");
    kv_dec("cpu", cpu);
    kv_dec("vector", vector);
    kv_hex("rip", rip);
    kv_hex("error", error);
    kv_hex("cr2", cr2);
    line_end();
    if (cpu == 0) finish(1);
    sys_park();
}
