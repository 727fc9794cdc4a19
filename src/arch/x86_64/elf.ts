// ELF64 x86-64 kernel images (vmlinux, the probe guest): headers, PT_LOAD segments and the
// notes that matter to us (the PVH entry, our secondary-vCPU entry). Parsing only; loader.ts
// copies segments into guest memory.
//
// Layouts: System V gABI ch.4 "ELF Header", ch.5 "Program Header", "Note Section"
// (and linux/elf.h: Elf64_Ehdr, Elf64_Phdr, Elf64_Nhdr).

import { KernelFormatError, hex } from "./errors.js";

/** gABI: e_ident[EI_MAG0..3] = 0x7f 'E' 'L' 'F'. */
export const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46] as const;
const EI_CLASS = 4;
const EI_DATA = 5;
const EI_VERSION = 6;
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const EV_CURRENT = 1;
/** gABI: e_type values. */
const ET_EXEC = 2;
const ET_DYN = 3;
/** gABI: e_machine EM_X86_64 = 62. */
export const EM_X86_64 = 62;
/** gABI: sizeof(Elf64_Ehdr) and sizeof(Elf64_Phdr). */
export const ELF64_EHDR_SIZE = 64;
export const ELF64_PHDR_SIZE = 56;
/** gABI: e_phnum == PN_XNUM (0xffff) means the count lives in section 0; no kernel does that. */
const PN_XNUM = 0xffff;

// Elf64_Ehdr field offsets (gABI ch.4).
const E_TYPE = 0x10;
const E_MACHINE = 0x12;
const E_ENTRY = 0x18;
const E_PHOFF = 0x20;
const E_PHENTSIZE = 0x36;
const E_PHNUM = 0x38;

// Elf64_Phdr field offsets (gABI ch.5).
const P_TYPE = 0x00;
const P_OFFSET = 0x08;
const P_VADDR = 0x10;
const P_PADDR = 0x18;
const P_FILESZ = 0x20;
const P_MEMSZ = 0x28;
const P_ALIGN = 0x30;

/** gABI: p_type values. */
export const PT_LOAD = 1;
export const PT_NOTE = 4;

/** Xen public/elfnote.h: XEN_ELFNOTE_PHYS32_ENTRY, the 32-bit PVH entry point (note name "Xen"). */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
export const XEN_NOTE_NAME = "Xen";
/** Typervisor's own note: desc = u64 LE 64-bit entry for secondary vCPUs (probe guest, guest/). */
export const TYPERVISOR_NOTE_NAME = "Typervisor";
export const TYPERVISOR_NOTE_AP_ENTRY = 1;

export interface ElfLoadSegment {
  /** Physical address the segment is loaded at (p_paddr). */
  paddr: number;
  vaddr: bigint;
  /** File offset and byte count copied from the image. */
  offset: number;
  filesz: number;
  /** Size in memory; bytes past filesz are zeroed (.bss). */
  memsz: number;
}

export interface ElfNote {
  name: string;
  type: number;
  desc: Uint8Array;
}

export interface ElfImage {
  /** e_entry as found in the header. */
  rawEntry: bigint;
  /** e_entry as a physical address inside a loaded segment, or undefined when it is not in one. */
  entry64: number | undefined;
  segments: ElfLoadSegment[];
  notes: ElfNote[];
  /** XEN_ELFNOTE_PHYS32_ENTRY, when present. */
  pvhEntry: number | undefined;
  /** Typervisor note type 1, when present. */
  apEntry: number | undefined;
}

export function hasElfMagic(image: Uint8Array): boolean {
  return image.length >= 4 && ELF_MAGIC.every((b, i) => image[i] === b);
}

function safe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new KernelFormatError(`ELF ${what} ${hex(v)} is beyond the addressable range of this loader`);
  }
  return Number(v);
}

/** Parses (and validates) an ELF64 x86-64 executable without touching guest memory. */
export function parseElf(image: Uint8Array): ElfImage {
  if (!hasElfMagic(image)) throw new KernelFormatError("not an ELF image: missing the \\x7fELF magic");
  if (image.length < ELF64_EHDR_SIZE) {
    throw new KernelFormatError(`truncated ELF: the ELF64 header needs ${ELF64_EHDR_SIZE} bytes, the file has ${image.length}`);
  }
  const cls = image[EI_CLASS]!;
  if (cls === ELFCLASS32) {
    throw new KernelFormatError("ELF32 image: only ELF64 kernels can take the 64-bit boot entry (ELFCLASS32 found)");
  }
  if (cls !== ELFCLASS64) throw new KernelFormatError(`ELF class ${cls} is not ELFCLASS64 (2)`);
  if (image[EI_DATA] !== ELFDATA2LSB) {
    throw new KernelFormatError(`ELF data encoding ${image[EI_DATA]} is not little-endian (ELFDATA2LSB = 1)`);
  }
  if (image[EI_VERSION] !== EV_CURRENT) {
    throw new KernelFormatError(`ELF identification version ${image[EI_VERSION]} is not EV_CURRENT (1)`);
  }
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const machine = dv.getUint16(E_MACHINE, true);
  if (machine !== EM_X86_64) {
    throw new KernelFormatError(`ELF machine ${machine} is not x86-64 (EM_X86_64 = ${EM_X86_64})`);
  }
  const type = dv.getUint16(E_TYPE, true);
  if (type === ET_DYN) {
    throw new KernelFormatError("ELF type ET_DYN is not supported: segments are loaded at their physical addresses, link the kernel as ET_EXEC");
  }
  if (type !== ET_EXEC) throw new KernelFormatError(`ELF type ${type} is not an executable (ET_EXEC = ${ET_EXEC})`);

  const rawEntry = dv.getBigUint64(E_ENTRY, true);
  const phoff = safe(dv.getBigUint64(E_PHOFF, true), "e_phoff");
  const phentsize = dv.getUint16(E_PHENTSIZE, true);
  const phnum = dv.getUint16(E_PHNUM, true);
  if (phnum === 0) throw new KernelFormatError("ELF image has no program headers, so nothing to load");
  if (phnum === PN_XNUM) throw new KernelFormatError("ELF image uses extended program header numbering (e_phnum = PN_XNUM), which kernels never do");
  if (phentsize !== ELF64_PHDR_SIZE) {
    throw new KernelFormatError(`ELF e_phentsize ${phentsize} is not sizeof(Elf64_Phdr) = ${ELF64_PHDR_SIZE}`);
  }
  if (phoff + phnum * phentsize > image.length) {
    throw new KernelFormatError(
      `truncated ELF: ${phnum} program headers at ${hex(phoff)} end at ${hex(phoff + phnum * phentsize)}, past the end of the ${image.length}-byte file`,
    );
  }

  const segments: ElfLoadSegment[] = [];
  const notes: ElfNote[] = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const ptype = dv.getUint32(ph + P_TYPE, true);
    if (ptype !== PT_LOAD && ptype !== PT_NOTE) continue;
    const offset = safe(dv.getBigUint64(ph + P_OFFSET, true), `program header ${i} p_offset`);
    const filesz = safe(dv.getBigUint64(ph + P_FILESZ, true), `program header ${i} p_filesz`);
    if (offset + filesz > image.length) {
      throw new KernelFormatError(
        `truncated ELF: program header ${i} needs file bytes ${hex(offset)}..${hex(offset + filesz)}, the file has ${hex(image.length)}`,
      );
    }
    if (ptype === PT_NOTE) {
      const align = dv.getBigUint64(ph + P_ALIGN, true) === 8n ? 8 : 4;
      notes.push(...parseNotes(image.subarray(offset, offset + filesz), align, i));
      continue;
    }
    const memsz = safe(dv.getBigUint64(ph + P_MEMSZ, true), `program header ${i} p_memsz`);
    const paddr = safe(dv.getBigUint64(ph + P_PADDR, true), `program header ${i} p_paddr`);
    const vaddr = dv.getBigUint64(ph + P_VADDR, true);
    if (filesz > memsz) {
      throw new KernelFormatError(`ELF PT_LOAD ${i} has p_filesz ${hex(filesz)} larger than p_memsz ${hex(memsz)}`);
    }
    if (memsz === 0) continue;
    if (!Number.isSafeInteger(paddr + memsz)) {
      throw new KernelFormatError(`ELF PT_LOAD ${i} at ${hex(paddr)} with size ${hex(memsz)} wraps the address space`);
    }
    segments.push({ paddr, vaddr, offset, filesz, memsz });
  }
  if (segments.length === 0) throw new KernelFormatError("ELF image has no PT_LOAD segment, so nothing to load");

  const sorted = [...segments].sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.paddr < prev.paddr + prev.memsz) {
      throw new KernelFormatError(
        `ELF PT_LOAD segments overlap: ${hex(prev.paddr)}+${hex(prev.memsz)} and ${hex(cur.paddr)}+${hex(cur.memsz)}`,
      );
    }
  }

  let pvhEntry: number | undefined;
  let apEntry: number | undefined;
  for (const n of notes) {
    if (n.name === XEN_NOTE_NAME && n.type === XEN_ELFNOTE_PHYS32_ENTRY) {
      // Xen public/elfnote.h: the value is a 32-bit physical address; Linux emits it as a
      // pointer-sized field (_ASM_PTR), so accept 4 or 8 bytes.
      const v = readLe(n.desc, "Xen PHYS32_ENTRY note");
      if (v > 0xffff_ffffn) throw new KernelFormatError(`PVH entry ${hex(v)} (Xen note 18) is not a 32-bit address`);
      pvhEntry = Number(v);
    } else if (n.name === TYPERVISOR_NOTE_NAME && n.type === TYPERVISOR_NOTE_AP_ENTRY) {
      if (n.desc.length !== 8) {
        throw new KernelFormatError(`Typervisor AP-entry note has a ${n.desc.length}-byte value, expected 8 (u64 LE)`);
      }
      apEntry = safe(readLe(n.desc, "Typervisor AP-entry note"), "Typervisor AP entry");
    }
  }

  return { rawEntry, entry64: entryAddress(rawEntry, segments), segments, notes, pvhEntry, apEntry };
}

/**
 * e_entry as a physical address: vmlinux and the probe guest put a physical address there
 * (Linux links `ENTRY(phys_startup_64)`); an ELF whose e_entry is virtual gets it translated
 * through the segment that holds it.
 */
function entryAddress(entry: bigint, segments: ElfLoadSegment[]): number | undefined {
  if (entry === 0n) return undefined;
  for (const s of segments) {
    if (entry >= BigInt(s.paddr) && entry < BigInt(s.paddr + s.filesz)) return Number(entry);
  }
  for (const s of segments) {
    if (entry >= s.vaddr && entry < s.vaddr + BigInt(s.filesz)) return s.paddr + Number(entry - s.vaddr);
  }
  return undefined;
}

function readLe(b: Uint8Array, what: string): bigint {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length === 4) return BigInt(dv.getUint32(0, true));
  if (b.length === 8) return dv.getBigUint64(0, true);
  throw new KernelFormatError(`${what} has a ${b.length}-byte value, expected 4 or 8`);
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** gABI "Note Section": {namesz, descsz, type, name (padded), desc (padded)} records. */
function parseNotes(seg: Uint8Array, align: number, phIndex: number): ElfNote[] {
  const dv = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
  const out: ElfNote[] = [];
  let off = 0;
  while (off + 12 <= seg.length) {
    const namesz = dv.getUint32(off, true);
    const descsz = dv.getUint32(off + 4, true);
    const type = dv.getUint32(off + 8, true);
    const nameOff = off + 12;
    const descOff = nameOff + alignUp(namesz, align);
    const next = descOff + alignUp(descsz, align);
    if (descOff + descsz > seg.length) {
      throw new KernelFormatError(
        `malformed ELF note in PT_NOTE ${phIndex} at offset ${off}: name ${namesz} + desc ${descsz} bytes run past the segment (${seg.length} bytes)`,
      );
    }
    let name = seg.subarray(nameOff, nameOff + namesz);
    if (name.length > 0 && name[name.length - 1] === 0) name = name.subarray(0, name.length - 1);
    out.push({ name: new TextDecoder().decode(name), type, desc: seg.subarray(descOff, descOff + descsz) });
    off = next;
  }
  return out;
}
