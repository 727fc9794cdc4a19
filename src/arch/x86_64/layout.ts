// Guest-physical layout of an x86-64 Typervisor microVM: named addresses and sizes only,
// each with the reason it sits where it does (the Firecracker `layout.rs` habit).
//
//   0x0000_0000  real-mode IVT + BIOS data area (left alone)
//   0x0000_0500  GDT, then IDT
//   0x0000_6000  PVH hvm_start_info + modlist + memmap (PVH boots only)
//   0x0000_7000  zero page (struct boot_params, Linux 64-bit boots only)
//   0x0000_8000  boot stack (grows down from 0x8ff0)
//   0x0000_9000  PML4, PDPT, PDs (identity map)
//   0x0002_0000  kernel command line
//   0x0009_fc00  EBDA: MP floating pointer + MP config table; reserved up to 1 MiB
//   0x000e_0000  ACPI: RSDP, then XSDT, FADT, MADT, DSDT (below 1 MiB)
//   0x0010_0000  high memory: ELF kernels load here or above
//   0x0100_0000  default bzImage load address (16 MiB)
//   0xc000_0000  32-bit MMIO gap (not RAM) up to 4 GiB: virtio-mmio, IOAPIC, LAPIC, KVM's private pages
//   0x1_0000_0000  RAM above 3 GiB continues here

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** x86 base page size (Intel SDM Vol.3 §4.3). */
export const PAGE_SIZE = 0x1000;

// --- Low memory: structures the VMM writes before the first KVM_RUN ----------------------------

/** GDT: 0x500 is the first byte after the BIOS data area (0x400–0x4ff), as in Firecracker. */
export const BOOT_GDT_START = 0x500;
/** Room for 8 descriptors: null, code32, code64, data, and a 16-byte 64-bit TSS descriptor (gdt.ts). */
export const BOOT_GDT_MAX_SIZE = 0x40;
/** IDT: an empty (limit 7) table right after the GDT; the guest installs its own. */
export const BOOT_IDT_START = BOOT_GDT_START + BOOT_GDT_MAX_SIZE;

/** PVH: hvm_start_info (56 bytes) at the start of a page of its own below the zero page (Firecracker). */
export const PVH_INFO_START = 0x6000;
/** PVH: hvm_modlist_entry array (one 32-byte entry: the initrd). */
export const PVH_MODLIST_START = 0x6040;
/** PVH: hvm_memmap_table_entry array (24 bytes each) up to the zero page. */
export const PVH_MEMMAP_START = 0x6080;
/** PVH: how many memmap entries fit before the zero page. */
export const PVH_MEMMAP_MAX_ENTRIES = Math.floor((0x7000 - PVH_MEMMAP_START) / 24);

/** Zero page (struct boot_params, 4 KiB): Firecracker's ZERO_PAGE_START. */
export const ZERO_PAGE_START = 0x7000;
/** boot.rst: struct boot_params is one 4 KiB page. */
export const ZERO_PAGE_SIZE = 0x1000;

/** Initial stack pointer: top of the page after the zero page, 16-byte aligned (Firecracker). */
export const BOOT_STACK_POINTER = 0x8ff0;

/** Identity-map page tables: PML4, then PDPT, then one PD per GiB mapped (paging.ts). */
export const PML4_START = 0x9000;
export const PDPT_START = 0xa000;
export const PD_START = 0xb000;
/** Four PDs (0xb000–0xefff) map the first 4 GiB with 2 MiB pages. */
export const PD_MAX_COUNT = 4;

/** Kernel command line (Firecracker's CMDLINE_START). */
export const CMDLINE_START = 0x20000;
/** Linux x86 COMMAND_LINE_SIZE (arch/x86/include/asm/setup.h): 2048 bytes including the NUL. */
export const CMDLINE_MAX_SIZE = 2048;

/** Start of the Extended BIOS Data Area; from here to 1 MiB is reserved in the e820 map. */
export const EBDA_START = 0x9fc00;
/** MP spec 1.4 §4: the floating pointer must lie in the first KiB of the EBDA (Linux scans 639K–640K). */
export const MPTABLE_START = EBDA_START;

/** First byte above the legacy 1 MiB area (ISA hole, BIOS ROM); ELF kernels must load at or above it. */
export const HIMEM_START = 0x100000;
/** Default bzImage load address when pref_address is unusable: 16 MiB (Linux CONFIG_PHYSICAL_START default). */
export const BZIMAGE_DEFAULT_LOAD = 0x100_0000;

/**
 * ACPI RSDP: 0xE0000 starts the BIOS read-only area an OS without a boot-loader pointer scans for
 * "RSD PTR " on 16-byte boundaries (ACPI 6.5 §5.2.5.1); Firecracker's RSDP_ADDR. Inside the
 * e820-reserved [EBDA_START, 1 MiB), so the OS never takes it as RAM.
 */
export const ACPI_RSDP_START = 0xe0000;
/** XSDT, FADT, MADT, DSDT: right after the 36-byte RSDP (ACPI 6.5 §5.2.5.3), on a 64-byte boundary. */
export const ACPI_TABLES_START = ACPI_RSDP_START + 0x40;
/** The ACPI tables end (exclusive) at 1 MiB, still inside the reserved BIOS area. */
export const ACPI_TABLES_END = HIMEM_START;

// --- The 32-bit MMIO gap [3 GiB, 4 GiB): never RAM ---------------------------------------------

/** Start of the 32-bit MMIO gap: RAM stops at 3 GiB and resumes at 4 GiB. */
export const MMIO_GAP_START = 0xc000_0000;
/** End (exclusive) of the 32-bit MMIO gap: 4 GiB. */
export const MMIO_GAP_END = 0x1_0000_0000;

/** Left unassigned on purpose: the probe's MMIO-exit benchmark writes here (DESIGN.md §6, as on QEMU microvm). */
export const MMIO_UNASSIGNED_PROBE_ADDR = 0xd000_0000;
/** First virtio-mmio device window; one page after the probe's unassigned address. */
export const VIRTIO_MMIO_START = 0xd000_1000;
/** One page per virtio-mmio device (virtio 1.2 §4.2.2 registers fit in 0x200; page-sized for mapping). */
export const VIRTIO_MMIO_SLOT_SIZE = 0x1000;
/** End (exclusive) of the virtio-mmio window: room for 4095 devices, far below the IOAPIC. */
export const VIRTIO_MMIO_END = 0xd100_0000;

/** IOAPIC registers: the architectural default base (Intel 82093AA datasheet; MP spec 1.4 §3.6.6). */
export const IOAPIC_START = 0xfec0_0000;
/** Local APIC registers: the architectural default base (Intel SDM Vol.3 §11.4.1, IA32_APIC_BASE reset value). */
export const LAPIC_START = 0xfee0_0000;

/** KVM_SET_IDENTITY_MAP_ADDR: one page KVM uses for real-mode emulation on VMX (linux/kvm.h). */
export const KVM_IDENTITY_MAP_START = 0xfffb_c000;
/** KVM_SET_TSS_ADDR: three pages KVM needs on VMX; placed right after the identity-map page. */
export const KVM_TSS_START = 0xfffb_d000;
/** KVM_SET_TSS_ADDR needs 3 pages (Documentation/virt/kvm/api.rst). */
export const KVM_TSS_SIZE = 3 * PAGE_SIZE;

// --- Interrupt lines -----------------------------------------------------------------------------

/** First GSI handed to virtio-mmio devices (Firecracker's IRQ_BASE; ISA 0–4 stay with legacy devices). */
export const IRQ_BASE = 5;
/** Last GSI on the 24-pin IOAPIC (Intel 82093AA: 24 redirection entries). */
export const IRQ_MAX = 23;

/**
 * The guest RAM regions for a VM of `sizeBytes`: one region from 0 up to the MMIO gap, and when
 * the guest has more than 3 GiB, the rest starting at 4 GiB.
 */
export function memoryLayout(sizeBytes: number): Array<[gpa: number, size: number]> {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % PAGE_SIZE !== 0) {
    throw new RangeError(`guest memory size ${sizeBytes} must be a positive multiple of ${PAGE_SIZE} bytes`);
  }
  if (sizeBytes <= MMIO_GAP_START) return [[0, sizeBytes]];
  return [
    [0, MMIO_GAP_START],
    [MMIO_GAP_END, sizeBytes - MMIO_GAP_START],
  ];
}
