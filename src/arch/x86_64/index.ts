// x86-64 boot: everything that knows x86 boot details (DESIGN.md §2), and `prepareBoot`, which
// puts a kernel, its command line and initrd, and the firmware-ish tables into guest memory and
// says how each vCPU must start. Pure: no KVM calls; the VMM applies the returned plan.

import type { GuestMemory } from "../../memory/guest-memory.js";
import type { MsrEntry } from "../../kvm/types.js";
import { e820Map, placeInitrd, writeBootParams, writeCmdline, writePvhStartInfo, type E820Entry, type Range } from "./bootparams.js";
import { BootSetupError } from "./errors.js";
import { writeAcpiTables, type AcpiPlacement, type VirtioMmioDevice } from "./acpi/index.js";
import { writeGdt, writeIdt } from "./gdt.js";
import { HIMEM_START, MPTABLE_START } from "./layout.js";
import { loadKernel, type KernelInfo } from "./loader.js";
import { bootMsrs } from "./msrs.js";
import { MPTABLE_MAX_VCPUS, writeMptable } from "./mptable.js";
import { writeIdentityPageTables } from "./paging.js";
import { apBootState, linux64BootState, pvhBootState, type VcpuBootState } from "./regs.js";

export * from "./layout.js";
export * from "./errors.js";
export * from "./elf.js";
export * from "./bzimage.js";
export * from "./loader.js";
export * from "./bootparams.js";
export * from "./gdt.js";
export * from "./paging.js";
export * from "./mptable.js";
export * from "./cpuid.js";
export * from "./msrs.js";
export * from "./regs.js";
export * from "./acpi/index.js";

export type BootProtocol = "linux64" | "pvh";

export interface PrepareBootOptions {
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
  vcpus: number;
  /**
   * How the BSP enters the kernel. Default: "linux64" when the image has a usable 64-bit entry
   * (every bzImage; an ELF whose e_entry lies in a loaded segment), else "pvh" (an ELF with only
   * a PVH note). Asking for a protocol the image lacks is an error.
   */
  protocol?: BootProtocol;
  /**
   * The virtio-mmio slots, described to the guest in the ACPI DSDT (one LNRO0005 device each).
   * The command line's `virtio_mmio.device=` entries are the caller's business and stay as they are.
   */
  virtioMmio?: readonly VirtioMmioDevice[];
}

export interface BootPlan {
  protocol: BootProtocol;
  kernel: KernelInfo;
  /**
   * Index = vCPU id. A state: set regs, sregs (KVM_GET_SREGS then `applySregsPatch`), fpu and MSRs,
   * and make the vCPU runnable (KVM_SET_MP_STATE RUNNABLE for APs). null: leave the vCPU in its reset
   * state; it waits for the BSP's INIT/SIPI ("sipi").
   */
  vcpus: Array<VcpuBootState | null>;
  /** The same list for every vCPU (KVM_SET_MSRS). */
  msrs: MsrEntry[];
  initrd?: Range;
  cmdline: Range;
  e820: E820Entry[];
  /** "direct64": the image has a Typervisor AP-entry note, every AP starts there in long mode. */
  apStartup: "direct64" | "sipi";
  /** linux64: the zero page address (rsi); pvh: the hvm_start_info address (ebx). */
  bootInfoAddr: number;
  mptable: Range;
  /** The ACPI tables (RSDP at ACPI_RSDP_START, then XSDT, FADT, MADT, DSDT), always written. */
  acpi: AcpiPlacement;
}

/** Loads kernel, command line and initrd into `mem`, writes the boot tables, and returns the plan. */
export function prepareBoot(mem: GuestMemory, opts: PrepareBootOptions): BootPlan {
  if (!Number.isInteger(opts.vcpus) || opts.vcpus < 1 || opts.vcpus > MPTABLE_MAX_VCPUS) {
    throw new BootSetupError(`${opts.vcpus} vCPUs requested: between 1 and ${MPTABLE_MAX_VCPUS} are supported`);
  }
  if (!mem.contains(0, HIMEM_START)) {
    throw new BootSetupError("guest RAM must cover the first 1 MiB, where the boot tables live");
  }
  const kernel = loadKernel(opts.kernel, mem);
  const protocol = opts.protocol ?? (kernel.entry64Usable ? "linux64" : "pvh");
  if (protocol === "linux64" && !kernel.entry64Usable) {
    throw new BootSetupError("linux64 boot requested but the ELF entry point is not inside any loaded segment");
  }
  if (protocol === "pvh" && kernel.pvhEntry === undefined) {
    throw new BootSetupError(`PVH boot requested but the ${kernel.format} image has no XEN_ELFNOTE_PHYS32_ENTRY note`);
  }

  const cmdline = writeCmdline(mem, opts.cmdline, kernel.cmdlineMax);
  let initrd: Range | undefined;
  if (opts.initrd !== undefined) {
    const addr = placeInitrd(mem, opts.initrd.length, kernel);
    mem.write(addr, opts.initrd);
    initrd = { addr, size: opts.initrd.length };
  }
  const e820 = e820Map(mem.regions.map((r) => [r.gpa, r.size] as const));
  // The MP table stays for kernels built with CONFIG_X86_MPPARSE; ACPI is what distro kernels read.
  const mpBytes = writeMptable(mem, opts.vcpus);
  const acpi = writeAcpiTables(mem, { vcpus: opts.vcpus, virtioMmio: opts.virtioMmio ?? [] });
  const gdt = writeGdt(mem);
  const idt = writeIdt(mem);
  const pml4 = writeIdentityPageTables(mem);

  let bsp: VcpuBootState;
  let bootInfoAddr: number;
  if (protocol === "linux64") {
    bootInfoAddr = writeBootParams(mem, { kernel, cmdlineAddr: cmdline.addr, cmdlineSize: cmdline.size, initrd, e820, rsdpAddr: acpi.rsdpAddr });
    bsp = strip(linux64BootState({ entry: kernel.entry64, gdt, idt, pml4, zeroPage: bootInfoAddr }));
  } else {
    bootInfoAddr = writePvhStartInfo(mem, { cmdline, initrd, e820, rsdpAddr: acpi.rsdpAddr });
    bsp = strip(pvhBootState({ entry: kernel.pvhEntry!, startInfo: bootInfoAddr, gdt, idt }));
  }

  const apStartup = kernel.apEntry !== undefined ? "direct64" : "sipi";
  const vcpus: Array<VcpuBootState | null> = [bsp];
  if (apStartup === "direct64") {
    // APs always enter in long mode, even when the BSP took the PVH entry; rsi is the BSP's boot
    // information either way (the zero page, or hvm_start_info under PVH).
    const template = protocol === "linux64" ? bsp : strip(linux64BootState({ entry: kernel.apEntry!, gdt, idt, pml4, zeroPage: bootInfoAddr }));
    for (let id = 1; id < opts.vcpus; id++) vcpus.push(strip(apBootState(template, id, kernel.apEntry!)));
  } else {
    for (let id = 1; id < opts.vcpus; id++) vcpus.push(null);
  }

  const plan: BootPlan = {
    protocol,
    kernel,
    vcpus,
    msrs: bootMsrs(),
    cmdline,
    e820,
    apStartup,
    bootInfoAddr,
    mptable: { addr: MPTABLE_START, size: mpBytes.length },
    acpi,
  };
  if (initrd !== undefined) plan.initrd = initrd;
  return plan;
}

/** Drops the `sregs` closure so the state is structured-cloneable. */
function strip(s: VcpuBootState): VcpuBootState {
  return { regs: s.regs, sregsPatch: s.sregsPatch, fpu: s.fpu };
}
