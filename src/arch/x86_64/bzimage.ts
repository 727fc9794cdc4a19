// bzImage: the Linux x86 boot protocol's setup header (Documentation/arch/x86/boot.rst,
// "The Real-Mode Kernel Header"). Parsing only; loader.ts places the protected-mode code.

import { KernelFormatError, hex } from "./errors.js";

// boot.rst: setup_header field offsets within the image (and within the zero page).
export const HDR_SETUP_SECTS = 0x1f1;
export const HDR_SYSSIZE = 0x1f4;
export const HDR_BOOT_FLAG = 0x1fe;
export const HDR_JUMP = 0x200;
export const HDR_HEADER = 0x202;
export const HDR_VERSION = 0x206;
export const HDR_KERNEL_VERSION = 0x20e;
export const HDR_TYPE_OF_LOADER = 0x210;
export const HDR_LOADFLAGS = 0x211;
export const HDR_CODE32_START = 0x214;
export const HDR_RAMDISK_IMAGE = 0x218;
export const HDR_RAMDISK_SIZE = 0x21c;
export const HDR_HEAP_END_PTR = 0x224;
export const HDR_CMD_LINE_PTR = 0x228;
export const HDR_INITRD_ADDR_MAX = 0x22c;
export const HDR_KERNEL_ALIGNMENT = 0x230;
export const HDR_RELOCATABLE_KERNEL = 0x234;
export const HDR_MIN_ALIGNMENT = 0x235;
export const HDR_XLOADFLAGS = 0x236;
export const HDR_CMDLINE_SIZE = 0x238;
export const HDR_PAYLOAD_OFFSET = 0x248;
export const HDR_PAYLOAD_LENGTH = 0x24c;
export const HDR_PREF_ADDRESS = 0x258;
export const HDR_INIT_SIZE = 0x260;

/** boot.rst: boot_flag must be 0xAA55. */
export const BOOT_FLAG_MAGIC = 0xaa55;
/** boot.rst: header = "HdrS" (0x53726448 little-endian). */
export const HDRS_MAGIC = 0x53726448;
/** boot.rst: "If setup_sects is 0, the real value is 4." */
const SETUP_SECTS_DEFAULT = 4;
/** boot.rst: sectors are 512 bytes; the boot sector precedes setup_sects sectors of setup code. */
const SECTOR_SIZE = 512;
/** boot.rst: the header ends at 0x202 + the byte at 0x201 (the jump offset); bootparam.h's
 *  struct boot_params puts edd_mbr_sig_buffer at 0x290, so a header may not run past it. */
const HDR_END_LIMIT = 0x290;

/** boot.rst: the oldest protocol we accept (cmdline_size appears in 2.06). */
export const MIN_BOOT_PROTOCOL = 0x206;
/** boot.rst: protocol versions that introduced the fields we read (major in the high byte, minor in the low: 2.10 = 0x20a). */
const PROTO_2_03 = 0x203; // initrd_addr_max
const PROTO_2_05 = 0x205; // kernel_alignment, relocatable_kernel
const PROTO_2_08 = 0x208; // payload_offset, payload_length
const PROTO_2_10 = 0x20a; // min_alignment, pref_address, init_size
const PROTO_2_12 = 0x20c; // xloadflags

/** boot.rst: loadflags bits. */
export const LOADED_HIGH = 1 << 0;
export const KASLR_FLAG = 1 << 1;
export const QUIET_FLAG = 1 << 5;
export const KEEP_SEGMENTS = 1 << 6;
export const CAN_USE_HEAP = 1 << 7;

/** boot.rst: xloadflags bits. */
export const XLF_KERNEL_64 = 1 << 0;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1;
export const XLF_EFI_HANDOVER_32 = 1 << 2;
export const XLF_EFI_HANDOVER_64 = 1 << 3;
export const XLF_EFI_KEXEC = 1 << 4;

/** boot.rst: "the 64-bit entry point is at the start of the protected-mode code + 0x200". */
export const BZIMAGE_ENTRY64_OFFSET = 0x200;
/** boot.rst: initrd_addr_max default for protocols before 2.03. */
export const INITRD_ADDR_MAX_DEFAULT = 0x37ff_ffff;

export interface BzImageHeader {
  /** boot.rst "version": e.g. 0x20f for 2.15. */
  protocolVersion: number;
  setupSects: number;
  /** File offset of the protected-mode kernel: (setup_sects + 1) * 512. */
  pmOffset: number;
  /** Bytes of protected-mode code (the rest of the file). */
  pmSize: number;
  loadflags: number;
  xloadflags: number;
  relocatable: boolean;
  kernelAlignment: number;
  minAlignment: number;
  prefAddress: number;
  /** boot.rst: linear memory the kernel needs from its load address, before it can relocate. */
  initSize: number;
  /** Highest address the initrd may occupy (inclusive). */
  initrdAddrMax: number;
  /** Longest command line, not counting the NUL. */
  cmdlineSize: number;
  payloadOffset: number;
  payloadLength: number;
  /** The setup header bytes [0x1f1, 0x202 + image[0x201]), for the zero page. */
  setupHeader: Uint8Array;
}

export function hasBzImageMagic(image: Uint8Array): boolean {
  if (image.length < HDR_HEADER + 4) return false;
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  return dv.getUint32(HDR_HEADER, true) === HDRS_MAGIC;
}

/** Parses and validates a bzImage's setup header (boot.rst). */
export function parseBzImage(image: Uint8Array): BzImageHeader {
  if (!hasBzImageMagic(image)) throw new KernelFormatError('not a bzImage: no "HdrS" signature at offset 0x202');
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const bootFlag = dv.getUint16(HDR_BOOT_FLAG, true);
  if (bootFlag !== BOOT_FLAG_MAGIC) {
    throw new KernelFormatError(`bzImage boot_flag at 0x1fe is ${hex(bootFlag)}, expected 0xaa55`);
  }
  const version = dv.getUint16(HDR_VERSION, true);
  const vs = protocolName(version);
  if (version < MIN_BOOT_PROTOCOL) {
    throw new KernelFormatError(`bzImage boot protocol ${vs} is too old: 2.06 or newer is required`);
  }
  const hdrEnd = HDR_HEADER + image[HDR_JUMP + 1]!;
  if (hdrEnd > HDR_END_LIMIT || hdrEnd < HDR_CMDLINE_SIZE + 4) {
    throw new KernelFormatError(`bzImage setup header ends at ${hex(hdrEnd)}, outside the valid range 0x23c..0x290`);
  }
  if (image.length < hdrEnd) {
    throw new KernelFormatError(`truncated bzImage: the setup header ends at ${hex(hdrEnd)} but the file has ${image.length} bytes`);
  }
  const setupSects = image[HDR_SETUP_SECTS]! === 0 ? SETUP_SECTS_DEFAULT : image[HDR_SETUP_SECTS]!;
  const pmOffset = (setupSects + 1) * SECTOR_SIZE;
  if (image.length <= pmOffset) {
    throw new KernelFormatError(
      `truncated bzImage: ${setupSects} setup sectors put the protected-mode kernel at ${hex(pmOffset)}, but the file has ${image.length} bytes`,
    );
  }
  const pmSize = image.length - pmOffset;
  // boot.rst: syssize is the protected-mode code size in 16-byte paragraphs (32-bit since 2.04).
  const syssize = dv.getUint32(HDR_SYSSIZE, true) * 16;
  if (syssize > pmSize) {
    throw new KernelFormatError(
      `truncated bzImage: syssize says ${syssize} bytes of protected-mode code, the file has ${pmSize} after the setup sectors`,
    );
  }
  const xloadflags = version >= PROTO_2_12 ? dv.getUint16(HDR_XLOADFLAGS, true) : 0;
  const relocatable = version >= PROTO_2_05 && image[HDR_RELOCATABLE_KERNEL] !== 0;
  const kernelAlignment = version >= PROTO_2_05 ? dv.getUint32(HDR_KERNEL_ALIGNMENT, true) : 0;
  if (relocatable && (kernelAlignment === 0 || (kernelAlignment & (kernelAlignment - 1)) !== 0)) {
    throw new KernelFormatError(`bzImage kernel_alignment ${hex(kernelAlignment)} is not a power of two`);
  }
  const prefAddress = version >= PROTO_2_10 ? dv.getBigUint64(HDR_PREF_ADDRESS, true) : 0n;
  if (prefAddress > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new KernelFormatError(`bzImage pref_address ${hex(prefAddress)} is not a usable physical address`);
  }
  const initSize = version >= PROTO_2_10 ? dv.getUint32(HDR_INIT_SIZE, true) : 0;
  if (initSize !== 0 && initSize < syssize) {
    throw new KernelFormatError(`bzImage init_size ${hex(initSize)} is smaller than its own code (${hex(syssize)} bytes)`);
  }
  return {
    protocolVersion: version,
    setupSects,
    pmOffset,
    pmSize,
    loadflags: image[HDR_LOADFLAGS]!,
    xloadflags,
    relocatable,
    kernelAlignment,
    minAlignment: version >= PROTO_2_10 ? image[HDR_MIN_ALIGNMENT]! : 0,
    prefAddress: Number(prefAddress),
    initSize,
    initrdAddrMax: version >= PROTO_2_03 ? dv.getUint32(HDR_INITRD_ADDR_MAX, true) : INITRD_ADDR_MAX_DEFAULT,
    cmdlineSize: dv.getUint32(HDR_CMDLINE_SIZE, true),
    payloadOffset: version >= PROTO_2_08 ? dv.getUint32(HDR_PAYLOAD_OFFSET, true) : 0,
    payloadLength: version >= PROTO_2_08 ? dv.getUint32(HDR_PAYLOAD_LENGTH, true) : 0,
    setupHeader: image.slice(HDR_SETUP_SECTS, hdrEnd),
  };
}

/** The compressed payload (boot.rst payload_offset/payload_length, relative to the protected-mode code). */
export function bzImagePayload(image: Uint8Array, hdr: BzImageHeader): Uint8Array {
  const start = hdr.pmOffset + hdr.payloadOffset;
  const end = start + hdr.payloadLength;
  if (hdr.payloadLength === 0 || end > image.length) {
    throw new KernelFormatError(`bzImage payload ${hex(start)}+${hex(hdr.payloadLength)} is absent or past the end of the file`);
  }
  return image.subarray(start, end);
}

/** Names the compression of a bzImage payload from its magic (arch/x86/boot/compressed/Makefile formats). */
export function payloadCompression(payload: Uint8Array): "gzip" | "xz" | "zstd" | "lz4" | "lzma" | "bzip2" | "lzo" | "unknown" {
  const b = payload;
  if (b[0] === 0x1f && b[1] === 0x8b) return "gzip"; // RFC 1952 §2.3.1
  if (b[0] === 0xfd && b[1] === 0x37 && b[2] === 0x7a && b[3] === 0x58 && b[4] === 0x5a) return "xz"; // xz format §2.1.1.1
  if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return "zstd"; // RFC 8878 §3.1.1
  if (b[0] === 0x02 && b[1] === 0x21 && b[2] === 0x4c && b[3] === 0x18) return "lz4"; // lz4 legacy frame magic
  if (b[0] === 0x42 && b[1] === 0x5a && b[2] === 0x68) return "bzip2"; // "BZh"
  if (b[0] === 0x89 && b[1] === 0x4c && b[2] === 0x5a && b[3] === 0x4f) return "lzo"; // lzop magic
  if (b[0] === 0x5d && b[1] === 0x00 && b[2] === 0x00) return "lzma"; // lzma-alone properties byte
  return "unknown";
}

/** boot.rst "version" as people write it: 0x20f -> "2.15". */
export function protocolName(version: number): string {
  return `${version >> 8}.${(version & 0xff).toString().padStart(2, "0")}`;
}
