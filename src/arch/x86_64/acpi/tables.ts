// The ACPI tables of a microVM, as Firecracker writes them since 1.8: RSDP -> XSDT -> {FADT, MADT},
// FADT -> DSDT. A hardware-reduced ACPI platform (no PM timer, no SCI, no GPEs, no legacy PIC):
// the MADT gives the OS every local APIC and the IOAPIC, the DSDT every device that is not on an
// enumerable bus: COM1, the i8042 and one LNRO0005 device per virtio-mmio slot. Stock distro
// kernels (no CONFIG_X86_MPPARSE, no VIRTIO_MMIO_CMDLINE_DEVICES) find their CPUs and devices here.
//
// Builders are pure (bytes in, bytes out); `writeAcpiTables` places them in guest memory.

import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { Range } from "../bootparams.js";
import { BootSetupError, hex } from "../errors.js";
import { ACPI_RSDP_START, ACPI_TABLES_END, ACPI_TABLES_START, IOAPIC_START, IRQ_MAX, LAPIC_START } from "../layout.js";
import { MPTABLE_MAX_VCPUS, ioapicId } from "../mptable.js";
import { checksumByte } from "../checksum.js";
import { device, eisaId, extendedInterrupt, integer, io, memory32Fixed, name, ONE, resourceTemplate, scope, string } from "./aml.js";

/** A virtio-mmio transport window and its interrupt line (virtio 1.2 §4.2). */
export interface VirtioMmioDevice {
  /** Guest-physical base of the register window. */
  base: number;
  /** Window size in bytes. */
  size: number;
  /** Global system interrupt (an IOAPIC pin; GSI base 0). */
  gsi: number;
}

// --- Identity -------------------------------------------------------------------------------------

/** ACPI 6.5 §5.2.6: OEM ID, 6 bytes (also in the RSDP, §5.2.5.3). */
export const ACPI_OEM_ID = "TYPVSR";
/** ACPI 6.5 §5.2.6: OEM Revision; one value for every table. */
const OEM_REVISION = 1;
/** ACPI 6.5 §5.2.6: Creator ID (4 bytes, the vendor of the tool that made the table) and its revision. */
const CREATOR_ID = "TYPV";
const CREATOR_REVISION = 1;
/** ACPI 6.5 §5.2.9: Hypervisor Vendor Identity, 8 bytes (the MP table's OEM id, mptable.ts). */
export const ACPI_HYPERVISOR_VENDOR_ID = "TYPERVSR";

// --- Layouts and revisions --------------------------------------------------------------------------

/** ACPI 6.5 §5.2.6: every description table starts with this 36-byte header. */
export const SDT_HEADER_SIZE = 36;
const SDT_LENGTH = 4;
const SDT_REVISION = 8;
const SDT_CHECKSUM = 9;
const SDT_OEM_ID = 10;
const SDT_OEM_TABLE_ID = 16;
const SDT_OEM_REVISION = 24;
const SDT_CREATOR_ID = 28;
const SDT_CREATOR_REVISION = 32;

/** ACPI 6.5 §5.2.5.3: RSDP "RSD PTR ", revision 2 (ACPI 2.0+), 36 bytes. */
const RSDP_SIGNATURE = "RSD PTR ";
const RSDP_REVISION = 2;
export const RSDP_SIZE = 36;
/** ACPI 6.5 §5.2.5.3: the first checksum covers the ACPI 1.0 part, bytes 0-19. */
const RSDP_V1_SIZE = 20;
const RSDP_CHECKSUM = 8;
const RSDP_OEM_ID = 9;
const RSDP_REVISION_OFF = 15;
const RSDP_LENGTH = 20;
const RSDP_XSDT_ADDRESS = 24;
const RSDP_EXTENDED_CHECKSUM = 32;

/** ACPI 6.5 §5.2.8: XSDT revision 1; 64-bit table addresses follow the header. */
const XSDT_REVISION = 1;

/** ACPI 6.5 §5.2.9: FADT "FACP", Major Version 6, Minor Version 5 (ACPI 6.5), 276 bytes. */
const FADT_REVISION = 6;
const FADT_MINOR_VERSION = 5;
export const FADT_SIZE = 276;
const FADT_DSDT = 40; // DSDT, 32-bit address
const FADT_IAPC_BOOT_ARCH = 109;
const FADT_FLAGS = 112;
const FADT_MINOR_VERSION_OFF = 131;
const FADT_X_DSDT = 140; // X_DSDT, 64-bit address
const FADT_HYPERVISOR_VENDOR_ID = 268;
/** ACPI 6.5 §5.2.9.3: IA-PC Boot Architecture Flags. */
export const IAPC_BOOT_ARCH_8042 = 1 << 1; // the motherboard has an 8042 (our i8042; Linux then keeps it expected)
export const IAPC_BOOT_ARCH_VGA_NOT_PRESENT = 1 << 2; // no VGA: do not probe it (Firecracker)
export const IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED = 1 << 3; // no PCI, so no MSI (Firecracker)
export const IAPC_BOOT_ARCH_PCIE_ASPM_CONTROLS = 1 << 4; // OSPM must not enable PCIe ASPM (Firecracker)
/** ACPI 6.5 §5.2.9: Fixed ACPI Description Table Fixed Feature Flags. */
export const FADT_F_PWR_BUTTON = 1 << 4; // 1 = no fixed-feature power button (Firecracker)
export const FADT_F_SLP_BUTTON = 1 << 5; // 1 = no fixed-feature sleep button (Firecracker)
export const FADT_F_HW_REDUCED_ACPI = 1 << 20; // no fixed ACPI hardware: no PM1/GPE blocks, SCI, PM timer (§4.1)

/** ACPI 6.5 §5.2.12: MADT "APIC"; revision 6 for ACPI 6.5 (edk2 Acpi65.h, Firecracker). */
const MADT_REVISION = 6;
const MADT_LOCAL_APIC_ADDRESS = 36;
const MADT_FLAGS = 40;
const MADT_HEADER_SIZE = 44;
/**
 * ACPI 6.5 §5.2.12: Multiple APIC Flags. PCAT_COMPAT (bit 0) stays clear, as in
 * Firecracker: on a hardware-reduced platform the OS installs no 8259 PIC (Linux's
 * null_legacy_pic) and takes every interrupt through the IOAPIC.
 */
const MADT_FLAGS_VALUE = 0;
/** ACPI 6.5 §5.2.12.2: Processor Local APIC structure, type 0, 8 bytes. */
const MADT_TYPE_LOCAL_APIC = 0;
const MADT_LOCAL_APIC_SIZE = 8;
/** ACPI 6.5 §5.2.12.2: Local APIC Flags bit 0 Enabled (Online Capable, bit 1, must then be 0). */
const LOCAL_APIC_ENABLED = 1 << 0;
/** ACPI 6.5 §5.2.12.3: I/O APIC structure, type 1, 12 bytes. */
const MADT_TYPE_IO_APIC = 1;
const MADT_IO_APIC_SIZE = 12;
/** The IOAPIC's pins are GSIs 0-23 (ACPI 6.5 §5.2.13: ISA IRQ n is GSI n when no override says otherwise). */
const IOAPIC_GSI_BASE = 0;

/** ACPI 6.5 §5.2.11.1: DSDT revision 2 makes the AML interpreter's integers 64 bits wide. */
const DSDT_REVISION = 2;

// --- The legacy devices the DSDT describes ----------------------------------------------------------
// PC/AT facts, the same as the VMM's devices (src/vmm/legacy.ts, src/devices/legacy/i8042.ts).
// Without these a hardware-reduced Linux maps no ISA interrupts at all (nr_legacy_irqs() = 0).

/** COM1: ports 0x3F8-0x3FF and ISA IRQ 4 = GSI 4 (ACPI 6.5 §5.2.13 identity mapping; Firecracker's COM1). */
export const ACPI_COM1 = { port: 0x3f8, length: 8, gsi: 4 } as const;
/** i8042: data port 0x60, command/status port 0x64, keyboard IRQ 1 = GSI 1 (Firecracker's PS2_ device). */
export const ACPI_I8042 = { dataPort: 0x60, commandPort: 0x64, gsi: 1 } as const;
/** ACPI 6.5 §6.1.5 _HID values: PNP0501 = 16550A-compatible UART, PNP0303 = IBM enhanced keyboard (8042). */
const HID_COM = "PNP0501";
const HID_I8042 = "PNP0303";
/** Linux drivers/virtio/virtio_mmio.c virtio_mmio_acpi_match: "LNRO0005". */
export const HID_VIRTIO_MMIO = "LNRO0005";
/** DSDT device names are 4 characters: "V" and three decimal digits. */
const MAX_VIRTIO_DEVICES = 1000;

// --- Builders ---------------------------------------------------------------------------------------

const ascii = (buf: Uint8Array, off: number, s: string, len: number): void => {
  if (s.length !== len) throw new Error(`internal: "${s}" must be ${len} characters`);
  for (let i = 0; i < len; i++) buf[off + i] = s.charCodeAt(i);
};

const fixChecksum = (buf: Uint8Array, at: number, end = buf.length): void => {
  buf[at] = 0;
  buf[at] = checksumByte(buf.subarray(0, end));
};

/**
 * A description table: the ACPI 6.5 §5.2.6 header (signature, length, revision, checksum, OEM ID,
 * OEM table ID, OEM revision, creator ID and revision) followed by `body`; the checksum makes the
 * whole table sum to zero.
 */
export function sdt(signature: string, revision: number, oemTableId: string, body: Uint8Array): Uint8Array {
  const t = new Uint8Array(SDT_HEADER_SIZE + body.length);
  const dv = new DataView(t.buffer);
  ascii(t, 0, signature, 4);
  dv.setUint32(SDT_LENGTH, t.length, true);
  t[SDT_REVISION] = revision;
  ascii(t, SDT_OEM_ID, ACPI_OEM_ID, 6);
  ascii(t, SDT_OEM_TABLE_ID, oemTableId, 8);
  dv.setUint32(SDT_OEM_REVISION, OEM_REVISION, true);
  ascii(t, SDT_CREATOR_ID, CREATOR_ID, 4);
  dv.setUint32(SDT_CREATOR_REVISION, CREATOR_REVISION, true);
  t.set(body, SDT_HEADER_SIZE);
  fixChecksum(t, SDT_CHECKSUM);
  return t;
}

/** RSDP revision 2 (ACPI 6.5 §5.2.5.3): no RSDT (address 0), the XSDT's address, both checksums. */
export function buildRsdp(xsdtAddr: number): Uint8Array {
  const r = new Uint8Array(RSDP_SIZE);
  const dv = new DataView(r.buffer);
  ascii(r, 0, RSDP_SIGNATURE, 8);
  ascii(r, RSDP_OEM_ID, ACPI_OEM_ID, 6);
  r[RSDP_REVISION_OFF] = RSDP_REVISION;
  // RsdtAddress (offset 16) stays 0: ACPI 2.0+ OSes take the XSDT (ACPI 6.5 §5.2.5.3).
  dv.setUint32(RSDP_LENGTH, RSDP_SIZE, true);
  dv.setBigUint64(RSDP_XSDT_ADDRESS, BigInt(xsdtAddr), true);
  fixChecksum(r, RSDP_CHECKSUM, RSDP_V1_SIZE);
  fixChecksum(r, RSDP_EXTENDED_CHECKSUM);
  return r;
}

/** XSDT (ACPI 6.5 §5.2.8): the 64-bit addresses of the other tables (here FADT and MADT). */
export function buildXsdt(tableAddrs: readonly number[]): Uint8Array {
  const body = new Uint8Array(8 * tableAddrs.length);
  const dv = new DataView(body.buffer);
  tableAddrs.forEach((a, i) => dv.setBigUint64(8 * i, BigInt(a), true));
  return sdt("XSDT", XSDT_REVISION, "TYPVXSDT", body);
}

/**
 * FADT revision 6.5 (ACPI 6.5 §5.2.9) for a hardware-reduced platform, Firecracker's choices: flags
 * HW_REDUCED_ACPI, PWR_BUTTON, SLP_BUTTON; IAPC_BOOT_ARCH VGA not present, MSI not supported, no
 * ASPM, plus 8042 present; the hypervisor vendor identity; the DSDT in X_DSDT, and also in the
 * 32-bit DSDT field (it lies below 1 MiB; ACPI 6.5 says OSPM then ignores the 32-bit one). Every
 * fixed-hardware field (SCI, PM1, GPE, PM timer, FACS) is zero, as §4.1 allows when HW-reduced.
 */
export function buildFadt(dsdtAddr: number): Uint8Array {
  const body = new Uint8Array(FADT_SIZE - SDT_HEADER_SIZE);
  const dv = new DataView(body.buffer);
  const at = (off: number): number => off - SDT_HEADER_SIZE;
  dv.setUint32(at(FADT_DSDT), dsdtAddr, true);
  dv.setUint16(
    at(FADT_IAPC_BOOT_ARCH),
    IAPC_BOOT_ARCH_8042 | IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED | IAPC_BOOT_ARCH_PCIE_ASPM_CONTROLS,
    true,
  );
  dv.setUint32(at(FADT_FLAGS), FADT_F_HW_REDUCED_ACPI | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON, true);
  body[at(FADT_MINOR_VERSION_OFF)] = FADT_MINOR_VERSION;
  dv.setBigUint64(at(FADT_X_DSDT), BigInt(dsdtAddr), true);
  ascii(body, at(FADT_HYPERVISOR_VENDOR_ID), ACPI_HYPERVISOR_VENDOR_ID, 8);
  return sdt("FACP", FADT_REVISION, "TYPVFACP", body);
}

/**
 * MADT (ACPI 6.5 §5.2.12): the local APIC address, one enabled Processor Local APIC per vCPU
 * (ACPI processor UID = APIC ID = vCPU index, as the MP table and CPUID say), and the IOAPIC with
 * GSI base 0. The IOAPIC id is the MP table's (ioapicId: one past the last APIC id); Linux takes
 * the id from here and never writes it to the x86-64 IOAPIC. No interrupt source overrides: every
 * device's trigger and polarity come from its Extended Interrupt descriptor in the DSDT, which
 * Linux uses as is (only the legacy IRQ()/IRQNoFlags() descriptors consult overrides).
 */
export function buildMadt(vcpus: number): Uint8Array {
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MPTABLE_MAX_VCPUS) {
    throw new BootSetupError(`MADT: ${vcpus} vCPUs requested, between 1 and ${MPTABLE_MAX_VCPUS} are possible`);
  }
  const body = new Uint8Array(MADT_HEADER_SIZE - SDT_HEADER_SIZE + vcpus * MADT_LOCAL_APIC_SIZE + MADT_IO_APIC_SIZE);
  const dv = new DataView(body.buffer);
  dv.setUint32(MADT_LOCAL_APIC_ADDRESS - SDT_HEADER_SIZE, LAPIC_START, true);
  dv.setUint32(MADT_FLAGS - SDT_HEADER_SIZE, MADT_FLAGS_VALUE, true);
  let off = MADT_HEADER_SIZE - SDT_HEADER_SIZE;
  for (let id = 0; id < vcpus; id++) {
    body[off] = MADT_TYPE_LOCAL_APIC;
    body[off + 1] = MADT_LOCAL_APIC_SIZE;
    body[off + 2] = id; // ACPI Processor UID
    body[off + 3] = id; // APIC ID
    dv.setUint32(off + 4, LOCAL_APIC_ENABLED, true);
    off += MADT_LOCAL_APIC_SIZE;
  }
  body[off] = MADT_TYPE_IO_APIC;
  body[off + 1] = MADT_IO_APIC_SIZE;
  body[off + 2] = ioapicId(vcpus);
  // off + 3: reserved, 0.
  dv.setUint32(off + 4, IOAPIC_START, true);
  dv.setUint32(off + 8, IOAPIC_GSI_BASE, true);
  return sdt("APIC", MADT_REVISION, "TYPVAPIC", body);
}

/** Edge-triggered, active-high, exclusive: an ISA line, and what KVM's irqfd delivers (a pulse). */
const EDGE_HIGH = { edge: true, activeLow: false } as const;

/** The DSDT's AML body (after the header): Scope (\_SB_) with COM1, the i8042 and the virtio slots. */
export function dsdtAml(virtio: readonly VirtioMmioDevice[]): Uint8Array {
  checkVirtioDevices(virtio);
  const com1 = device(
    "COM1",
    name("_HID", integer(eisaId(HID_COM))),
    name("_UID", integer(0)),
    name("_DDN", string("COM1")),
    name("_CRS", resourceTemplate(io(ACPI_COM1.port, ACPI_COM1.port, 1, ACPI_COM1.length), extendedInterrupt(EDGE_HIGH, ACPI_COM1.gsi))),
  );
  const ps2 = device(
    "PS2_",
    name("_HID", integer(eisaId(HID_I8042))),
    name(
      "_CRS",
      resourceTemplate(
        io(ACPI_I8042.dataPort, ACPI_I8042.dataPort, 1, 1),
        io(ACPI_I8042.commandPort, ACPI_I8042.commandPort, 1, 1),
        extendedInterrupt(EDGE_HIGH, ACPI_I8042.gsi),
      ),
    ),
  );
  const slots = virtio.map((d, i) =>
    device(
      `V${i.toString().padStart(3, "0")}`,
      name("_HID", string(HID_VIRTIO_MMIO)),
      name("_UID", integer(i)),
      // ACPI 6.5 §6.2.17 _CCA: DMA is cache coherent (x86 assumes it anyway; Firecracker and QEMU say it).
      name("_CCA", ONE),
      name("_CRS", resourceTemplate(memory32Fixed(true, d.base, d.size), extendedInterrupt(EDGE_HIGH, d.gsi))),
    ),
  );
  return scope("\\_SB_", com1, ps2, ...slots);
}

/** DSDT (ACPI 6.5 §5.2.11.1): the definition block of `dsdtAml`. */
export function buildDsdt(virtio: readonly VirtioMmioDevice[]): Uint8Array {
  return sdt("DSDT", DSDT_REVISION, "TYPVDSDT", dsdtAml(virtio));
}

function checkVirtioDevices(virtio: readonly VirtioMmioDevice[]): void {
  if (virtio.length > MAX_VIRTIO_DEVICES) throw new BootSetupError(`ACPI: ${virtio.length} virtio-mmio devices; the DSDT names at most ${MAX_VIRTIO_DEVICES}`);
  const taken = new Map<number, string>([
    [ACPI_I8042.gsi, "the i8042"],
    [ACPI_COM1.gsi, "COM1"],
  ]);
  virtio.forEach((d, i) => {
    const what = `virtio-mmio device ${i} (${hex(d.base)}+${hex(d.size)})`;
    if (!Number.isInteger(d.base) || !Number.isInteger(d.size) || d.base < 0 || d.size <= 0 || d.base + d.size > 0x1_0000_0000) {
      throw new BootSetupError(`ACPI: ${what} must be a non-empty window below 4 GiB`);
    }
    if (!Number.isInteger(d.gsi) || d.gsi < IOAPIC_GSI_BASE || d.gsi > IRQ_MAX) {
      throw new BootSetupError(`ACPI: ${what} has GSI ${d.gsi}; the IOAPIC has GSIs ${IOAPIC_GSI_BASE}-${IRQ_MAX}`);
    }
    const owner = taken.get(d.gsi);
    if (owner !== undefined) throw new BootSetupError(`ACPI: ${what} wants GSI ${d.gsi}, which ${owner} has (interrupts are exclusive)`);
    taken.set(d.gsi, `virtio-mmio device ${i}`);
  });
}

// --- Placement ---------------------------------------------------------------------------------------

export interface AcpiConfig {
  vcpus: number;
  virtioMmio: readonly VirtioMmioDevice[];
}

export interface AcpiPlacement {
  /** Where the RSDP is (boot_params.acpi_rsdp_addr, hvm_start_info.rsdp_paddr). */
  rsdpAddr: number;
  /** From the RSDP to the end of the last table. */
  range: Range;
  /** Each table by signature. */
  tables: { XSDT: Range; FACP: Range; APIC: Range; DSDT: Range };
}

/** Tables start on 16-byte boundaries (not required by ACPI; keeps every table's fields aligned). */
const TABLE_ALIGN = 16;
const alignUp = (n: number): number => Math.ceil(n / TABLE_ALIGN) * TABLE_ALIGN;

/**
 * Writes RSDP (at ACPI_RSDP_START), XSDT, FADT, MADT and DSDT (from ACPI_TABLES_START, below
 * ACPI_TABLES_END) into `mem`, zeroing the gaps between them, and says where each one went.
 */
export function writeAcpiTables(mem: GuestMemory, cfg: AcpiConfig): AcpiPlacement {
  const madt = buildMadt(cfg.vcpus);
  const dsdtBytes = buildDsdt(cfg.virtioMmio);
  const xsdtSize = SDT_HEADER_SIZE + 8 * 2;
  const xsdtAddr = ACPI_TABLES_START;
  const fadtAddr = alignUp(xsdtAddr + xsdtSize);
  const madtAddr = alignUp(fadtAddr + FADT_SIZE);
  const dsdtAddr = alignUp(madtAddr + madt.length);
  const end = dsdtAddr + dsdtBytes.length;
  if (end > ACPI_TABLES_END) {
    throw new BootSetupError(`ACPI tables need ${hex(end - ACPI_TABLES_START)} bytes from ${hex(ACPI_TABLES_START)}; they must end by ${hex(ACPI_TABLES_END)}`);
  }
  const fadt = buildFadt(dsdtAddr);
  const xsdt = buildXsdt([fadtAddr, madtAddr]);
  if (xsdt.length !== xsdtSize) throw new Error(`internal: XSDT is ${xsdt.length} bytes, ${xsdtSize} were reserved`);
  const rsdp = buildRsdp(xsdtAddr);
  const image = new Uint8Array(end - ACPI_RSDP_START);
  const put = (addr: number, bytes: Uint8Array): Range => {
    image.set(bytes, addr - ACPI_RSDP_START);
    return { addr, size: bytes.length };
  };
  put(ACPI_RSDP_START, rsdp);
  const tables = { XSDT: put(xsdtAddr, xsdt), FACP: put(fadtAddr, fadt), APIC: put(madtAddr, madt), DSDT: put(dsdtAddr, dsdtBytes) };
  mem.write(ACPI_RSDP_START, image);
  return { rsdpAddr: ACPI_RSDP_START, range: { addr: ACPI_RSDP_START, size: image.length }, tables };
}
