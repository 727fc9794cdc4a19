// Pure encoders/decoders between the typed forms in types.ts and the bytes KVM reads and writes.
// Offsets come from src/sys/kvm-abi.ts (checked against the headers by abi-check.c). Values are
// range-checked: a number that does not fit its C field is a RangeError, never a silent wrap.
import {
  KVM_FPU_FPR_BYTES, KVM_FPU_XMM_BYTES, KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO, KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE, KVM_IRQ_ROUTING_IRQCHIP,
  KVM_IRQ_ROUTING_MSI, KVM_SREGS_INTERRUPT_BITMAP_LEN, kvm_cpuid2, kvm_cpuid_entry2, kvm_dtable, kvm_fpu,
  kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irq_routing_entry, kvm_irqfd, kvm_mp_state, kvm_msi,
  kvm_msr_entry, kvm_msr_list, kvm_msrs, kvm_pit_config, kvm_regs, kvm_segment, kvm_sregs,
  kvm_userspace_memory_region,
} from "../sys/kvm-abi.js";
import type {
  CpuidEntry, DTable, Fpu, GsiRoute, IoEventFd, IrqFd, MsrEntry, Regs, Segment, Sregs, UserMemoryRegion,
} from "./types.js";

const U64_MAX = (1n << 64n) - 1n;

function dataView(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function need(buf: Uint8Array, size: number, what: string): DataView {
  if (buf.byteLength < size) throw new RangeError(`${what}: buffer of ${buf.byteLength} bytes, need ${size}`);
  return dataView(buf);
}

function uint(name: string, value: number, bits: 8 | 16 | 32): number {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new RangeError(`${name} = ${value} does not fit an unsigned ${bits}-bit field`);
  }
  return value;
}

function s32(name: string, value: number): number {
  if (!Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) {
    throw new RangeError(`${name} = ${value} does not fit a signed 32-bit field`);
  }
  return value;
}

function u64(name: string, value: bigint): bigint {
  if (value < 0n || value > U64_MAX) throw new RangeError(`${name} = ${value} does not fit an unsigned 64-bit field`);
  return value;
}

const setU8 = (v: DataView, off: number, name: string, x: number): void => v.setUint8(off, uint(name, x, 8));
const setU16 = (v: DataView, off: number, name: string, x: number): void => v.setUint16(off, uint(name, x, 16), true);
const setU32 = (v: DataView, off: number, name: string, x: number): void => v.setUint32(off, uint(name, x, 32), true);
const setU64 = (v: DataView, off: number, name: string, x: bigint): void => v.setBigUint64(off, u64(name, x), true);

// ---------------------------------------------------------------------------------------------
// asm/kvm.h: struct kvm_regs
// ---------------------------------------------------------------------------------------------

const REG_NAMES = [
  "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
  "rip", "rflags",
] as const satisfies readonly (keyof Regs & keyof typeof kvm_regs.fields)[];

export function encodeRegs(r: Regs): Uint8Array {
  const buf = new Uint8Array(kvm_regs.size);
  const v = dataView(buf);
  for (const name of REG_NAMES) setU64(v, kvm_regs.fields[name], `regs.${name}`, r[name]);
  return buf;
}

export function decodeRegs(buf: Uint8Array): Regs {
  const v = need(buf, kvm_regs.size, "kvm_regs");
  const r = {} as Regs;
  for (const name of REG_NAMES) r[name] = v.getBigUint64(kvm_regs.fields[name], true);
  return r;
}

// ---------------------------------------------------------------------------------------------
// asm/kvm.h: struct kvm_segment, kvm_dtable, kvm_sregs
// ---------------------------------------------------------------------------------------------

const SEGMENT_U8 = ["type", "present", "dpl", "db", "s", "l", "g", "avl", "unusable"] as const;

function putSegment(v: DataView, at: number, name: string, s: Segment): void {
  const f = kvm_segment.fields;
  setU64(v, at + f.base, `${name}.base`, s.base);
  setU32(v, at + f.limit, `${name}.limit`, s.limit);
  setU16(v, at + f.selector, `${name}.selector`, s.selector);
  for (const k of SEGMENT_U8) setU8(v, at + f[k], `${name}.${k}`, s[k]);
}

function getSegment(v: DataView, at: number): Segment {
  const f = kvm_segment.fields;
  return {
    base: v.getBigUint64(at + f.base, true),
    limit: v.getUint32(at + f.limit, true),
    selector: v.getUint16(at + f.selector, true),
    type: v.getUint8(at + f.type),
    present: v.getUint8(at + f.present),
    dpl: v.getUint8(at + f.dpl),
    db: v.getUint8(at + f.db),
    s: v.getUint8(at + f.s),
    l: v.getUint8(at + f.l),
    g: v.getUint8(at + f.g),
    avl: v.getUint8(at + f.avl),
    unusable: v.getUint8(at + f.unusable),
  };
}

function putDTable(v: DataView, at: number, name: string, d: DTable): void {
  setU64(v, at + kvm_dtable.fields.base, `${name}.base`, d.base);
  setU16(v, at + kvm_dtable.fields.limit, `${name}.limit`, d.limit);
}

function getDTable(v: DataView, at: number): DTable {
  return { base: v.getBigUint64(at + kvm_dtable.fields.base, true), limit: v.getUint16(at + kvm_dtable.fields.limit, true) };
}

const SEGMENTS = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;
const DTABLES = ["gdt", "idt"] as const;
const CONTROL = ["cr0", "cr2", "cr3", "cr4", "cr8", "efer"] as const;

export function encodeSregs(s: Sregs): Uint8Array {
  const buf = new Uint8Array(kvm_sregs.size);
  const v = dataView(buf);
  const f = kvm_sregs.fields;
  for (const k of SEGMENTS) putSegment(v, f[k], `sregs.${k}`, s[k]);
  for (const k of DTABLES) putDTable(v, f[k], `sregs.${k}`, s[k]);
  for (const k of CONTROL) setU64(v, f[k], `sregs.${k}`, s[k]);
  setU64(v, f.apic_base, "sregs.apic_base", s.apicBase);
  if (s.interruptBitmap.length > KVM_SREGS_INTERRUPT_BITMAP_LEN) {
    throw new RangeError(`sregs.interruptBitmap has ${s.interruptBitmap.length} words, at most ${KVM_SREGS_INTERRUPT_BITMAP_LEN}`);
  }
  s.interruptBitmap.forEach((w, i) => setU64(v, f.interrupt_bitmap + 8 * i, `sregs.interruptBitmap[${i}]`, w));
  return buf;
}

export function decodeSregs(buf: Uint8Array): Sregs {
  const v = need(buf, kvm_sregs.size, "kvm_sregs");
  const f = kvm_sregs.fields;
  const seg = (k: (typeof SEGMENTS)[number]): Segment => getSegment(v, f[k]);
  return {
    cs: seg("cs"), ds: seg("ds"), es: seg("es"), fs: seg("fs"), gs: seg("gs"), ss: seg("ss"), tr: seg("tr"), ldt: seg("ldt"),
    gdt: getDTable(v, f.gdt),
    idt: getDTable(v, f.idt),
    cr0: v.getBigUint64(f.cr0, true),
    cr2: v.getBigUint64(f.cr2, true),
    cr3: v.getBigUint64(f.cr3, true),
    cr4: v.getBigUint64(f.cr4, true),
    cr8: v.getBigUint64(f.cr8, true),
    efer: v.getBigUint64(f.efer, true),
    apicBase: v.getBigUint64(f.apic_base, true),
    interruptBitmap: Array.from({ length: KVM_SREGS_INTERRUPT_BITMAP_LEN }, (_, i) => v.getBigUint64(f.interrupt_bitmap + 8 * i, true)),
  };
}

// ---------------------------------------------------------------------------------------------
// asm/kvm.h: struct kvm_fpu
// ---------------------------------------------------------------------------------------------

export function encodeFpu(fpu: Fpu): Uint8Array {
  const buf = new Uint8Array(kvm_fpu.size);
  const v = dataView(buf);
  const f = kvm_fpu.fields;
  setU16(v, f.fcw, "fpu.fcw", fpu.fcw);
  setU16(v, f.fsw, "fpu.fsw", fpu.fsw);
  setU8(v, f.ftwx, "fpu.ftwx", fpu.ftwx);
  setU16(v, f.last_opcode, "fpu.lastOpcode", fpu.lastOpcode);
  setU64(v, f.last_ip, "fpu.lastIp", fpu.lastIp);
  setU64(v, f.last_dp, "fpu.lastDp", fpu.lastDp);
  setU32(v, f.mxcsr, "fpu.mxcsr", fpu.mxcsr);
  if (fpu.fpr !== undefined) {
    if (fpu.fpr.byteLength !== KVM_FPU_FPR_BYTES) throw new RangeError(`fpu.fpr is ${fpu.fpr.byteLength} bytes, must be ${KVM_FPU_FPR_BYTES}`);
    buf.set(fpu.fpr, f.fpr);
  }
  if (fpu.xmm !== undefined) {
    if (fpu.xmm.byteLength !== KVM_FPU_XMM_BYTES) throw new RangeError(`fpu.xmm is ${fpu.xmm.byteLength} bytes, must be ${KVM_FPU_XMM_BYTES}`);
    buf.set(fpu.xmm, f.xmm);
  }
  return buf;
}

export function decodeFpu(buf: Uint8Array): Fpu {
  const v = need(buf, kvm_fpu.size, "kvm_fpu");
  const f = kvm_fpu.fields;
  return {
    fcw: v.getUint16(f.fcw, true),
    fsw: v.getUint16(f.fsw, true),
    ftwx: v.getUint8(f.ftwx),
    lastOpcode: v.getUint16(f.last_opcode, true),
    lastIp: v.getBigUint64(f.last_ip, true),
    lastDp: v.getBigUint64(f.last_dp, true),
    mxcsr: v.getUint32(f.mxcsr, true),
    fpr: buf.slice(f.fpr, f.fpr + KVM_FPU_FPR_BYTES),
    xmm: buf.slice(f.xmm, f.xmm + KVM_FPU_XMM_BYTES),
  };
}

// ---------------------------------------------------------------------------------------------
// asm/kvm.h: struct kvm_msrs + kvm_msr_entry, kvm_msr_list
// ---------------------------------------------------------------------------------------------

export function encodeMsrs(entries: readonly MsrEntry[]): Uint8Array {
  const buf = new Uint8Array(kvm_msrs.size + entries.length * kvm_msr_entry.size);
  const v = dataView(buf);
  setU32(v, kvm_msrs.fields.nmsrs, "msrs.nmsrs", entries.length);
  entries.forEach((e, i) => {
    const at = kvm_msrs.fields.entries + i * kvm_msr_entry.size;
    setU32(v, at + kvm_msr_entry.fields.index, `msrs[${i}].index`, e.index);
    setU64(v, at + kvm_msr_entry.fields.data, `msrs[${i}].data`, e.data);
  });
  return buf;
}

/** The first `count` entries (default: nmsrs) of a kvm_msrs buffer. */
export function decodeMsrs(buf: Uint8Array, count?: number): MsrEntry[] {
  const v = need(buf, kvm_msrs.size, "kvm_msrs");
  const n = count ?? v.getUint32(kvm_msrs.fields.nmsrs, true);
  need(buf, kvm_msrs.size + n * kvm_msr_entry.size, `kvm_msrs with ${n} entries`);
  return Array.from({ length: n }, (_, i) => {
    const at = kvm_msrs.fields.entries + i * kvm_msr_entry.size;
    return { index: v.getUint32(at + kvm_msr_entry.fields.index, true), data: v.getBigUint64(at + kvm_msr_entry.fields.data, true) };
  });
}

/** An empty kvm_msr_list with room for `capacity` indices (nmsrs = capacity). */
export function encodeMsrList(capacity: number): Uint8Array {
  const buf = new Uint8Array(kvm_msr_list.size + 4 * capacity);
  setU32(dataView(buf), kvm_msr_list.fields.nmsrs, "msr_list.nmsrs", capacity);
  return buf;
}

export function decodeMsrList(buf: Uint8Array): number[] {
  const v = need(buf, kvm_msr_list.size, "kvm_msr_list");
  const n = v.getUint32(kvm_msr_list.fields.nmsrs, true);
  need(buf, kvm_msr_list.size + 4 * n, `kvm_msr_list with ${n} indices`);
  return Array.from({ length: n }, (_, i) => v.getUint32(kvm_msr_list.fields.indices + 4 * i, true));
}

// ---------------------------------------------------------------------------------------------
// asm/kvm.h: struct kvm_cpuid2 + kvm_cpuid_entry2
// ---------------------------------------------------------------------------------------------

const CPUID_FIELDS = ["function", "index", "flags", "eax", "ebx", "ecx", "edx"] as const;

/** A kvm_cpuid2 holding `entries`, with room for `capacity` entries in all (nent = capacity when empty). */
export function encodeCpuid2(entries: readonly CpuidEntry[], capacity = entries.length): Uint8Array {
  if (capacity < entries.length) throw new RangeError(`cpuid2 capacity ${capacity} < ${entries.length} entries`);
  const buf = new Uint8Array(kvm_cpuid2.size + capacity * kvm_cpuid_entry2.size);
  const v = dataView(buf);
  setU32(v, kvm_cpuid2.fields.nent, "cpuid2.nent", entries.length === 0 ? capacity : entries.length);
  entries.forEach((e, i) => {
    const at = kvm_cpuid2.fields.entries + i * kvm_cpuid_entry2.size;
    for (const k of CPUID_FIELDS) setU32(v, at + kvm_cpuid_entry2.fields[k], `cpuid[${i}].${k}`, e[k]);
  });
  return buf;
}

export function decodeCpuid2(buf: Uint8Array): CpuidEntry[] {
  const v = need(buf, kvm_cpuid2.size, "kvm_cpuid2");
  const n = v.getUint32(kvm_cpuid2.fields.nent, true);
  need(buf, kvm_cpuid2.size + n * kvm_cpuid_entry2.size, `kvm_cpuid2 with ${n} entries`);
  return Array.from({ length: n }, (_, i) => {
    const at = kvm_cpuid2.fields.entries + i * kvm_cpuid_entry2.size;
    const e = {} as CpuidEntry;
    for (const k of CPUID_FIELDS) e[k] = v.getUint32(at + kvm_cpuid_entry2.fields[k], true);
    return e;
  });
}

// ---------------------------------------------------------------------------------------------
// linux/kvm.h: VM-level argument structs
// ---------------------------------------------------------------------------------------------

export function encodeUserMemoryRegion(r: UserMemoryRegion): Uint8Array {
  const buf = new Uint8Array(kvm_userspace_memory_region.size);
  const v = dataView(buf);
  const f = kvm_userspace_memory_region.fields;
  setU32(v, f.slot, "region.slot", r.slot);
  setU32(v, f.flags, "region.flags", r.flags);
  setU64(v, f.guest_phys_addr, "region.guestPhysAddr", r.guestPhysAddr);
  setU64(v, f.memory_size, "region.memorySize", r.memorySize);
  setU64(v, f.userspace_addr, "region.userspaceAddr", r.userspaceAddr);
  return buf;
}

export function decodeUserMemoryRegion(buf: Uint8Array): UserMemoryRegion {
  const v = need(buf, kvm_userspace_memory_region.size, "kvm_userspace_memory_region");
  const f = kvm_userspace_memory_region.fields;
  return {
    slot: v.getUint32(f.slot, true),
    flags: v.getUint32(f.flags, true),
    guestPhysAddr: v.getBigUint64(f.guest_phys_addr, true),
    memorySize: v.getBigUint64(f.memory_size, true),
    userspaceAddr: v.getBigUint64(f.userspace_addr, true),
  };
}

const IOEVENTFD_LENGTHS: ReadonlySet<number> = new Set([0, 1, 2, 4, 8]);

export function encodeIoEventFd(e: IoEventFd): Uint8Array {
  if (!IOEVENTFD_LENGTHS.has(e.len)) throw new RangeError(`ioeventfd.len = ${e.len}; must be 0, 1, 2, 4 or 8`);
  const buf = new Uint8Array(kvm_ioeventfd.size);
  const v = dataView(buf);
  const f = kvm_ioeventfd.fields;
  let flags = 0;
  if (e.datamatch !== undefined) {
    flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    setU64(v, f.datamatch, "ioeventfd.datamatch", e.datamatch);
  }
  if (e.pio === true) flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (e.deassign === true) flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  setU64(v, f.addr, "ioeventfd.addr", e.addr);
  setU32(v, f.len, "ioeventfd.len", e.len);
  v.setInt32(f.fd, s32("ioeventfd.fd", e.fd), true);
  setU32(v, f.flags, "ioeventfd.flags", flags);
  return buf;
}

export function encodeIrqFd(e: IrqFd): Uint8Array {
  const buf = new Uint8Array(kvm_irqfd.size);
  const v = dataView(buf);
  const f = kvm_irqfd.fields;
  let flags = 0;
  if (e.deassign === true) flags |= KVM_IRQFD_FLAG_DEASSIGN;
  if (e.resampleFd !== undefined) {
    flags |= KVM_IRQFD_FLAG_RESAMPLE;
    setU32(v, f.resamplefd, "irqfd.resampleFd", e.resampleFd);
  }
  setU32(v, f.fd, "irqfd.fd", e.fd);
  setU32(v, f.gsi, "irqfd.gsi", e.gsi);
  setU32(v, f.flags, "irqfd.flags", flags);
  return buf;
}

export function encodeGsiRouting(routes: readonly GsiRoute[]): Uint8Array {
  const buf = new Uint8Array(kvm_irq_routing.size + routes.length * kvm_irq_routing_entry.size);
  const v = dataView(buf);
  setU32(v, kvm_irq_routing.fields.nr, "irq_routing.nr", routes.length);
  const f = kvm_irq_routing_entry.fields;
  routes.forEach((r, i) => {
    const at = kvm_irq_routing.fields.entries + i * kvm_irq_routing_entry.size;
    setU32(v, at + f.gsi, `routes[${i}].gsi`, r.gsi);
    if (r.kind === "irqchip") {
      setU32(v, at + f.type, `routes[${i}].type`, KVM_IRQ_ROUTING_IRQCHIP);
      setU32(v, at + f["u.irqchip.irqchip"], `routes[${i}].irqchip`, r.irqchip);
      setU32(v, at + f["u.irqchip.pin"], `routes[${i}].pin`, r.pin);
    } else {
      setU32(v, at + f.type, `routes[${i}].type`, KVM_IRQ_ROUTING_MSI);
      setU32(v, at + f["u.msi.address_lo"], `routes[${i}].addressLo`, r.addressLo);
      setU32(v, at + f["u.msi.address_hi"], `routes[${i}].addressHi`, r.addressHi);
      setU32(v, at + f["u.msi.data"], `routes[${i}].data`, r.data);
    }
  });
  return buf;
}

export function decodeGsiRouting(buf: Uint8Array): GsiRoute[] {
  const v = need(buf, kvm_irq_routing.size, "kvm_irq_routing");
  const n = v.getUint32(kvm_irq_routing.fields.nr, true);
  need(buf, kvm_irq_routing.size + n * kvm_irq_routing_entry.size, `kvm_irq_routing with ${n} entries`);
  const f = kvm_irq_routing_entry.fields;
  return Array.from({ length: n }, (_, i): GsiRoute => {
    const at = kvm_irq_routing.fields.entries + i * kvm_irq_routing_entry.size;
    const gsi = v.getUint32(at + f.gsi, true);
    const type = v.getUint32(at + f.type, true);
    if (type === KVM_IRQ_ROUTING_IRQCHIP) {
      return { gsi, kind: "irqchip", irqchip: v.getUint32(at + f["u.irqchip.irqchip"], true), pin: v.getUint32(at + f["u.irqchip.pin"], true) };
    }
    if (type === KVM_IRQ_ROUTING_MSI) {
      return {
        gsi, kind: "msi",
        addressLo: v.getUint32(at + f["u.msi.address_lo"], true),
        addressHi: v.getUint32(at + f["u.msi.address_hi"], true),
        data: v.getUint32(at + f["u.msi.data"], true),
      };
    }
    throw new RangeError(`irq routing entry ${i} has type ${type}, neither irqchip nor msi`);
  });
}

export function encodePitConfig(flags: number): Uint8Array {
  const buf = new Uint8Array(kvm_pit_config.size);
  setU32(dataView(buf), kvm_pit_config.fields.flags, "pit_config.flags", flags);
  return buf;
}

export function encodeMpState(state: number): Uint8Array {
  const buf = new Uint8Array(kvm_mp_state.size);
  setU32(dataView(buf), kvm_mp_state.fields.mp_state, "mp_state", state);
  return buf;
}

export function decodeMpState(buf: Uint8Array): number {
  return need(buf, kvm_mp_state.size, "kvm_mp_state").getUint32(kvm_mp_state.fields.mp_state, true);
}

export function encodeIrqLevel(irq: number, level: boolean): Uint8Array {
  const buf = new Uint8Array(kvm_irq_level.size);
  const v = dataView(buf);
  setU32(v, kvm_irq_level.fields.irq, "irq_level.irq", irq);
  setU32(v, kvm_irq_level.fields.level, "irq_level.level", level ? 1 : 0);
  return buf;
}

export function encodeMsi(addressLo: number, addressHi: number, data: number): Uint8Array {
  const buf = new Uint8Array(kvm_msi.size);
  const v = dataView(buf);
  setU32(v, kvm_msi.fields.address_lo, "msi.addressLo", addressLo);
  setU32(v, kvm_msi.fields.address_hi, "msi.addressHi", addressHi);
  setU32(v, kvm_msi.fields.data, "msi.data", data);
  return buf;
}

/** A __u64 argument (KVM_SET_IDENTITY_MAP_ADDR). */
export function encodeU64(name: string, value: bigint): Uint8Array {
  const buf = new Uint8Array(8);
  setU64(dataView(buf), 0, name, value);
  return buf;
}
