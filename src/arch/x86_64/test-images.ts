// Synthetic kernel images for the unit tests: small ELF64 and bzImage files built byte by byte
// from the same spec offsets the parsers use. Not a test file itself (no `.test.` in the name).

import { EM_X86_64, PT_LOAD, PT_NOTE } from "./elf.js";
import { XLF_CAN_BE_LOADED_ABOVE_4G, XLF_KERNEL_64 } from "./bzimage.js";

export interface TestSegment {
  paddr: number;
  vaddr?: bigint;
  data: Uint8Array;
  memsz?: number;
}

export interface TestNote {
  name: string;
  type: number;
  desc: Uint8Array;
}

export interface TestElf {
  entry: bigint | number;
  segments: TestSegment[];
  notes?: TestNote[];
  noteAlign?: 4 | 8;
  elfClass?: number;
  machine?: number;
  type?: number;
  dataEncoding?: number;
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

export function u64le(v: number | bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}

export function u32le(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

export function encodeNotes(notes: TestNote[], a: number): Uint8Array {
  const name = (n: TestNote): Uint8Array => new TextEncoder().encode(n.name + "\0");
  const size = notes.reduce((s, n) => s + 12 + align(name(n).length, a) + align(n.desc.length, a), 0);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let off = 0;
  for (const n of notes) {
    const nm = name(n);
    dv.setUint32(off, nm.length, true);
    dv.setUint32(off + 4, n.desc.length, true);
    dv.setUint32(off + 8, n.type, true);
    out.set(nm, off + 12);
    const d = off + 12 + align(nm.length, a);
    out.set(n.desc, d);
    off = d + align(n.desc.length, a);
  }
  return out;
}

/** gABI ELF64 executable: header, program headers, then segment bytes and the note segment. */
export function buildElf(spec: TestElf): Uint8Array {
  const notes = spec.notes && spec.notes.length > 0 ? encodeNotes(spec.notes, spec.noteAlign ?? 4) : undefined;
  const phnum = spec.segments.length + (notes ? 1 : 0);
  let off = align(64 + phnum * 56, 16);
  const placed = spec.segments.map((s) => {
    const at = off;
    off = align(off + s.data.length, 16);
    return at;
  });
  const noteAt = off;
  if (notes) off += notes.length;
  const out = new Uint8Array(off);
  const dv = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, spec.elfClass ?? 2, spec.dataEncoding ?? 1, 1]);
  dv.setUint16(0x10, spec.type ?? 2, true);
  dv.setUint16(0x12, spec.machine ?? EM_X86_64, true);
  dv.setUint32(0x14, 1, true);
  dv.setBigUint64(0x18, BigInt(spec.entry), true);
  dv.setBigUint64(0x20, 64n, true);
  dv.setUint16(0x34, 64, true);
  dv.setUint16(0x36, 56, true);
  dv.setUint16(0x38, phnum, true);
  spec.segments.forEach((s, i) => {
    const ph = 64 + i * 56;
    dv.setUint32(ph, PT_LOAD, true);
    dv.setUint32(ph + 4, 7, true);
    dv.setBigUint64(ph + 0x08, BigInt(placed[i]!), true);
    dv.setBigUint64(ph + 0x10, s.vaddr ?? BigInt(s.paddr), true);
    dv.setBigUint64(ph + 0x18, BigInt(s.paddr), true);
    dv.setBigUint64(ph + 0x20, BigInt(s.data.length), true);
    dv.setBigUint64(ph + 0x28, BigInt(s.memsz ?? s.data.length), true);
    dv.setBigUint64(ph + 0x30, 0x1000n, true);
    out.set(s.data, placed[i]!);
  });
  if (notes) {
    const ph = 64 + spec.segments.length * 56;
    dv.setUint32(ph, PT_NOTE, true);
    dv.setBigUint64(ph + 0x08, BigInt(noteAt), true);
    dv.setBigUint64(ph + 0x20, BigInt(notes.length), true);
    dv.setBigUint64(ph + 0x28, BigInt(notes.length), true);
    dv.setBigUint64(ph + 0x30, BigInt(spec.noteAlign ?? 4), true);
    out.set(notes, noteAt);
  }
  return out;
}

export interface TestBzImage {
  setupSects?: number;
  version?: number;
  xloadflags?: number;
  relocatable?: boolean;
  kernelAlignment?: number;
  prefAddress?: number;
  initSize?: number;
  cmdlineSize?: number;
  initrdAddrMax?: number;
  loadflags?: number;
  bootFlag?: number;
  pmCode?: Uint8Array;
  /** Header end byte at 0x201 (boot.rst: header ends at 0x202 + this). */
  jumpOffset?: number;
}

/** boot.rst-shaped bzImage: boot sector + setup sectors (header at 0x1f1), then protected-mode code. */
export function buildBzImage(spec: TestBzImage = {}): Uint8Array {
  const setupSects = spec.setupSects ?? 4;
  const realSects = setupSects === 0 ? 4 : setupSects;
  const pm = spec.pmCode ?? new Uint8Array(0x3000).map((_, i) => (i * 7 + 3) & 0xff);
  const pmOffset = (realSects + 1) * 512;
  const out = new Uint8Array(pmOffset + pm.length);
  const dv = new DataView(out.buffer);
  out[0x1f1] = setupSects;
  dv.setUint32(0x1f4, Math.ceil(pm.length / 16), true); // syssize
  dv.setUint16(0x1fe, spec.bootFlag ?? 0xaa55, true);
  out[0x200] = 0xeb;
  out[0x201] = spec.jumpOffset ?? 0x6a; // header ends at 0x26c, as in 6.x kernels
  out.set([0x48, 0x64, 0x72, 0x53], 0x202); // "HdrS"
  dv.setUint16(0x206, spec.version ?? 0x20f, true);
  out[0x211] = spec.loadflags ?? 0x01;
  dv.setUint32(0x214, 0x100000, true);
  dv.setUint32(0x22c, spec.initrdAddrMax ?? 0x7fffffff, true);
  dv.setUint32(0x230, spec.kernelAlignment ?? 0x200000, true);
  out[0x234] = spec.relocatable === false ? 0 : 1;
  out[0x235] = 21;
  dv.setUint16(0x236, spec.xloadflags ?? XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, true);
  dv.setUint32(0x238, spec.cmdlineSize ?? 0x7ff, true);
  dv.setBigUint64(0x258, BigInt(spec.prefAddress ?? 0x1000000), true);
  dv.setUint32(0x260, spec.initSize ?? 0x80000, true);
  out.set(pm, pmOffset);
  return out;
}
