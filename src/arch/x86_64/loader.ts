// Kernel loading: detects the image format (ELF64 vmlinux / probe guest, or bzImage), validates
// it, and copies it into guest memory. Returns what the rest of the boot path needs to know.

import type { GuestMemory } from "../../memory/guest-memory.js";
import {
  BZIMAGE_ENTRY64_OFFSET,
  INITRD_ADDR_MAX_DEFAULT,
  XLF_KERNEL_64,
  hasBzImageMagic,
  parseBzImage,
  protocolName,
  type BzImageHeader,
} from "./bzimage.js";
import { parseElf, hasElfMagic, type ElfImage } from "./elf.js";
import { BootSetupError, KernelFormatError, hex } from "./errors.js";
import { BZIMAGE_DEFAULT_LOAD, CMDLINE_MAX_SIZE, HIMEM_START, MMIO_GAP_START } from "./layout.js";

export { KernelFormatError } from "./errors.js";

export interface KernelInfo {
  format: "elf" | "bzimage";
  /**
   * 64-bit entry point (Linux 64-bit boot protocol: long mode, rsi = zero page).
   * ELF: e_entry (as a physical address); bzImage: load address + 0x200 (boot.rst).
   * Meaningless when `entry64Usable` is false.
   */
  entry64: number;
  /** False for an ELF whose e_entry is 0 or outside every loaded segment (e.g. a PVH-only image). */
  entry64Usable: boolean;
  /** 32-bit PVH entry (Xen note XEN_ELFNOTE_PHYS32_ENTRY), ELF only. */
  pvhEntry?: number;
  /** 64-bit entry for secondary vCPUs (Typervisor note type 1), ELF only. */
  apEntry?: number;
  /** Lowest guest-physical byte the kernel occupies. */
  loadAddr: number;
  /** One past the highest byte the kernel occupies or claims (ELF: end of p_memsz; bzImage: load + init_size). */
  loadEnd: number;
  /** Bytes actually copied from the image. */
  loadedBytes: number;
  /** bzImage: the setup header bytes from 0x1f1, to copy into the zero page. */
  setupHeader?: Uint8Array;
  /** bzImage: boot protocol version (0x20f = 2.15). */
  protocolVersion?: number;
  /** Longest command line the kernel accepts, including the NUL. */
  cmdlineMax: number;
  /** Highest address the initrd may occupy (inclusive): boot.rst initrd_addr_max. */
  initrdAddrMax: number;
  /** bzImage: boot.rst xloadflags / loadflags / kernel_alignment. */
  xloadflags?: number;
  loadflags?: number;
  kernelAlignment?: number;
}

export type ParsedKernel = { format: "elf"; elf: ElfImage } | { format: "bzimage"; bzimage: BzImageHeader };

/** Detects and parses a kernel image without loading it. */
export function parseKernelImage(image: Uint8Array): ParsedKernel {
  if (hasElfMagic(image)) return { format: "elf", elf: parseElf(image) };
  if (hasBzImageMagic(image)) return { format: "bzimage", bzimage: parseBzImage(image) };
  throw new KernelFormatError(notAKernel(image));
}

function notAKernel(image: Uint8Array): string {
  const b = image;
  let what = "";
  if (b.length < 4) what = ` (the file is only ${b.length} bytes)`;
  else if (b[0] === 0x1f && b[1] === 0x8b) what = " (it is a gzip file: decompress it, or pass the vmlinux/bzImage inside)";
  else if (b[0] === 0xfd && b[1] === 0x37 && b[2] === 0x7a && b[3] === 0x58) what = " (it is an xz file)";
  else if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) what = " (it is a zstd file)";
  else if (b[0] === 0x4d && b[1] === 0x5a) what = " (it is a PE/EFI file without a Linux setup header)";
  return `not a kernel image: no ELF magic and no bzImage "HdrS" signature${what}`;
}

/** Detects the format, validates and copies the kernel into guest memory. */
export function loadKernel(image: Uint8Array, mem: GuestMemory): KernelInfo {
  const parsed = parseKernelImage(image);
  return parsed.format === "elf" ? loadElf(image, parsed.elf, mem) : loadBzImage(image, parsed.bzimage, mem);
}

function loadElf(image: Uint8Array, elf: ElfImage, mem: GuestMemory): KernelInfo {
  if (elf.entry64 === undefined && elf.pvhEntry === undefined) {
    throw new KernelFormatError(
      `ELF entry point ${hex(elf.rawEntry)} is not inside any PT_LOAD segment and there is no PVH note, so there is nowhere to start`,
    );
  }
  for (const s of elf.segments) {
    if (s.paddr < HIMEM_START) {
      throw new BootSetupError(
        `ELF segment at ${hex(s.paddr)} is below 1 MiB (${hex(HIMEM_START)}), where the zero page, page tables and MP table live`,
      );
    }
    if (!mem.contains(s.paddr, s.memsz)) {
      throw new BootSetupError(
        `ELF segment ${hex(s.paddr)}..${hex(s.paddr + s.memsz)} is not inside guest RAM (RAM ends at ${hex(mem.end)}, MMIO gap at ${hex(MMIO_GAP_START)})`,
      );
    }
  }
  let loadedBytes = 0;
  for (const s of elf.segments) {
    mem.write(s.paddr, image.subarray(s.offset, s.offset + s.filesz));
    // gABI: bytes between p_filesz and p_memsz are zero (.bss).
    mem.fill(s.paddr + s.filesz, s.memsz - s.filesz, 0);
    loadedBytes += s.filesz;
  }
  const info: KernelInfo = {
    format: "elf",
    entry64: elf.entry64 ?? 0,
    entry64Usable: elf.entry64 !== undefined,
    loadAddr: Math.min(...elf.segments.map((s) => s.paddr)),
    loadEnd: Math.max(...elf.segments.map((s) => s.paddr + s.memsz)),
    loadedBytes,
    cmdlineMax: CMDLINE_MAX_SIZE,
    initrdAddrMax: INITRD_ADDR_MAX_DEFAULT,
  };
  if (elf.pvhEntry !== undefined) info.pvhEntry = elf.pvhEntry;
  if (elf.apEntry !== undefined) info.apEntry = elf.apEntry;
  return info;
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

function loadBzImage(image: Uint8Array, hdr: BzImageHeader, mem: GuestMemory): KernelInfo {
  if ((hdr.xloadflags & XLF_KERNEL_64) === 0) {
    throw new KernelFormatError(
      `bzImage (boot protocol ${protocolName(hdr.protocolVersion)}) lacks XLF_KERNEL_64 in xloadflags, so it has no 64-bit entry point`,
    );
  }
  const need = Math.max(hdr.initSize, hdr.pmSize);
  const fits = (a: number): boolean => a >= HIMEM_START && mem.contains(a, need) && a + need <= MMIO_GAP_START;
  let loadAddr: number;
  if (hdr.relocatable) {
    // boot.rst: a relocatable kernel may be loaded at any address aligned to kernel_alignment;
    // prefer pref_address (where it was linked to run), else the 16 MiB default.
    const candidates = [hdr.prefAddress, alignUp(BZIMAGE_DEFAULT_LOAD, hdr.kernelAlignment)].filter(
      (a) => a !== 0 && a % hdr.kernelAlignment === 0,
    );
    const found = candidates.find(fits);
    if (found === undefined) {
      throw new BootSetupError(
        `bzImage needs ${hex(need)} bytes (init_size) at ${hex(candidates[0] ?? BZIMAGE_DEFAULT_LOAD)}, which guest RAM (ending at ${hex(mem.end)}) cannot hold`,
      );
    }
    loadAddr = found;
  } else {
    // boot.rst: a non-relocatable kernel runs only where it was linked (pref_address, 2.10+),
    // or at code32_start's default of 1 MiB for older protocols.
    loadAddr = hdr.prefAddress !== 0 ? hdr.prefAddress : HIMEM_START;
    if (!fits(loadAddr)) {
      throw new BootSetupError(
        `non-relocatable bzImage must load at ${hex(loadAddr)} and needs ${hex(need)} bytes (init_size) there, which guest RAM (ending at ${hex(mem.end)}) cannot hold`,
      );
    }
  }
  mem.write(loadAddr, image.subarray(hdr.pmOffset));
  return {
    format: "bzimage",
    entry64: loadAddr + BZIMAGE_ENTRY64_OFFSET,
    entry64Usable: true,
    loadAddr,
    loadEnd: loadAddr + need,
    loadedBytes: hdr.pmSize,
    setupHeader: hdr.setupHeader,
    protocolVersion: hdr.protocolVersion,
    // boot.rst: cmdline_size excludes the terminating NUL.
    cmdlineMax: Math.min(hdr.cmdlineSize + 1, CMDLINE_MAX_SIZE),
    initrdAddrMax: hdr.initrdAddrMax,
    xloadflags: hdr.xloadflags,
    loadflags: hdr.loadflags,
    kernelAlignment: hdr.kernelAlignment,
  };
}
