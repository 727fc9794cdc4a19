// Intel MultiProcessor Specification 1.4 tables: the floating pointer structure and the MP
// configuration table (processors, the ISA bus, the IOAPIC, interrupt routing), written in the
// EBDA where Linux's smp_scan_config() looks (639 KiB–640 KiB). Entry choices follow Firecracker.

import type { GuestMemory } from "../../memory/guest-memory.js";
import { BootSetupError, hex } from "./errors.js";
import { checksumByte } from "./checksum.js";
import { HIMEM_START, IOAPIC_START, IRQ_MAX, LAPIC_START, MPTABLE_START } from "./layout.js";

/** MP spec 1.4 §4.1: floating pointer "_MP_", 16 bytes. */
const MPF_SIGNATURE = "_MP_";
const MPF_SIZE = 16;
/** MP spec 1.4 §4.2: configuration table header "PCMP", 44 bytes. */
const MPC_SIGNATURE = "PCMP";
const MPC_HEADER_SIZE = 44;
/** MP spec 1.4 §4.1/§4.2: SPEC_REV = 4 for version 1.4. */
const MP_SPEC_REV = 4;
const MPC_OEM_ID = "TYPERVSR"; // 8 bytes, space padded
const MPC_PRODUCT_ID = "MICROVM     "; // 12 bytes, space padded

/** MP spec 1.4 §4.3: entry types and sizes. */
const ENTRY_PROCESSOR = 0;
const ENTRY_BUS = 1;
const ENTRY_IOAPIC = 2;
const ENTRY_IO_INTERRUPT = 3;
const ENTRY_LOCAL_INTERRUPT = 4;
const PROCESSOR_ENTRY_SIZE = 20;
const OTHER_ENTRY_SIZE = 8;

/** MP spec 1.4 §4.3.1: CPU flags EN (enabled) and BP (bootstrap processor). */
const CPU_ENABLED = 1 << 0;
const CPU_BOOTSTRAP = 1 << 1;
/** Firecracker APIC_VERSION: local APIC version 0x14 (integrated APIC, SDM Vol.3 §11.4.8). */
const APIC_VERSION = 0x14;
/** Firecracker CPU_STEPPING: CPU signature family 6, model 0, stepping 0 (CPUID.1:EAX layout). */
const CPU_SIGNATURE = 0x600;
/** MP spec 1.4 Table 4-5: feature flags FPU (bit 0) and APIC (bit 9), as CPUID.1:EDX. */
const CPU_FEATURE_FPU = 1 << 0;
const CPU_FEATURE_APIC = 1 << 9;
/** MP spec 1.4 §4.3.3: IOAPIC flags EN. */
const IOAPIC_ENABLED = 1;
/** Firecracker: IOAPIC version 0x11 (82093AA IOAPICVER). */
const IOAPIC_VERSION = 0x11;
/** MP spec 1.4 Table 4-8: bus type string for ISA (6 bytes, space padded). */
const BUS_TYPE_ISA = "ISA   ";
const ISA_BUS_ID = 0;
/** MP spec 1.4 Table 4-10: interrupt types. */
const INT_TYPE_INT = 0;
const INT_TYPE_NMI = 1;
const INT_TYPE_EXTINT = 3;
/** MP spec 1.4 Table 4-10: polarity/trigger 0 = "conforms to the bus" (edge, active high on ISA). */
const IRQ_FLAGS_CONFORMING = 0;
/** MP spec 1.4 §4.3.5: destination local APIC id 0xFF = all local APICs. */
const ALL_LOCAL_APICS = 0xff;

/**
 * xAPIC ids are 8 bits and 0xFF is the broadcast id; the IOAPIC takes id N+1 (Firecracker), so at
 * most 253 vCPUs (ids 0..252, IOAPIC 253).
 */
export const MPTABLE_MAX_VCPUS = 253;

export function mptableSize(vcpus: number): number {
  const ioInts = IRQ_MAX + 1;
  return MPF_SIZE + MPC_HEADER_SIZE + vcpus * PROCESSOR_ENTRY_SIZE + OTHER_ENTRY_SIZE * (1 + 1 + ioInts + 2);
}

/** The IOAPIC's MP-table id for a VM of `vcpus` vCPUs (Firecracker: one past the last APIC id). */
export const ioapicId = (vcpus: number): number => vcpus + 1;

export { byteSum } from "./checksum.js";

/**
 * Writes the MP floating pointer at MPTABLE_START and the configuration table right after it.
 * APIC id = vCPU index; vCPU 0 is the bootstrap processor. Returns the bytes written.
 */
export function writeMptable(mem: GuestMemory, vcpus: number, at = MPTABLE_START): Uint8Array {
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MPTABLE_MAX_VCPUS) {
    throw new BootSetupError(`MP table: ${vcpus} vCPUs requested, between 1 and ${MPTABLE_MAX_VCPUS} are possible`);
  }
  const size = mptableSize(vcpus);
  if (at + size > HIMEM_START) {
    throw new BootSetupError(`MP table of ${size} bytes at ${hex(at)} would run past 1 MiB`);
  }
  const buf = new Uint8Array(size);
  const dv = new DataView(buf.buffer);
  const ascii = (off: number, s: string): void => {
    for (let i = 0; i < s.length; i++) buf[off + i] = s.charCodeAt(i);
  };
  const mpc = at + MPF_SIZE;

  // §4.1 floating pointer structure.
  ascii(0, MPF_SIGNATURE);
  dv.setUint32(4, mpc, true); // PHYSICAL ADDRESS POINTER
  buf[8] = MPF_SIZE / 16; // LENGTH in 16-byte paragraphs
  buf[9] = MP_SPEC_REV;
  // buf[10] checksum below; feature bytes 1..5 = 0: configuration table present, virtual-wire mode.

  // §4.2 configuration table header.
  const h = MPF_SIZE;
  ascii(h + 0, MPC_SIGNATURE);
  buf[h + 6] = MP_SPEC_REV;
  ascii(h + 8, MPC_OEM_ID);
  ascii(h + 16, MPC_PRODUCT_ID);
  dv.setUint32(h + 36, LAPIC_START, true); // ADDRESS OF LOCAL APIC

  let off = h + MPC_HEADER_SIZE;
  let count = 0;
  // §4.3.1 processor entries.
  for (let id = 0; id < vcpus; id++) {
    buf[off] = ENTRY_PROCESSOR;
    buf[off + 1] = id; // local APIC id
    buf[off + 2] = APIC_VERSION;
    buf[off + 3] = CPU_ENABLED | (id === 0 ? CPU_BOOTSTRAP : 0);
    dv.setUint32(off + 4, CPU_SIGNATURE, true);
    dv.setUint32(off + 8, CPU_FEATURE_FPU | CPU_FEATURE_APIC, true);
    off += PROCESSOR_ENTRY_SIZE;
    count++;
  }
  // §4.3.2 bus entry.
  buf[off] = ENTRY_BUS;
  buf[off + 1] = ISA_BUS_ID;
  ascii(off + 2, BUS_TYPE_ISA);
  off += OTHER_ENTRY_SIZE;
  count++;
  // §4.3.3 IOAPIC entry.
  const ioapic = ioapicId(vcpus);
  buf[off] = ENTRY_IOAPIC;
  buf[off + 1] = ioapic;
  buf[off + 2] = IOAPIC_VERSION;
  buf[off + 3] = IOAPIC_ENABLED;
  dv.setUint32(off + 4, IOAPIC_START, true);
  off += OTHER_ENTRY_SIZE;
  count++;
  // §4.3.4 I/O interrupt assignments: ISA IRQ n → IOAPIC pin n, for all 24 pins (Firecracker).
  for (let irq = 0; irq <= IRQ_MAX; irq++) {
    buf[off] = ENTRY_IO_INTERRUPT;
    buf[off + 1] = INT_TYPE_INT;
    dv.setUint16(off + 2, IRQ_FLAGS_CONFORMING, true);
    buf[off + 4] = ISA_BUS_ID;
    buf[off + 5] = irq;
    buf[off + 6] = ioapic;
    buf[off + 7] = irq;
    off += OTHER_ENTRY_SIZE;
    count++;
  }
  // §4.3.5 local interrupt assignments: ExtINT → LINT0 of the BSP, NMI → LINT1 of every CPU.
  const lint = (type: number, dstApic: number, pin: number): void => {
    buf[off] = ENTRY_LOCAL_INTERRUPT;
    buf[off + 1] = type;
    dv.setUint16(off + 2, IRQ_FLAGS_CONFORMING, true);
    buf[off + 4] = ISA_BUS_ID;
    buf[off + 5] = 0;
    buf[off + 6] = dstApic;
    buf[off + 7] = pin;
    off += OTHER_ENTRY_SIZE;
    count++;
  };
  lint(INT_TYPE_EXTINT, 0, 0);
  lint(INT_TYPE_NMI, ALL_LOCAL_APICS, 1);

  dv.setUint16(h + 4, off - h, true); // BASE TABLE LENGTH
  dv.setUint16(h + 34, count, true); // ENTRY COUNT
  buf[h + 7] = checksumByte(buf.subarray(h, off));
  buf[10] = checksumByte(buf.subarray(0, MPF_SIZE));
  mem.write(at, buf);
  return buf;
}
