/* shim.c — TEST BUILD ONLY (probe-linux64-shim.elf), runs at ring 0 under
 * QEMU: converts the PVH hvm_start_info into a Linux zero page so that the
 * Linux 64-bit entry (linux64_entry) and the zero-page parser can be tested
 * without KVM. Offsets: Documentation/arch/x86/zero-page.rst, boot.rst. */
#include "probe.h"

#define SHIM_ZERO_PAGE 0x8000     /* free low RAM on QEMU microvm */

static void w8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static void w16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static void w32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static void w64(u64 a, u64 v) { *(volatile u64 *)a = v; }
static u32 r32(u64 a) { return *(const volatile u32 *)phys(a); }
static u64 r64(u64 a) { return *(const volatile u64 *)phys(a); }

u64 shim_make_zero_page(u64 si) {
    u64 zp = (u64)phys(SHIM_ZERO_PAGE);
    memset((void *)zp, 0, 4096);
    w16(zp + 0x1fe, 0xaa55);                 /* boot_flag */
    w32(zp + 0x202, 0x53726448);             /* header "HdrS" */
    w16(zp + 0x206, 0x020f);                 /* version 2.15 */
    w8(zp + 0x210, 0xff);                    /* type_of_loader: undefined */
    u64 cmd = r64(si + 24);
    w32(zp + 0x228, (u32)cmd);
    w32(zp + 0x0c8, (u32)(cmd >> 32));
    if (r32(si + 12) >= 1) {                 /* initrd = module 0 */
        u64 mods = r64(si + 16);
        u64 addr = r64(mods), size = r64(mods + 8);
        w32(zp + 0x218, (u32)addr); w32(zp + 0x0c0, (u32)(addr >> 32));
        w32(zp + 0x21c, (u32)size); w32(zp + 0x0c4, (u32)(size >> 32));
    }
    u32 n = r32(si + 48);
    u64 map = r64(si + 40);
    if (n > 128) n = 128;
    for (u32 i = 0; i < n; i++) {
        u64 e = zp + 0x2d0 + (u64)i * 20;
        w64(e, r64(map + i * 24ULL));
        w64(e + 8, r64(map + i * 24ULL + 8));
        w32(e + 16, r32(map + i * 24ULL + 16));
    }
    w8(zp + 0x1e8, (u8)n);
    return zp;
}
