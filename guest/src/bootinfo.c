/* bootinfo.c — boot facts from the Linux zero page or the PVH start info. */
#include "probe.h"

#define CMDLINE_MAX 4096          /* longer than x86 COMMAND_LINE_SIZE (2048) */

/* Linux zero page (struct boot_params): Documentation/arch/x86/zero-page.rst
 * and boot.rst (setup_header fields at 0x1f1..). */
#define BP_EXT_RAMDISK_IMAGE  0x0c0   /* u32: bits 63:32 of ramdisk_image */
#define BP_EXT_RAMDISK_SIZE   0x0c4   /* u32: bits 63:32 of ramdisk_size */
#define BP_EXT_CMD_LINE_PTR   0x0c8   /* u32: bits 63:32 of cmd_line_ptr */
#define BP_E820_ENTRIES       0x1e8   /* u8 */
#define BP_HDR_VERSION        0x206   /* u16: boot protocol version */
#define BP_TYPE_OF_LOADER     0x210   /* u8 */
#define BP_RAMDISK_IMAGE      0x218   /* u32 */
#define BP_RAMDISK_SIZE       0x21c   /* u32 */
#define BP_CMD_LINE_PTR       0x228   /* u32 */
#define BP_E820_TABLE         0x2d0   /* struct boot_e820_entry[128] */
#define BP_E820_ENTRY_SIZE    20      /* packed: u64 addr, u64 size, u32 type */
#define BP_SIZE               4096

/* Xen public/arch-x86/hvm/start_info.h */
#define HVM_START_MAGIC       0x336ec578
#define SI_MAGIC              0       /* u32 */
#define SI_VERSION            4       /* u32 */
#define SI_NR_MODULES         12      /* u32 */
#define SI_MODLIST_PADDR      16      /* u64 -> hvm_modlist_entry[] */
#define SI_CMDLINE_PADDR      24      /* u64 */
#define SI_MEMMAP_PADDR       40      /* u64, version >= 1 */
#define SI_MEMMAP_ENTRIES     48      /* u32, version >= 1 */
#define SI_SIZE_V1            56
#define MOD_PADDR             0       /* hvm_modlist_entry: u64 paddr */
#define MOD_SIZE              8       /*                    u64 size */
#define MOD_ENTRY_SIZE        32
#define MEMMAP_ADDR           0       /* hvm_memmap_table_entry: u64 addr */
#define MEMMAP_SIZE           8       /*                         u64 size */
#define MEMMAP_TYPE           16      /*                         u32 type */
#define MEMMAP_ENTRY_SIZE     24

static u8 rd8(u64 a) { return *(const volatile u8 *)a; }
static u16 rd16(u64 a) { return *(const volatile u16 *)a; }
static u32 rd32(u64 a) { return *(const volatile u32 *)a; }
static u64 rd64(u64 a) { return *(const volatile u64 *)a; }

const char *entry_name(u32 entry) {
    switch (entry) {
    case ENTRY_LINUX64: return "linux64";
    case ENTRY_PVH: return "pvh";
    case ENTRY_AP: return "ap";
    default: return "unknown";
    }
}

static void set_cmdline(struct boot_facts *f, u64 addr) {
    f->cmdline_addr = addr;
    if (addr == 0 || !phys_readable(addr, 1)) return;
    u64 room = ((u64)PD_COUNT << 30) - addr;
    const char *s = (const char *)addr;
    f->cmdline_len = strnlen_(s, room < CMDLINE_MAX ? room : CMDLINE_MAX);
    f->cmdline = s;
}

static void read_linux(struct boot_facts *f, u64 zp) {
    if (zp == 0 || !phys_readable(zp, BP_SIZE)) { f->error = "zero_page_unreadable"; return; }
    f->proto_version = rd16(zp + BP_HDR_VERSION);
    f->loader_type = rd8(zp + BP_TYPE_OF_LOADER);
    set_cmdline(f, rd32(zp + BP_CMD_LINE_PTR) | (u64)rd32(zp + BP_EXT_CMD_LINE_PTR) << 32);
    f->initrd_addr = rd32(zp + BP_RAMDISK_IMAGE) | (u64)rd32(zp + BP_EXT_RAMDISK_IMAGE) << 32;
    f->initrd_size = rd32(zp + BP_RAMDISK_SIZE) | (u64)rd32(zp + BP_EXT_RAMDISK_SIZE) << 32;
    u32 n = rd8(zp + BP_E820_ENTRIES);
    if (n > MAX_MEM_ENTRIES) n = MAX_MEM_ENTRIES;
    for (u32 i = 0; i < n; i++) {
        u64 e = zp + BP_E820_TABLE + (u64)i * BP_E820_ENTRY_SIZE;
        f->mem[i].addr = rd64(e);
        f->mem[i].size = rd64(e + 8);
        f->mem[i].type = rd32(e + 16);
    }
    f->mem_count = n;
}

static void read_pvh(struct boot_facts *f, u64 si) {
    if (si == 0 || !phys_readable(si, SI_SIZE_V1)) { f->error = "start_info_unreadable"; return; }
    if (rd32(si + SI_MAGIC) != HVM_START_MAGIC) { f->error = "start_info_bad_magic"; return; }
    f->proto_version = rd32(si + SI_VERSION);
    f->loader_type = 0;                       /* no such field in PVH */
    set_cmdline(f, rd64(si + SI_CMDLINE_PADDR));
    u64 mods = rd64(si + SI_MODLIST_PADDR);
    if (rd32(si + SI_NR_MODULES) >= 1 && mods != 0 && phys_readable(mods, MOD_ENTRY_SIZE)) {
        f->initrd_addr = rd64(mods + MOD_PADDR);   /* initrd = first module */
        f->initrd_size = rd64(mods + MOD_SIZE);
    }
    if (f->proto_version >= 1) {
        u64 map = rd64(si + SI_MEMMAP_PADDR);
        u32 n = rd32(si + SI_MEMMAP_ENTRIES);
        if (n > MAX_MEM_ENTRIES) n = MAX_MEM_ENTRIES;
        if (map == 0 || !phys_readable(map, (u64)n * MEMMAP_ENTRY_SIZE)) n = 0;
        for (u32 i = 0; i < n; i++) {
            u64 e = map + (u64)i * MEMMAP_ENTRY_SIZE;
            f->mem[i].addr = rd64(e + MEMMAP_ADDR);
            f->mem[i].size = rd64(e + MEMMAP_SIZE);
            f->mem[i].type = rd32(e + MEMMAP_TYPE);
        }
        f->mem_count = n;
    }
}

void bootinfo_read(struct boot_facts *f, u32 entry, u64 info) {
    memset(f, 0, sizeof(*f));
    f->entry = entry;
    f->info_addr = info;
    if (entry == ENTRY_PVH) read_pvh(f, info);
    else read_linux(f, info);
}
