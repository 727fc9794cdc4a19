// The generated tables read back by ACPICA's own disassembler (`iasl -d`, Debian acpica-tools):
// the same parser family Linux uses. Every table must disassemble without a checksum or any other
// warning, and say what we meant it to say. The DSDT is then compiled again (`iasl -oa`, no
// optimizations) and must give our AML back byte for byte (iasl writes 0 where we write real
// End Tag checksums); the RSDP, which has no SDT header and which `iasl -d` cannot read, is
// compiled from a data-table source with the checksums left 0 and must equal ours.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestMemory } from "../../../memory/guest-memory.js";
import { IRQ_BASE, MiB, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_START, memoryLayout } from "../layout.js";
import { ACPI_OEM_ID, RSDP_SIZE, writeAcpiTables } from "./tables.js";

const IASL = process.env.IASL ?? "iasl";
const iaslMissing = spawnSync(IASL, ["-v"], { encoding: "utf8" }).error !== undefined;
const skip = iaslMissing ? `iasl not found: install acpica-tools (Debian/Ubuntu: apt-get install acpica-tools)` : false;

const VCPUS = 4;
const SLOTS = Array.from({ length: 3 }, (_, i) => ({ base: VIRTIO_MMIO_START + i * VIRTIO_MMIO_SLOT_SIZE, size: VIRTIO_MMIO_SLOT_SIZE, gsi: IRQ_BASE + i }));

function iasl(dir: string, args: string[]): string {
  const r = spawnSync(IASL, args, { cwd: dir, encoding: "utf8" });
  const out = `${r.stdout}\n${r.stderr}`;
  assert.equal(r.status, 0, `iasl ${args.join(" ")} failed:\n${out}`);
  // The compiler's summary line names its (zero) error and warning counts; anything else that says so is a complaint.
  const complaints = out.replace(/Compilation successful\. 0 Errors, 0 Warnings/g, "");
  assert.doesNotMatch(complaints, /warning|error|incorrect checksum/i, `iasl ${args.join(" ")} complained:\n${out}`);
  return out;
}

const hex8 = (n: number): string => n.toString(16).toUpperCase().padStart(8, "0");
const hex16 = (n: number): string => n.toString(16).toUpperCase().padStart(16, "0");
const count = (s: string, re: RegExp): number => (s.match(new RegExp(re.source, "g")) ?? []).length;

test("iasl -d: RSDP, XSDT, FADT, MADT, DSDT as ACPICA reads them", { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-acpi-"));
  try {
    const mem = GuestMemory.anonymous(memoryLayout(64 * MiB));
    const p = writeAcpiTables(mem, { vcpus: VCPUS, virtioMmio: SLOTS });
    const dsl: Record<string, string> = {};
    for (const [sig, r] of Object.entries(p.tables)) {
      const bytes = mem.read(r.addr, r.size);
      writeFileSync(join(dir, `${sig.toLowerCase()}.dat`), bytes);
      iasl(dir, ["-d", `${sig.toLowerCase()}.dat`]);
      dsl[sig] = readFileSync(join(dir, `${sig.toLowerCase()}.dsl`), "utf8");
      assert.doesNotMatch(dsl[sig]!, /incorrect checksum|\*\*\*\*/i, `${sig}: ${dsl[sig]}`);
    }

    // XSDT: the FADT and the MADT.
    const xsdt = dsl.XSDT!;
    assert.match(xsdt, new RegExp(`ACPI Table Address   0 : ${hex16(p.tables.FACP.addr)}`));
    assert.match(xsdt, new RegExp(`ACPI Table Address   1 : ${hex16(p.tables.APIC.addr)}`));
    assert.equal(count(xsdt, /ACPI Table Address/), 2);

    // FADT: 6.5, hardware reduced, the DSDT in both address fields, our hypervisor id.
    const fadt = dsl.FACP!;
    assert.match(fadt, /Revision : 06/);
    assert.match(fadt, /FADT Minor Revision : 05/);
    assert.match(fadt, /Hardware Reduced \(V5\) : 1/);
    assert.match(fadt, /Control Method Power Button \(V1\) : 1/);
    assert.match(fadt, /Control Method Sleep Button \(V1\) : 1/);
    assert.match(fadt, /8042 Present on ports 60\/64 \(V2\) : 1/);
    assert.match(fadt, /VGA Not Present \(V4\) : 1/);
    assert.match(fadt, /MSI Not Supported \(V4\) : 1/);
    assert.match(fadt, new RegExp(`DSDT Address : ${hex8(p.tables.DSDT.addr)}\\b`));
    assert.match(fadt, new RegExp(`DSDT Address : ${hex16(p.tables.DSDT.addr)}\\b`));
    assert.match(fadt, /Hypervisor ID : 5253565245505954/, '"TYPERVSR" read as a little-endian u64');

    // MADT: one enabled local APIC per vCPU, the IOAPIC.
    const madt = dsl.APIC!;
    assert.match(madt, /Local Apic Address : FEE00000/);
    assert.match(madt, /PC-AT Compatibility : 0/);
    assert.equal(count(madt, /\[Processor Local APIC\]/), VCPUS);
    assert.equal(count(madt, /Processor Enabled : 1/), VCPUS);
    for (let i = 0; i < VCPUS; i++) {
      const id = i.toString(16).toUpperCase().padStart(2, "0");
      assert.match(madt, new RegExp(`Processor ID : ${id}\\s+\\[[^\\]]+\\]\\s+Local Apic ID : ${id}`));
    }
    assert.equal(count(madt, /\[I\/O APIC\]/), 1);
    assert.match(madt, /I\/O Apic ID : 05[\s\S]*Address : FEC00000[\s\S]*Interrupt : 00000000/);

    // DSDT: the devices and their resources.
    const dsdt = dsl.DSDT!;
    assert.match(dsdt, new RegExp(`DefinitionBlock \\("", "DSDT", 2, "${ACPI_OEM_ID}", "TYPVDSDT", 0x00000001\\)`));
    assert.match(dsdt, /Scope \(\\_SB\)/);
    const deviceBlock = (nm: string): string => {
      const m = new RegExp(`Device \\(${nm}\\)\\s*\\{([\\s\\S]*?)\\n        \\}`).exec(dsdt);
      assert.ok(m, `Device (${nm}) in\n${dsdt}`);
      return m[1]!;
    };
    const edgeHigh = (gsi: number): RegExp =>
      new RegExp(`Interrupt \\(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \\)\\s*\\{\\s*0x${hex8(gsi)},\\s*\\}`);
    const com1 = deviceBlock("COM1");
    assert.match(com1, /Name \(_HID, EisaId \("PNP0501"\)/);
    assert.match(com1, /IO \(Decode16,\s*0x03F8,\s*\/\/ Range Minimum\s*0x03F8,\s*\/\/ Range Maximum\s*0x01,\s*\/\/ Alignment\s*0x08,/);
    assert.match(com1, edgeHigh(4));
    const ps2 = deviceBlock("PS2");
    assert.match(ps2, /Name \(_HID, EisaId \("PNP0303"\)/);
    assert.match(ps2, /IO \(Decode16,\s*0x0060,[^)]*0x01,\s*\/\/ Length/);
    assert.match(ps2, /IO \(Decode16,\s*0x0064,[^)]*0x01,\s*\/\/ Length/);
    assert.match(ps2, edgeHigh(1));
    assert.equal(count(dsdt, /Name \(_HID, "LNRO0005"\)/), SLOTS.length);
    SLOTS.forEach((s, i) => {
      const v = deviceBlock(`V00${i}`);
      assert.match(v, /Name \(_HID, "LNRO0005"\)/);
      assert.match(v, new RegExp(`Name \\(_UID, ${["Zero", "One", "0x02"][i]}\\)`));
      assert.match(v, new RegExp(`Memory32Fixed \\(ReadWrite,\\s*0x${hex8(s.base)},\\s*// Address Base\\s*0x${hex8(s.size)},`));
      assert.match(v, edgeHigh(s.gsi));
    });

    // The DSDT compiled again gives our bytes back: header's checksum and compiler fields aside,
    // and our End Tag checksums where iasl writes 0.
    iasl(dir, ["-oa", "-p", "again", "dsdt.dsl"]);
    const again = readFileSync(join(dir, "again.aml"));
    const ours = mem.read(p.tables.DSDT.addr, p.tables.DSDT.size);
    assert.equal(again.length, ours.length);
    const headerSkip = new Set([9, 28, 29, 30, 31, 32, 33, 34, 35]);
    for (let i = 0; i < ours.length; i++) {
      if (headerSkip.has(i) || ours[i] === again[i]) continue;
      assert.ok(ours[i - 1] === 0x79 && again[i] === 0, `DSDT byte ${i}: ours 0x${ours[i]!.toString(16)}, iasl's 0x${again[i]!.toString(16)}`);
    }

    // The RSDP: compiled by iasl from its fields (checksums left 0, iasl computes them) = ours.
    const rsdp = mem.read(p.rsdpAddr, RSDP_SIZE);
    writeFileSync(
      join(dir, "rsdp.asl"),
      [
        `[0008]                          Signature : "RSD PTR "`,
        `[0001]                           Checksum : 00`,
        `[0006]                             Oem ID : "${ACPI_OEM_ID}"`,
        `[0001]                           Revision : 02`,
        `[0004]                       RSDT Address : 00000000`,
        `[0004]                             Length : 00000024`,
        `[0008]                       XSDT Address : ${hex16(p.tables.XSDT.addr)}`,
        `[0001]                  Extended Checksum : 00`,
        `[0003]                           Reserved : 000000`,
        "",
      ].join("\n"),
    );
    iasl(dir, ["rsdp.asl"]);
    assert.deepEqual(new Uint8Array(readFileSync(join(dir, "rsdp.aml"))), rsdp);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
