// What the kernel reads at boot besides its own image: the e820 memory map, the zero page
// (struct boot_params, Linux 64-bit boot protocol), the command line, the initrd placement, and
// for PVH boots the hvm_start_info structure.

import type { GuestMemory } from "../../memory/guest-memory.js";
import {
  BOOT_FLAG_MAGIC,
  CAN_USE_HEAP,
  HDRS_MAGIC,
  HDR_BOOT_FLAG,
  HDR_CMDLINE_SIZE,
  HDR_CMD_LINE_PTR,
  HDR_CODE32_START,
  HDR_HEADER,
  HDR_HEAP_END_PTR,
  HDR_KERNEL_ALIGNMENT,
  HDR_LOADFLAGS,
  HDR_RAMDISK_IMAGE,
  HDR_RAMDISK_SIZE,
  HDR_SETUP_SECTS,
  HDR_TYPE_OF_LOADER,
  HDR_VERSION,
  LOADED_HIGH,
} from "./bzimage.js";
import { BootSetupError, hex } from "./errors.js";
import {
  CMDLINE_MAX_SIZE,
  CMDLINE_START,
  EBDA_START,
  HIMEM_START,
  MMIO_GAP_START,
  PAGE_SIZE,
  PVH_INFO_START,
  PVH_MEMMAP_MAX_ENTRIES,
  PVH_MEMMAP_START,
  PVH_MODLIST_START,
  ZERO_PAGE_SIZE,
  ZERO_PAGE_START,
} from "./layout.js";
import type { KernelInfo } from "./loader.js";

// --- e820 ---------------------------------------------------------------------------------------

/** ACPI 6.5 §15 "System Address Map Interfaces", Table 15.1 (the e820 types). */
export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;
export const E820_NVS = 4;
export const E820_UNUSABLE = 5;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

export interface Range {
  addr: number;
  size: number;
}

/** Firecracker/BIOS convention: [EBDA, 1 MiB) holds the EBDA, VGA hole and BIOS ROM; never RAM to the OS. */
export const BIOS_RESERVED: Range = { addr: EBDA_START, size: HIMEM_START - EBDA_START };

/**
 * The e820 map for the given RAM regions: RAM minus the BIOS hole [0x9fc00, 1 MiB) and any other
 * `reserved` ranges, each reserved range listed as E820_RESERVED. The MMIO gap is simply absent
 * (it is not RAM). Sorted by address.
 */
export function e820Map(memLayout: ReadonlyArray<readonly [number, number]>, ...reserved: Range[]): E820Entry[] {
  const holes = [BIOS_RESERVED, ...reserved].sort((a, b) => a.addr - b.addr);
  const out: E820Entry[] = [];
  for (const [gpa, size] of memLayout) {
    let pieces: Array<[number, number]> = [[gpa, gpa + size]];
    for (const h of holes) {
      const hs = h.addr;
      const he = h.addr + h.size;
      pieces = pieces.flatMap(([s, e]): Array<[number, number]> => {
        if (he <= s || hs >= e) return [[s, e]];
        const keep: Array<[number, number]> = [];
        if (hs > s) keep.push([s, hs]);
        if (he < e) keep.push([he, e]);
        return keep;
      });
    }
    for (const [s, e] of pieces) out.push({ addr: s, size: e - s, type: E820_RAM });
  }
  for (const h of holes) if (h.size > 0) out.push({ addr: h.addr, size: h.size, type: E820_RESERVED });
  return out.sort((a, b) => a.addr - b.addr);
}

// --- Command line -------------------------------------------------------------------------------

/**
 * Writes `cmdline` NUL-terminated at CMDLINE_START. `maxSize` includes the NUL (KernelInfo.cmdlineMax:
 * boot.rst cmdline_size + 1 for a bzImage). Returns where it is and its size including the NUL.
 */
export function writeCmdline(mem: GuestMemory, cmdline: string, maxSize = CMDLINE_MAX_SIZE, addr = CMDLINE_START): Range {
  const bytes = new TextEncoder().encode(cmdline);
  if (bytes.includes(0)) throw new BootSetupError("kernel command line contains a NUL byte");
  if (bytes.length + 1 > maxSize) {
    throw new BootSetupError(`kernel command line is ${bytes.length} bytes; this kernel accepts at most ${maxSize - 1}`);
  }
  mem.write(addr, bytes);
  mem.writeU8(addr + bytes.length, 0);
  return { addr, size: bytes.length + 1 };
}

// --- initrd -------------------------------------------------------------------------------------

/**
 * The highest page-aligned address where an initrd of `size` bytes fits: at or below
 * initrd_addr_max (boot.rst: the highest byte it may occupy), below the MMIO gap, above the
 * kernel, and inside one RAM region.
 */
export function placeInitrd(mem: GuestMemory, size: number, kernel: KernelInfo): number {
  if (!Number.isSafeInteger(size) || size <= 0) throw new BootSetupError(`initrd size ${size} is not a positive byte count`);
  const floor = Math.ceil(kernel.loadEnd / PAGE_SIZE) * PAGE_SIZE;
  const ceiling = Math.min(kernel.initrdAddrMax + 1, MMIO_GAP_START);
  let best: number | undefined;
  for (const r of mem.regions) {
    const top = Math.min(r.end, ceiling);
    const addr = Math.floor((top - size) / PAGE_SIZE) * PAGE_SIZE;
    if (addr >= Math.max(floor, r.gpa) && addr + size <= top) best = Math.max(best ?? 0, addr);
  }
  if (best === undefined) {
    throw new BootSetupError(
      `initrd of ${size} bytes does not fit between the kernel end ${hex(floor)} and ${hex(ceiling)} (initrd_addr_max ${hex(kernel.initrdAddrMax)}, RAM end ${hex(mem.end)})`,
    );
  }
  return best;
}

// --- Zero page (struct boot_params) -------------------------------------------------------------

// zero-page.rst offsets into struct boot_params.
/** zero-page.rst: 070/008 acpi_rsdp_addr, the physical address of the ACPI RSDP (Linux reads it before scanning). */
const ZP_ACPI_RSDP_ADDR = 0x070;
const ZP_EXT_RAMDISK_IMAGE = 0x0c0;
const ZP_EXT_RAMDISK_SIZE = 0x0c4;
const ZP_EXT_CMD_LINE_PTR = 0x0c8;
const ZP_E820_ENTRIES = 0x1e8;
const ZP_E820_TABLE = 0x2d0;
/** bootparam.h: E820_MAX_ENTRIES_ZEROPAGE = 128 entries of struct boot_e820_entry (20 bytes, packed). */
export const E820_MAX_ENTRIES_ZEROPAGE = 128;
const E820_ENTRY_SIZE = 20;

/** boot.rst: type_of_loader 0xff = "undefined" (no assigned boot loader ID). */
const LOADER_TYPE_UNDEFINED = 0xff;
/** boot.rst sample: heap_end = 0xe000, heap_end_ptr = heap_end - 0x200 (for protocol 2.02+). */
const HEAP_END_PTR = 0xde00;
/** Protocol version we claim when the kernel brings no header (ELF): 2.15, whose fields we fill. */
const MINIMAL_PROTOCOL = 0x20f;
/** Firecracker: kernel_alignment for ELF kernels without a header (16 MiB, CONFIG_PHYSICAL_ALIGN default). */
const MINIMAL_KERNEL_ALIGNMENT = 0x100_0000;

export interface BootParamsConfig {
  kernel: KernelInfo;
  cmdlineAddr: number;
  /** Size of the command line including its NUL. */
  cmdlineSize: number;
  initrd?: Range;
  e820: E820Entry[];
  /** Physical address of the ACPI RSDP (acpi/tables.ts); absent = no ACPI, the field stays 0. */
  rsdpAddr?: number;
  /** Where to write the zero page (default ZERO_PAGE_START). */
  zeroPage?: number;
}

const lo32 = (n: number): number => n % 0x1_0000_0000;
const hi32 = (n: number): number => Math.floor(n / 0x1_0000_0000);

/** Fills the zero page for the Linux 64-bit boot protocol (boot.rst, zero-page.rst). Returns its address. */
export function writeBootParams(mem: GuestMemory, cfg: BootParamsConfig): number {
  const zp = cfg.zeroPage ?? ZERO_PAGE_START;
  if (cfg.e820.length > E820_MAX_ENTRIES_ZEROPAGE) {
    throw new BootSetupError(`e820 map has ${cfg.e820.length} entries; the zero page holds at most ${E820_MAX_ENTRIES_ZEROPAGE}`);
  }
  const k = cfg.kernel;
  if (cfg.cmdlineSize > k.cmdlineMax) {
    throw new BootSetupError(`command line of ${cfg.cmdlineSize} bytes (with NUL) exceeds this kernel's limit of ${k.cmdlineMax}`);
  }
  mem.fill(zp, ZERO_PAGE_SIZE, 0);
  if (k.setupHeader !== undefined) {
    // boot.rst: copy the kernel's own setup header, then set the fields a loader must write.
    mem.write(zp + HDR_SETUP_SECTS, k.setupHeader);
    // boot.rst: code32_start = where the protected-mode kernel was loaded.
    mem.writeU32(zp + HDR_CODE32_START, k.loadAddr);
  } else {
    // No header (ELF vmlinux / probe guest): the minimal fields Linux reads (Firecracker's set).
    mem.writeU16(zp + HDR_BOOT_FLAG, BOOT_FLAG_MAGIC);
    mem.writeU32(zp + HDR_HEADER, HDRS_MAGIC);
    mem.writeU16(zp + HDR_VERSION, MINIMAL_PROTOCOL);
    mem.writeU32(zp + HDR_KERNEL_ALIGNMENT, MINIMAL_KERNEL_ALIGNMENT);
    mem.writeU32(zp + HDR_CMDLINE_SIZE, k.cmdlineMax - 1);
  }
  mem.writeU8(zp + HDR_TYPE_OF_LOADER, LOADER_TYPE_UNDEFINED);
  mem.writeU8(zp + HDR_LOADFLAGS, mem.readU8(zp + HDR_LOADFLAGS) | LOADED_HIGH | CAN_USE_HEAP);
  mem.writeU16(zp + HDR_HEAP_END_PTR, HEAP_END_PTR);
  // boot.rst cmd_line_ptr (low 32 bits) + zero-page.rst ext_cmd_line_ptr (high 32 bits).
  mem.writeU32(zp + HDR_CMD_LINE_PTR, lo32(cfg.cmdlineAddr));
  mem.writeU32(zp + ZP_EXT_CMD_LINE_PTR, hi32(cfg.cmdlineAddr));
  if (cfg.initrd !== undefined) {
    const { addr, size } = cfg.initrd;
    if (addr + size - 1 > k.initrdAddrMax) {
      throw new BootSetupError(`initrd ${hex(addr)}+${hex(size)} ends above initrd_addr_max ${hex(k.initrdAddrMax)}`);
    }
    mem.writeU32(zp + HDR_RAMDISK_IMAGE, lo32(addr));
    mem.writeU32(zp + HDR_RAMDISK_SIZE, lo32(size));
    mem.writeU32(zp + ZP_EXT_RAMDISK_IMAGE, hi32(addr));
    mem.writeU32(zp + ZP_EXT_RAMDISK_SIZE, hi32(size));
  }
  if (cfg.rsdpAddr !== undefined) mem.writeU64(zp + ZP_ACPI_RSDP_ADDR, BigInt(cfg.rsdpAddr));
  mem.writeU8(zp + ZP_E820_ENTRIES, cfg.e820.length);
  cfg.e820.forEach((e, i) => {
    // bootparam.h: struct boot_e820_entry { u64 addr; u64 size; u32 type; } __packed
    const at = zp + ZP_E820_TABLE + i * E820_ENTRY_SIZE;
    mem.writeU64(at, BigInt(e.addr));
    mem.writeU64(at + 8, BigInt(e.size));
    mem.writeU32(at + 16, e.type);
  });
  return zp;
}

// --- PVH: struct hvm_start_info -----------------------------------------------------------------

/** Xen arch-x86/hvm/start_info.h: XEN_HVM_START_MAGIC_VALUE ("xEn3" with the 0x80 bit of "E" set). */
export const XEN_HVM_START_MAGIC = 0x336ec578;
/** start_info.h: version 1 adds memmap_paddr and memmap_entries. */
const HVM_START_INFO_VERSION = 1;
// start_info.h: struct hvm_start_info offsets (56 bytes).
const SI_MAGIC = 0;
const SI_VERSION = 4;
const SI_NR_MODULES = 12;
const SI_MODLIST_PADDR = 16;
const SI_CMDLINE_PADDR = 24;
/** start_info.h: rsdp_paddr, the physical address of the ACPI RSDP (0 = none). */
const SI_RSDP_PADDR = 32;
const SI_MEMMAP_PADDR = 40;
const SI_MEMMAP_ENTRIES = 48;
export const HVM_START_INFO_SIZE = 56;
/** start_info.h: struct hvm_modlist_entry { u64 paddr, size, cmdline_paddr, reserved; }. */
const HVM_MODLIST_ENTRY_SIZE = 32;
/** start_info.h: struct hvm_memmap_table_entry { u64 addr, size; u32 type, reserved; }. */
const HVM_MEMMAP_ENTRY_SIZE = 24;

export interface PvhStartInfoConfig {
  cmdline: Range;
  initrd?: Range;
  e820: E820Entry[];
  /** Physical address of the ACPI RSDP (acpi/tables.ts); absent = no ACPI, rsdp_paddr stays 0. */
  rsdpAddr?: number;
}

/** Writes hvm_start_info (+ modlist, memmap) at PVH_INFO_START; returns its address (for ebx). */
export function writePvhStartInfo(mem: GuestMemory, cfg: PvhStartInfoConfig): number {
  if (cfg.e820.length > PVH_MEMMAP_MAX_ENTRIES) {
    throw new BootSetupError(`memory map has ${cfg.e820.length} entries; the PVH memmap area holds ${PVH_MEMMAP_MAX_ENTRIES}`);
  }
  const si = PVH_INFO_START;
  mem.fill(si, HVM_START_INFO_SIZE, 0);
  mem.writeU32(si + SI_MAGIC, XEN_HVM_START_MAGIC);
  mem.writeU32(si + SI_VERSION, HVM_START_INFO_VERSION);
  mem.writeU64(si + SI_CMDLINE_PADDR, BigInt(cfg.cmdline.addr));
  if (cfg.rsdpAddr !== undefined) mem.writeU64(si + SI_RSDP_PADDR, BigInt(cfg.rsdpAddr));
  if (cfg.initrd !== undefined) {
    mem.fill(PVH_MODLIST_START, HVM_MODLIST_ENTRY_SIZE, 0);
    mem.writeU64(PVH_MODLIST_START, BigInt(cfg.initrd.addr));
    mem.writeU64(PVH_MODLIST_START + 8, BigInt(cfg.initrd.size));
    mem.writeU32(si + SI_NR_MODULES, 1);
    mem.writeU64(si + SI_MODLIST_PADDR, BigInt(PVH_MODLIST_START));
  }
  cfg.e820.forEach((e, i) => {
    const at = PVH_MEMMAP_START + i * HVM_MEMMAP_ENTRY_SIZE;
    mem.writeU64(at, BigInt(e.addr));
    mem.writeU64(at + 8, BigInt(e.size));
    // start_info.h: XEN_HVM_MEMMAP_TYPE_* share the e820 numbering.
    mem.writeU32(at + 16, e.type);
    mem.writeU32(at + 20, 0);
  });
  mem.writeU64(si + SI_MEMMAP_PADDR, BigInt(PVH_MEMMAP_START));
  mem.writeU32(si + SI_MEMMAP_ENTRIES, cfg.e820.length);
  return si;
}
