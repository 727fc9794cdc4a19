// The boot GDT and the kvm_segment values that match it (Intel SDM Vol.3 §3.4.5 "Segment
// Descriptors", §7.2.3 "TSS Descriptor in 64-bit mode").
//
// Selectors follow boot.rst ("64-bit Boot Protocol": __BOOT_CS = 0x10, __BOOT_DS = 0x18) rather
// than Firecracker's 0x08/0x10, and slot 1 holds the 32-bit flat code segment a PVH entry needs
// (Xen start_info.h: "CS: must be a 32-bit read/execute code segment with a base of 0 and a limit
// of 0xFFFFFFFF").

import type { GuestMemory } from "../../memory/guest-memory.js";
import type { DTable, Segment } from "../../kvm/types.js";
import { BOOT_GDT_MAX_SIZE, BOOT_GDT_START, BOOT_IDT_START } from "./layout.js";

/**
 * Descriptor flags as Firecracker writes them: bits 0–7 = access byte (P, DPL, S, type),
 * bits 12–15 = G, D/B, L, AVL (SDM Vol.3 Fig. 3-8).
 */
/** Present, DPL 0, code, execute/read, accessed; G=1, L=1: 64-bit flat code. */
export const GDT_CODE64_FLAGS = 0xa09b;
/** Present, DPL 0, code, execute/read, accessed; G=1, D=1: 32-bit flat code (PVH entry). */
export const GDT_CODE32_FLAGS = 0xc09b;
/** Present, DPL 0, data, read/write, accessed; G=1, B=1: flat data. */
export const GDT_DATA_FLAGS = 0xc093;
/** Present, system, type 0xB (busy 32/64-bit TSS), G=0 (byte-granular limit). */
export const GDT_TSS_FLAGS = 0x008b;
/** start_info.h: "TR: must be a 32-bit TSS (active) with a base of '0' and a limit of '0x67'". */
export const TSS_LIMIT = 0x67;

export const GDT_INDEX_CODE32 = 1;
export const GDT_INDEX_CODE64 = 2;
export const GDT_INDEX_DATA = 3;
export const GDT_INDEX_TSS = 4;
/** The 64-bit TSS descriptor is 16 bytes: slots 4 and 5 (SDM Vol.3 §7.2.3). */
const GDT_SLOTS = 6;

/** boot.rst: __BOOT_CS / __BOOT_DS. */
export const BOOT_CS = GDT_INDEX_CODE64 * 8;
export const BOOT_DS = GDT_INDEX_DATA * 8;
export const BOOT_CS32 = GDT_INDEX_CODE32 * 8;
export const BOOT_TSS = GDT_INDEX_TSS * 8;

/** Encodes one 8-byte segment descriptor (SDM Vol.3 Fig. 3-8). */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit >>> 0);
  const f = BigInt(flags & 0xf0ff);
  return (
    ((b & 0xff00_0000n) << 32n) | // base 31:24 -> bits 63:56
    (f << 40n) | // access byte -> 47:40, G/DB/L/AVL -> 55:52
    ((l & 0x000f_0000n) << 32n) | // limit 19:16 -> bits 51:48
    ((b & 0x00ff_ffffn) << 16n) | // base 23:0 -> bits 39:16
    (l & 0xffffn) // limit 15:0
  );
}

/** Decodes a descriptor into the kvm_segment KVM_SET_SREGS wants (limit scaled by G, as the CPU caches it). */
export function segmentFromGdtEntry(entry: bigint, index: number): Segment {
  const bit = (n: bigint): number => Number((entry >> n) & 1n);
  const base = ((entry >> 32n) & 0xff00_0000n) | ((entry >> 16n) & 0x00ff_ffffn);
  let limit = Number(((entry >> 32n) & 0x000f_0000n) | (entry & 0xffffn));
  const g = bit(55n);
  if (g === 1) limit = (limit * 0x1000 + 0xfff) >>> 0;
  const present = bit(47n);
  return {
    base,
    limit,
    selector: index * 8,
    type: Number((entry >> 40n) & 0xfn),
    present,
    dpl: Number((entry >> 45n) & 3n),
    db: bit(54n),
    s: bit(44n),
    l: bit(53n),
    g,
    avl: bit(52n),
    unusable: present === 0 ? 1 : 0,
  };
}

/** The boot GDT: index → descriptor (the TSS's upper half, slot 5, is zero: base 63:32 = 0). */
export function bootGdt(): bigint[] {
  const gdt = new Array<bigint>(GDT_SLOTS).fill(0n);
  gdt[GDT_INDEX_CODE32] = gdtEntry(GDT_CODE32_FLAGS, 0, 0xfffff);
  gdt[GDT_INDEX_CODE64] = gdtEntry(GDT_CODE64_FLAGS, 0, 0xfffff);
  gdt[GDT_INDEX_DATA] = gdtEntry(GDT_DATA_FLAGS, 0, 0xfffff);
  gdt[GDT_INDEX_TSS] = gdtEntry(GDT_TSS_FLAGS, 0, TSS_LIMIT);
  return gdt;
}

/** Writes the boot GDT at BOOT_GDT_START; returns the GDTR value. */
export function writeGdt(mem: GuestMemory, at = BOOT_GDT_START): DTable {
  const gdt = bootGdt();
  if (gdt.length * 8 > BOOT_GDT_MAX_SIZE) throw new RangeError("boot GDT outgrew its slot in layout.ts");
  gdt.forEach((e, i) => mem.writeU64(at + i * 8, e));
  return { base: BigInt(at), limit: gdt.length * 8 - 1 };
}

/** Writes an empty IDT (one zero gate, limit 7, as Firecracker); returns the IDTR value. */
export function writeIdt(mem: GuestMemory, at = BOOT_IDT_START): DTable {
  mem.writeU64(at, 0n);
  return { base: BigInt(at), limit: 7 };
}

/** The segment registers for each boot mode, derived from the boot GDT. */
export function bootSegments(): { code64: Segment; code32: Segment; data: Segment; tss: Segment } {
  const gdt = bootGdt();
  return {
    code64: segmentFromGdtEntry(gdt[GDT_INDEX_CODE64]!, GDT_INDEX_CODE64),
    code32: segmentFromGdtEntry(gdt[GDT_INDEX_CODE32]!, GDT_INDEX_CODE32),
    data: segmentFromGdtEntry(gdt[GDT_INDEX_DATA]!, GDT_INDEX_DATA),
    tss: segmentFromGdtEntry(gdt[GDT_INDEX_TSS]!, GDT_INDEX_TSS),
  };
}
