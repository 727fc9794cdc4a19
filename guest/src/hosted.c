/* hosted.c — the probe's drivers (virtio.c, rng.c, nsm.c, ata.c, xenblk.c) and report lines (lib.c)
 * built as a host shared library (build/probe-hosted.so, part of `make -C guest`; -DPROBE_HOSTED), so
 * that the very driver code the guest runs can drive the VMM's own back ends on a machine without
 * KVM: register and port accesses go to the host's callbacks, the DMA areas lie in host memory that
 * the cards and Dom0 map too (a memfd), and report lines collect in a buffer instead of the UART.
 * src/probe/hosted.test.ts loads it through src/sys/probe-hosted.ts. */
#include "virtio.h"
#include "ata.h"

#define API __attribute__((visibility("default")))

u64 hosted_dma_base;
static u32 (*read_hook)(u64 addr);
static void (*write_hook)(u64 addr, u32 value);
static u32 (*pio_in_hook)(u32 port, u32 size);
static void (*pio_out_hook)(u32 port, u32 size, u32 value);
static char out[1 << 17];
static usize out_len;

u32 hosted_mmio_r32(u64 addr) { return read_hook(addr); }
void hosted_mmio_w32(u64 addr, u32 v) { write_hook(addr, v); }
u32 hosted_pio_in(u16 port, u32 size) { return pio_in_hook(port, size); }
void hosted_pio_out(u16 port, u32 size, u32 v) { pio_out_hook(port, size, v); }
void hosted_putc(char c) { if (out_len + 1 < sizeof(out)) out[out_len++] = c; }

/*
 * Runs one probe test (the virtio blk-*, rng and nsm tests; ata-verify/-bench; xenblk-verify/-bench)
 * with `cmdline` as its command line (virtio_mmio.device=, typervisor_ata=, typervisor_xenblk=
 * entries included) and one RAM range [dma_base, dma_base + dma_size) holding every DMA area (16 MiB
 * from dma_base: ata.h's scratch ends there). Register and port accesses go to the callbacks.
 * Returns the test's status (0 ok, -1 unknown test); the report is hosted_output().
 */
API int hosted_run(const char *test, const char *cmdline, u64 dma_base, u64 dma_size,
                   u32 (*mmio_read)(u64), void (*mmio_write)(u64, u32),
                   u32 (*pio_in)(u32, u32), void (*pio_out)(u32, u32, u32)) {
    static struct boot_facts f;
    memset(&f, 0, sizeof(f));
    hosted_dma_base = dma_base;
    read_hook = mmio_read;
    write_hook = mmio_write;
    pio_in_hook = pio_in;
    pio_out_hook = pio_out;
    out_len = 0;
    f.cmdline = cmdline;
    f.cmdline_len = strnlen_(cmdline, 4096);
    f.mem_count = 1;
    f.mem[0].addr = dma_base;
    f.mem[0].size = dma_size;
    f.mem[0].type = 1;           /* E820_TYPE_RAM */
    usize n = strnlen_(test, 64);
    if (str_eq_n(test, n, "blk-verify")) return test_blk_verify(&f);
    if (str_eq_n(test, n, "blk-ro")) return test_blk_ro(&f);
    if (str_eq_n(test, n, "blk-bench")) return test_blk_bench(&f);
    if (str_eq_n(test, n, "blk-durable")) return test_blk_durable(&f);
    if (str_eq_n(test, n, "blk-hostile")) return test_blk_hostile(&f);
    if (str_eq_n(test, n, "rng")) return test_rng(&f);
    if (str_eq_n(test, n, "nsm")) return test_nsm(&f);
    if (str_eq_n(test, n, "ata-verify")) return test_ata_verify(&f);
    if (str_eq_n(test, n, "ata-bench")) return test_ata_bench(&f);
    if (str_eq_n(test, n, "xenblk-verify")) return test_xenblk_verify(&f);
    if (str_eq_n(test, n, "xenblk-bench")) return test_xenblk_bench(&f);
    return -1;
}

API const char *hosted_output(void) { out[out_len] = 0; return out; }
