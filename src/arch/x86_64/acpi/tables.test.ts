import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../../memory/guest-memory.js";
import { E820_RESERVED, e820Map } from "../bootparams.js";
import { BootSetupError } from "../errors.js";
import {
  ACPI_RSDP_START, ACPI_TABLES_END, ACPI_TABLES_START, EBDA_START, HIMEM_START, IOAPIC_START, IRQ_BASE, IRQ_MAX, LAPIC_START, MiB,
  VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_START, memoryLayout,
} from "../layout.js";
import { MPTABLE_MAX_VCPUS, byteSum, mptableSize } from "../mptable.js";
import {
  ACPI_OEM_ID, FADT_F_HW_REDUCED_ACPI, FADT_SIZE, HID_VIRTIO_MMIO, RSDP_SIZE, SDT_HEADER_SIZE, buildDsdt, buildFadt, buildMadt, buildRsdp,
  buildXsdt, sdt, writeAcpiTables, type VirtioMmioDevice,
} from "./tables.js";

const str = (b: Uint8Array, off: number, n: number): string => String.fromCharCode(...b.subarray(off, off + n));
const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const slots = (n: number): VirtioMmioDevice[] =>
  Array.from({ length: n }, (_, i) => ({ base: VIRTIO_MMIO_START + i * VIRTIO_MMIO_SLOT_SIZE, size: VIRTIO_MMIO_SLOT_SIZE, gsi: IRQ_BASE + i }));
const includes = (hay: Uint8Array, needle: Uint8Array): number => {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
};

test("SDT header (ACPI 6.5 §5.2.6): signature, length, revision, OEM and creator fields, checksum to 0", () => {
  const t = sdt("TEST", 3, "TYPVTEST", Uint8Array.of(1, 2, 3));
  assert.equal(t.length, SDT_HEADER_SIZE + 3);
  assert.equal(str(t, 0, 4), "TEST");
  assert.equal(dv(t).getUint32(4, true), 39);
  assert.equal(t[8], 3);
  assert.equal(str(t, 10, 6), ACPI_OEM_ID);
  assert.equal(str(t, 16, 8), "TYPVTEST");
  assert.equal(dv(t).getUint32(24, true), 1);
  assert.equal(str(t, 28, 4), "TYPV");
  assert.equal(byteSum(t), 0);
  assert.deepEqual(t.subarray(36), Uint8Array.of(1, 2, 3));
});

test("RSDP (ACPI 6.5 §5.2.5.3): revision 2, 36 bytes, XSDT address, both checksums", () => {
  const r = buildRsdp(0xe0040);
  assert.equal(r.length, RSDP_SIZE);
  assert.equal(str(r, 0, 8), "RSD PTR ");
  assert.equal(byteSum(r.subarray(0, 20)), 0, "ACPI 1.0 checksum over bytes 0-19");
  assert.equal(byteSum(r), 0, "extended checksum over all 36 bytes");
  assert.equal(str(r, 9, 6), ACPI_OEM_ID);
  assert.equal(r[15], 2);
  assert.equal(dv(r).getUint32(16, true), 0, "no RSDT");
  assert.equal(dv(r).getUint32(20, true), 36);
  assert.equal(dv(r).getBigUint64(24, true), 0xe0040n);
  assert.deepEqual(r.subarray(33), new Uint8Array(3), "reserved");
});

test("XSDT (ACPI 6.5 §5.2.8): revision 1, 64-bit entries", () => {
  const x = buildXsdt([0xe0100, 0x1_0000_0000]);
  assert.equal(str(x, 0, 4), "XSDT");
  assert.equal(x[8], 1);
  assert.equal(x.length, 36 + 16);
  assert.equal(dv(x).getBigUint64(36, true), 0xe0100n);
  assert.equal(dv(x).getBigUint64(44, true), 0x1_0000_0000n);
  assert.equal(byteSum(x), 0);
});

test("FADT (ACPI 6.5 §5.2.9): revision 6.5, 276 bytes, HW_REDUCED_ACPI, IAPC_BOOT_ARCH, X_DSDT, hypervisor id", () => {
  const f = buildFadt(0xe0300);
  const v = dv(f);
  assert.equal(str(f, 0, 4), "FACP");
  assert.equal(f.length, FADT_SIZE);
  assert.equal(v.getUint32(4, true), 276);
  assert.equal(f[8], 6, "major version");
  assert.equal(f[131], 5, "FADT Minor Version");
  assert.equal(byteSum(f), 0);
  assert.equal(v.getUint32(36, true), 0, "no FACS (HW-reduced)");
  assert.equal(v.getUint32(40, true), 0xe0300, "DSDT");
  assert.equal(v.getBigUint64(140, true), 0xe0300n, "X_DSDT");
  assert.equal(v.getUint16(46, true), 0, "no SCI (HW-reduced)");
  assert.equal(v.getUint16(109, true), 0x001e, "8042, VGA not present, MSI not supported, no ASPM");
  assert.equal(v.getUint32(112, true), 0x0010_0030, "HW_REDUCED_ACPI | SLP_BUTTON | PWR_BUTTON");
  assert.ok((v.getUint32(112, true) & FADT_F_HW_REDUCED_ACPI) !== 0);
  assert.equal(str(f, 268, 8), "TYPERVSR");
  assert.deepEqual(f.subarray(56, 96), new Uint8Array(40), "no PM1/PM2/PM timer/GPE blocks");
});

for (const n of [1, 2, 8, MPTABLE_MAX_VCPUS]) {
  test(`MADT (ACPI 6.5 §5.2.12) for ${n} vCPU(s): LAPIC address, one enabled local APIC each, the IOAPIC`, () => {
    const m = buildMadt(n);
    const v = dv(m);
    assert.equal(str(m, 0, 4), "APIC");
    assert.equal(m[8], 6);
    assert.equal(m.length, 44 + 8 * n + 12);
    assert.equal(v.getUint32(4, true), m.length);
    assert.equal(byteSum(m), 0);
    assert.equal(v.getUint32(36, true), LAPIC_START);
    assert.equal(v.getUint32(40, true), 0, "no PCAT_COMPAT");
    const lapics: Array<[number, number]> = [];
    const ioapics: Array<[number, number, number]> = [];
    for (let off = 44; off < m.length; off += m[off + 1]!) {
      if (m[off] === 0) {
        assert.equal(m[off + 1], 8);
        assert.equal(v.getUint32(off + 4, true), 1, "Enabled");
        lapics.push([m[off + 2]!, m[off + 3]!]);
      } else {
        assert.equal(m[off], 1);
        assert.equal(m[off + 1], 12);
        ioapics.push([m[off + 2]!, v.getUint32(off + 4, true), v.getUint32(off + 8, true)]);
      }
    }
    assert.deepEqual(lapics, Array.from({ length: n }, (_, i) => [i, i]), "UID = APIC ID = vCPU index");
    assert.deepEqual(ioapics, [[n + 1, IOAPIC_START, 0]], "IOAPIC id as in the MP table, GSI base 0");
  });
}

test("MADT: vCPU count limits", () => {
  assert.throws(() => buildMadt(0), /0 vCPUs requested, between 1 and 253/);
  assert.throws(() => buildMadt(254), BootSetupError);
});

test("DSDT (ACPI 6.5 §5.2.11.1): revision 2, \\_SB_ scope with COM1, PS2_ and one LNRO0005 device per slot", () => {
  const d = buildDsdt(slots(3));
  assert.equal(str(d, 0, 4), "DSDT");
  assert.equal(d[8], 2);
  assert.equal(byteSum(d), 0);
  assert.equal(d[36], 0x10, "ScopeOp");
  const enc = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
  for (const n of ["PS2_", "V000", "V001", "V002"]) assert.equal(countOf(d, enc(n)), 1, n);
  assert.equal(countOf(d, enc("COM1")), 2, "the device and its _DDN");
  assert.equal(includes(d, enc("V003")), -1);
  assert.equal(countOf(d, enc(`\x0d${HID_VIRTIO_MMIO}\0`)), 3, "_HID \"LNRO0005\" once per slot");
  // Each slot's Memory32Fixed and Extended Interrupt descriptors, byte for byte.
  for (const s of slots(3)) {
    const mem = Uint8Array.of(0x86, 9, 0, 1, ...u32(s.base), ...u32(s.size));
    const irq = Uint8Array.of(0x89, 6, 0, 0x03, 1, ...u32(s.gsi));
    const at = includes(d, mem);
    assert.ok(at > 0, `Memory32Fixed for ${s.base.toString(16)}`);
    assert.deepEqual(d.subarray(at + mem.length, at + mem.length + irq.length), irq, `edge/active-high GSI ${s.gsi}`);
  }
  assert.ok(includes(d, Uint8Array.of(0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08)) > 0, "COM1 IO 0x3F8/8");
  assert.ok(includes(d, Uint8Array.of(0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01)) > 0, "i8042 IO 0x60, 0x64");
});

function countOf(hay: Uint8Array, needle: Uint8Array): number {
  let n = 0;
  for (let i = 0, at: number; (at = includes(hay.subarray(i), needle)) >= 0; i += at + needle.length) n++;
  return n;
}

function u32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24];
}

test("DSDT: virtio windows and GSIs are checked", () => {
  const one = (d: Partial<VirtioMmioDevice>): VirtioMmioDevice[] => [{ base: VIRTIO_MMIO_START, size: 0x1000, gsi: 5, ...d }];
  assert.throws(() => buildDsdt(one({ gsi: 24 })), /GSI 24; the IOAPIC has GSIs 0-23/);
  assert.throws(() => buildDsdt(one({ gsi: 4 })), /wants GSI 4, which COM1 has/);
  assert.throws(() => buildDsdt(one({ gsi: 1 })), /which the i8042 has/);
  assert.throws(() => buildDsdt([...one({}), ...one({ base: VIRTIO_MMIO_START + 0x1000 })]), /device 1 .* wants GSI 5, which virtio-mmio device 0 has/);
  assert.throws(() => buildDsdt(one({ size: 0 })), /non-empty window below 4 GiB/);
  assert.throws(() => buildDsdt(one({ base: 0xffff_f000, size: 0x2000 })), /below 4 GiB/);
  assert.doesNotThrow(() => buildDsdt(slots(IRQ_MAX - IRQ_BASE + 1)));
});

test("writeAcpiTables: RSDP at 0xE0000 -> XSDT -> FADT -> DSDT and MADT, all below 1 MiB in e820-reserved memory", () => {
  const mem = GuestMemory.anonymous(memoryLayout(64 * MiB));
  mem.fill(ACPI_RSDP_START, HIMEM_START - ACPI_RSDP_START, 0xee);
  const p = writeAcpiTables(mem, { vcpus: 4, virtioMmio: slots(2) });
  assert.equal(p.rsdpAddr, 0xe0000);
  assert.equal(p.rsdpAddr, ACPI_RSDP_START);
  const rsdp = mem.read(p.rsdpAddr, RSDP_SIZE);
  assert.equal(str(rsdp, 0, 8), "RSD PTR ");
  assert.equal(byteSum(rsdp), 0);
  const xsdtAddr = Number(dv(rsdp).getBigUint64(24, true));
  assert.equal(xsdtAddr, p.tables.XSDT.addr);
  assert.ok(xsdtAddr >= ACPI_TABLES_START);
  const readTable = (addr: number): Uint8Array => mem.read(addr, mem.readU32(addr + 4));
  const xsdt = readTable(xsdtAddr);
  const entries = [0, 1].map((i) => Number(dv(xsdt).getBigUint64(36 + 8 * i, true)));
  const bySig = new Map(entries.map((a) => [str(mem.read(a, 4), 0, 4), a]));
  assert.deepEqual([...bySig.keys()], ["FACP", "APIC"]);
  assert.equal(bySig.get("FACP"), p.tables.FACP.addr);
  assert.equal(bySig.get("APIC"), p.tables.APIC.addr);
  const fadt = readTable(p.tables.FACP.addr);
  const dsdtAddr = Number(dv(fadt).getBigUint64(140, true));
  assert.equal(dsdtAddr, p.tables.DSDT.addr);
  for (const [sig, r] of Object.entries(p.tables)) {
    const t = readTable(r.addr);
    assert.equal(str(t, 0, 4), sig);
    assert.equal(t.length, r.size);
    assert.equal(byteSum(t), 0, `${sig} checksum`);
    assert.equal(r.addr % 16, 0, `${sig} 16-byte aligned`);
  }
  assert.deepEqual(readTable(p.tables.APIC.addr), buildMadt(4));
  assert.deepEqual(readTable(p.tables.DSDT.addr), buildDsdt(slots(2)));
  // No overlaps, everything inside [RSDP, range end) and below 1 MiB.
  const areas = [{ addr: p.rsdpAddr, size: RSDP_SIZE }, ...Object.values(p.tables)].sort((a, b) => a.addr - b.addr);
  for (let i = 1; i < areas.length; i++) assert.ok(areas[i - 1]!.addr + areas[i - 1]!.size <= areas[i]!.addr);
  const last = areas[areas.length - 1]!;
  assert.equal(p.range.addr, ACPI_RSDP_START);
  assert.equal(p.range.addr + p.range.size, last.addr + last.size);
  assert.ok(p.range.addr + p.range.size <= ACPI_TABLES_END);
  // The gaps are zeroed.
  assert.equal(mem.readU8(p.rsdpAddr + RSDP_SIZE), 0);
  // e820 marks the whole range reserved.
  const reserved = e820Map(memoryLayout(64 * MiB)).filter((e) => e.type === E820_RESERVED);
  assert.ok(reserved.some((e) => e.addr <= p.range.addr && p.range.addr + p.range.size <= e.addr + e.size));
  // The MP table (largest: 253 vCPUs) ends well before the RSDP.
  assert.ok(EBDA_START + mptableSize(MPTABLE_MAX_VCPUS) <= ACPI_RSDP_START);
});

test("writeAcpiTables: the largest machine (253 vCPUs, a virtio slot on every free GSI) fits", () => {
  const mem = GuestMemory.anonymous(memoryLayout(64 * MiB));
  const p = writeAcpiTables(mem, { vcpus: MPTABLE_MAX_VCPUS, virtioMmio: slots(IRQ_MAX - IRQ_BASE + 1) });
  assert.ok(p.range.addr + p.range.size <= ACPI_TABLES_END);
  assert.equal(p.tables.APIC.size, 44 + 8 * MPTABLE_MAX_VCPUS + 12);
});
