// Round trips of the pure struct codecs, and spot checks that fields land at the offsets from
// kvm-abi.ts (themselves proven against the headers by the ABI check).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO, KVM_IRQFD_FLAG_RESAMPLE,
  KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_PIT_SPEAKER_DUMMY, kvm_cpuid2, kvm_cpuid_entry2, kvm_fpu,
  kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irq_routing_entry, kvm_irqfd, kvm_msi, kvm_msr_entry,
  kvm_msrs, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region,
} from "../sys/kvm-abi.js";
import * as s from "./structs.js";
import type { Fpu, Regs, Segment, Sregs } from "./types.js";

const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

test("kvm_regs round trip; rip and rflags at their offsets", () => {
  const names = Object.keys(kvm_regs.fields) as (keyof Regs)[];
  const regs = Object.fromEntries(names.map((n, i) => [n, 0x0101_0101_0101_0101n * BigInt(i + 1)])) as unknown as Regs;
  regs.rflags = 0x2n;
  regs.rip = 0xffff_ffff_8100_0000n;
  const buf = s.encodeRegs(regs);
  assert.equal(buf.byteLength, kvm_regs.size);
  assert.equal(dv(buf).getBigUint64(kvm_regs.fields.rip, true), 0xffff_ffff_8100_0000n);
  assert.equal(dv(buf).getBigUint64(kvm_regs.fields.rflags, true), 2n);
  assert.deepEqual(s.decodeRegs(buf), regs);
  assert.throws(() => s.encodeRegs({ ...regs, rax: -1n }), /regs.rax/);
  assert.throws(() => s.encodeRegs({ ...regs, rax: 1n << 64n }), RangeError);
});

const seg = (selector: number, type: number): Segment => ({
  base: 0n, limit: 0xffff_ffff, selector, type, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0,
});

test("kvm_sregs round trip with 64-bit segments, tables, control registers and the interrupt bitmap", () => {
  const sregs: Sregs = {
    cs: seg(0x8, 0xb), ds: seg(0x10, 3), es: seg(0x10, 3), fs: seg(0x10, 3), gs: seg(0x10, 3), ss: seg(0x10, 3),
    tr: { ...seg(0x18, 0xb), s: 0, l: 0, g: 0, limit: 0x2067, base: 0x5000n },
    ldt: { ...seg(0, 2), unusable: 1, present: 0 },
    gdt: { base: 0x500n, limit: 0x1f }, idt: { base: 0x520n, limit: 0xfff },
    cr0: 0x8000_0011n, cr2: 0n, cr3: 0x9000n, cr4: 0x20n, cr8: 0n, efer: 0x500n, apicBase: 0xfee0_0900n,
    interruptBitmap: [1n, 0n, 0n, 1n << 63n],
  };
  const buf = s.encodeSregs(sregs);
  assert.equal(buf.byteLength, kvm_sregs.size);
  const v = dv(buf);
  assert.equal(v.getUint16(kvm_sregs.fields.cs + kvm_segment.fields.selector, true), 0x8);
  assert.equal(v.getUint8(kvm_sregs.fields.cs + kvm_segment.fields.l), 1);
  assert.equal(v.getBigUint64(kvm_sregs.fields.efer, true), 0x500n);
  assert.equal(v.getBigUint64(kvm_sregs.fields.interrupt_bitmap + 24, true), 1n << 63n);
  assert.deepEqual(s.decodeSregs(buf), sregs);
  assert.throws(() => s.encodeSregs({ ...sregs, cs: { ...sregs.cs, dpl: 256 } }), /sregs.cs.dpl/);
  assert.throws(() => s.encodeSregs({ ...sregs, interruptBitmap: [0n, 0n, 0n, 0n, 0n] }), /at most 4/);
});

test("kvm_fpu round trip including fpr and xmm; absent arrays encode as zeros", () => {
  const fpr = Uint8Array.from({ length: 128 }, (_, i) => i);
  const xmm = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
  const fpu: Fpu = { fcw: 0x37f, fsw: 0, ftwx: 0, lastOpcode: 0, lastIp: 0n, lastDp: 0n, mxcsr: 0x1f80, fpr, xmm };
  const buf = s.encodeFpu(fpu);
  assert.equal(buf.byteLength, kvm_fpu.size);
  assert.equal(dv(buf).getUint16(kvm_fpu.fields.fcw, true), 0x37f);
  assert.equal(dv(buf).getUint32(kvm_fpu.fields.mxcsr, true), 0x1f80);
  assert.equal(buf[kvm_fpu.fields.xmm], 255);
  assert.deepEqual(s.decodeFpu(buf), fpu);
  const bare = s.decodeFpu(s.encodeFpu({ fcw: 0x37f, fsw: 0, ftwx: 0, lastOpcode: 0, lastIp: 0n, lastDp: 0n, mxcsr: 0x1f80 }));
  assert.ok(bare.fpr!.every((b) => b === 0) && bare.xmm!.every((b) => b === 0));
  assert.throws(() => s.encodeFpu({ ...fpu, fpr: new Uint8Array(3) }), /fpu.fpr is 3 bytes/);
});

test("kvm_msrs round trip: nmsrs then 16-byte entries from offset 8", () => {
  const entries = [{ index: 0x174, data: 0x10n }, { index: 0xc000_0080, data: 0x500n }, { index: 0x10, data: 1n << 40n }];
  const buf = s.encodeMsrs(entries);
  assert.equal(buf.byteLength, kvm_msrs.size + 3 * kvm_msr_entry.size);
  assert.equal(dv(buf).getUint32(kvm_msrs.fields.nmsrs, true), 3);
  assert.equal(dv(buf).getUint32(kvm_msrs.fields.entries + kvm_msr_entry.size + kvm_msr_entry.fields.index, true), 0xc000_0080);
  assert.deepEqual(s.decodeMsrs(buf), entries);
  assert.deepEqual(s.decodeMsrs(buf, 1), entries.slice(0, 1));
});

test("kvm_msr_list: capacity in nmsrs, indices after it", () => {
  const buf = s.encodeMsrList(3);
  assert.equal(buf.byteLength, 4 + 12);
  dv(buf).setUint32(4, 0x174, true);
  dv(buf).setUint32(8, 0x175, true);
  dv(buf).setUint32(12, 0x176, true);
  assert.deepEqual(s.decodeMsrList(buf), [0x174, 0x175, 0x176]);
});

test("kvm_cpuid2 round trip; an empty buffer carries its capacity in nent", () => {
  const entries = [
    { function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x756e6547, ecx: 0x6c65746e, edx: 0x49656e69 },
    { function: 7, index: 1, flags: 1, eax: 0, ebx: 0xffff_ffff, ecx: 0, edx: 0 },
  ];
  const buf = s.encodeCpuid2(entries);
  assert.equal(buf.byteLength, kvm_cpuid2.size + 2 * kvm_cpuid_entry2.size);
  assert.equal(dv(buf).getUint32(kvm_cpuid2.fields.entries + kvm_cpuid_entry2.size + kvm_cpuid_entry2.fields.ebx, true), 0xffff_ffff);
  assert.deepEqual(s.decodeCpuid2(buf), entries);
  const empty = s.encodeCpuid2([], 100);
  assert.equal(empty.byteLength, 8 + 100 * 40);
  assert.equal(dv(empty).getUint32(0, true), 100);
});

test("kvm_userspace_memory_region round trip", () => {
  const r = { slot: 1, flags: 0, guestPhysAddr: 0x1_0000_0000n, memorySize: 0x4000_0000n, userspaceAddr: 0x7f00_1234_5000n };
  const buf = s.encodeUserMemoryRegion(r);
  assert.equal(buf.byteLength, kvm_userspace_memory_region.size);
  assert.equal(dv(buf).getBigUint64(kvm_userspace_memory_region.fields.userspace_addr, true), 0x7f00_1234_5000n);
  assert.deepEqual(s.decodeUserMemoryRegion(buf), r);
});

test("kvm_ioeventfd: flags from datamatch/pio/deassign, fd signed", () => {
  const buf = s.encodeIoEventFd({ addr: 0xd0000050n, len: 4, fd: 9, datamatch: 2n });
  const v = dv(buf);
  assert.equal(buf.byteLength, kvm_ioeventfd.size);
  assert.equal(v.getBigUint64(kvm_ioeventfd.fields.addr, true), 0xd0000050n);
  assert.equal(v.getBigUint64(kvm_ioeventfd.fields.datamatch, true), 2n);
  assert.equal(v.getUint32(kvm_ioeventfd.fields.len, true), 4);
  assert.equal(v.getInt32(kvm_ioeventfd.fields.fd, true), 9);
  assert.equal(v.getUint32(kvm_ioeventfd.fields.flags, true), KVM_IOEVENTFD_FLAG_DATAMATCH);
  const pio = dv(s.encodeIoEventFd({ addr: 0x600n, len: 0, fd: 3, pio: true, deassign: true }));
  assert.equal(pio.getUint32(kvm_ioeventfd.fields.flags, true), KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DEASSIGN);
  assert.throws(() => s.encodeIoEventFd({ addr: 0n, len: 3, fd: 3 }), /must be 0, 1, 2, 4 or 8/);
});

test("kvm_irqfd: fd, gsi, resample flag", () => {
  const v = dv(s.encodeIrqFd({ fd: 11, gsi: 5, resampleFd: 12 }));
  assert.equal(v.byteLength, kvm_irqfd.size);
  assert.equal(v.getUint32(kvm_irqfd.fields.fd, true), 11);
  assert.equal(v.getUint32(kvm_irqfd.fields.gsi, true), 5);
  assert.equal(v.getUint32(kvm_irqfd.fields.resamplefd, true), 12);
  assert.equal(v.getUint32(kvm_irqfd.fields.flags, true), KVM_IRQFD_FLAG_RESAMPLE);
});

test("kvm_irq_routing round trip with irqchip and msi entries", () => {
  const routes = [
    { gsi: 4, kind: "irqchip" as const, irqchip: 2, pin: 4 },
    { gsi: 24, kind: "msi" as const, addressLo: 0xfee0_0000, addressHi: 0, data: 0x4031 },
  ];
  const buf = s.encodeGsiRouting(routes);
  const v = dv(buf);
  assert.equal(buf.byteLength, kvm_irq_routing.size + 2 * kvm_irq_routing_entry.size);
  assert.equal(v.getUint32(kvm_irq_routing.fields.nr, true), 2);
  const e1 = kvm_irq_routing.fields.entries + kvm_irq_routing_entry.size;
  assert.equal(v.getUint32(kvm_irq_routing.fields.entries + kvm_irq_routing_entry.fields.type, true), KVM_IRQ_ROUTING_IRQCHIP);
  assert.equal(v.getUint32(e1 + kvm_irq_routing_entry.fields.type, true), KVM_IRQ_ROUTING_MSI);
  assert.equal(v.getUint32(e1 + kvm_irq_routing_entry.fields["u.msi.data"], true), 0x4031);
  assert.deepEqual(s.decodeGsiRouting(buf), routes);
});

test("small argument structs: pit_config, mp_state, irq_level, msi, u64", () => {
  assert.equal(dv(s.encodePitConfig(KVM_PIT_SPEAKER_DUMMY)).getUint32(0, true), 1);
  assert.equal(s.encodePitConfig(0).byteLength, 64);
  assert.equal(s.decodeMpState(s.encodeMpState(3)), 3);
  const irq = dv(s.encodeIrqLevel(4, true));
  assert.equal(irq.byteLength, kvm_irq_level.size);
  assert.equal(irq.getUint32(kvm_irq_level.fields.irq, true), 4);
  assert.equal(irq.getUint32(kvm_irq_level.fields.level, true), 1);
  const msi = dv(s.encodeMsi(0xfee0_0000, 1, 0x31));
  assert.equal(msi.byteLength, kvm_msi.size);
  assert.equal(msi.getUint32(kvm_msi.fields.address_lo, true), 0xfee0_0000);
  assert.equal(msi.getUint32(kvm_msi.fields.address_hi, true), 1);
  assert.equal(msi.getUint32(kvm_msi.fields.data, true), 0x31);
  assert.equal(dv(s.encodeU64("x", 0xfffb_c000n)).getBigUint64(0, true), 0xfffb_c000n);
  assert.throws(() => s.encodeMsi(-1, 0, 0), /msi.addressLo = -1/);
});
