// The one wiring point: from validated config to a VM whose vCPUs are ready to run.
// Order follows what KVM requires: irqchip and PIT before any vCPU exists (so each vCPU gets
// an in-kernel LAPIC and irqfd works), memory slots before the kernel is loaded through them,
// CPUID before the first KVM_RUN.

import { openedKvmVcpu } from "./kvm-vcpu.js";
import { Kvm, MpState, type VmFd, type VcpuFd } from "../kvm/index.js";
import {
  KVM_CAP_IRQCHIP, KVM_CAP_USER_MEMORY, KVM_CAP_SET_TSS_ADDR, KVM_CAP_EXT_CPUID, KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD,
  KVM_CAP_PIT2, KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_MP_STATE, KVM_CAP_SET_IDENTITY_MAP_ADDR,
} from "../sys/index.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import { createMemfdGuestMemory, type MemfdGuestMemory } from "../memory/create.js";
import type { AtaSlot, Dom0Slot, Machine, VirtioSlot } from "./machine.js";
import type { DevicePlan, DeviceSlot } from "./drives.js";
import { openAtaSlot, closeAtaSlot, openDom0Slot, closeDom0Slot } from "./comparison-drives.js";
import { DOORBELL_NOTIFY } from "../dom0/blkif.js";
import * as sys from "../sys/index.js";
import { createTransportState } from "../cards/index.js";
import { MMIO_QUEUE_NOTIFY } from "../devices/virtio/spec.js";
import type { KvmVcpuBackend } from "./vcpu-worker.js";
import {
  prepareBoot, parseKernelImage, memoryLayout, applySregsPatch, vcpuCpuid, KVM_TSS_START, KVM_IDENTITY_MAP_START, VIRTIO_MMIO_SLOT_SIZE,
  type BootProtocol, type E820Entry, type Range, type VirtioMmioDevice,
} from "../arch/x86_64/index.js";

/** A file given to the VM: its bytes and a name for messages. */
export interface KernelSource {
  name: string;
  bytes: Uint8Array;
}

/** What the loader did, for reports and tests (the guest's view must match it). */
export interface BootSummary {
  protocol: BootProtocol;
  kernelFormat: string;
  entry: number;
  cmdline: Range;
  initrd?: Range;
  e820: E820Entry[];
  apStartup: "direct64" | "sipi";
  bootInfoAddr: number;
}

/** Capabilities the VMM cannot run without, checked once with one error naming all missing. */
export const REQUIRED_CAPS = [
  KVM_CAP_IRQCHIP,
  KVM_CAP_USER_MEMORY,
  KVM_CAP_SET_TSS_ADDR,
  KVM_CAP_SET_IDENTITY_MAP_ADDR,
  KVM_CAP_EXT_CPUID,
  KVM_CAP_MP_STATE,
  KVM_CAP_PIT2,
  KVM_CAP_IOEVENTFD,
  KVM_CAP_IRQFD,
  KVM_CAP_IMMEDIATE_EXIT,
] as const;

// Local APIC register offsets and LVT delivery modes. Intel SDM Vol.3 §11.5.1, Table 11-1.
const APIC_LVT0 = 0x350;
const APIC_LVT1 = 0x360;
const APIC_DELIVERY_MODE_MASK = 0x700;
const APIC_MODE_EXTINT = 0x7;
const APIC_MODE_NMI = 0x4;

export interface BootInputs {
  kernel: KernelSource;
  initrd?: KernelSource;
  cmdline: string;
  bootProtocol?: BootProtocol;
  /** The virtio-mmio windows, for the ACPI DSDT (buildKvmMachine fills it from deviceSlots). */
  virtioMmio?: readonly VirtioMmioDevice[];
}

/** VM-wide set-up: capabilities, KVM's private pages, interrupt controllers, memory slots. */
export function configureVm(kvm: Kvm, vm: VmFd, mem: GuestMemory): void {
  kvm.requireExtensions(REQUIRED_CAPS);
  // Intel VMX needs three pages for the real-mode TSS and one for the identity map; both sit
  // in the MMIO gap, outside guest RAM (layout.ts).
  vm.setTssAddr(KVM_TSS_START);
  vm.setIdentityMapAddr(BigInt(KVM_IDENTITY_MAP_START));
  vm.createIrqchip();
  vm.createPit2();
  mem.regions.forEach((r, slot) => {
    if (r.hostAddr === undefined) throw new Error(`guest memory region ${slot} has no host mapping`);
    vm.setUserMemoryRegion({
      slot,
      flags: 0,
      guestPhysAddr: BigInt(r.gpa),
      memorySize: BigInt(r.size),
      userspaceAddr: r.hostAddr,
    });
  });
}

/** Loads the kernel and boot tables into `mem` and puts every vCPU in its boot state. */
export function configureVcpus(kvm: Kvm, vcpus: VcpuFd[], mem: GuestMemory, inputs: BootInputs): BootSummary {
  const plan = prepareBoot(mem, {
    kernel: inputs.kernel.bytes,
    initrd: inputs.initrd?.bytes,
    cmdline: inputs.cmdline,
    vcpus: vcpus.length,
    protocol: inputs.bootProtocol,
    virtioMmio: inputs.virtioMmio,
  });
  const supported = kvm.supportedCpuid();
  for (const vcpu of vcpus) {
    vcpu.setCpuid2(vcpuCpuid(supported, { vcpuId: vcpu.id, vcpuCount: vcpus.length }));
    vcpu.setMsrs(plan.msrs);
    setLocalInterrupts(vcpu);
    const state = plan.vcpus[vcpu.id];
    if (state === null || state === undefined) continue; // waits for the BSP's INIT/SIPI
    vcpu.setRegs(state.regs);
    vcpu.setSregs(applySregsPatch(vcpu.getSregs(), state.sregsPatch));
    vcpu.setFpu(state.fpu);
    // An AP created with an in-kernel LAPIC waits for SIPI; one with a prepared long-mode
    // state starts at once.
    if (vcpu.id !== 0) vcpu.setMpState(MpState.RUNNABLE);
  }
  const summary: BootSummary = {
    protocol: plan.protocol,
    kernelFormat: plan.kernel.format,
    entry: plan.protocol === "linux64" ? plan.kernel.entry64 : plan.kernel.pvhEntry!,
    cmdline: plan.cmdline,
    e820: plan.e820,
    apStartup: plan.apStartup,
    bootInfoAddr: plan.bootInfoAddr,
  };
  if (plan.initrd !== undefined) summary.initrd = plan.initrd;
  return summary;
}

/** LINT0 as ExtINT (the PIC's output) and LINT1 as NMI, as the MP spec's virtual-wire mode wants. */
function setLocalInterrupts(vcpu: VcpuFd): void {
  const lapic = vcpu.getLapic();
  const view = new DataView(lapic.buffer, lapic.byteOffset, lapic.byteLength);
  const set = (reg: number, mode: number) => {
    const v = view.getUint32(reg, true);
    view.setUint32(reg, ((v & ~APIC_DELIVERY_MODE_MASK) | (mode << 8)) >>> 0, true);
  };
  set(APIC_LVT0, APIC_MODE_EXTINT);
  set(APIC_LVT1, APIC_MODE_NMI);
  vcpu.setLapic(lapic);
}

export interface KvmMachineConfig extends BootInputs {
  vcpus: number;
  memMiB: number;
  kvmPath?: string;
  /** Virtio devices with their slots (drives.ts); their descriptions must already be on `cmdline`. */
  deviceSlots?: readonly DeviceSlot[];
  /** The emulated and dom0 drives (drives.ts planDevices); described on `cmdline` too. */
  legacyDrives?: Pick<DevicePlan, "ata" | "dom0">;
}

/**
 * Per virtio device: its shared transport state, the notify eventfd registered as an ioeventfd on the
 * queue's QueueNotify (a guest kick then never exits to userspace) and the irqfd on its GSI
 * (src/cards/README.md). Needs the in-kernel irqchip; done before any vCPU exists.
 */
function wireVirtioSlots(vm: VmFd, slots: readonly DeviceSlot[], opened: VirtioSlot[]): void {
  for (const slot of slots) {
    const notifyFd = sys.eventfd(0, sys.EFD_CLOEXEC);
    let irqFd: number;
    try {
      irqFd = sys.eventfd(0, sys.EFD_CLOEXEC);
    } catch (e) {
      sys.close(notifyFd);
      throw e;
    }
    opened.push({ name: slot.name, base: slot.base, gsi: slot.gsi, state: createTransportState(), notifyFd, irqFd, device: slot.device });
    // No data match: a kick on any of the device's queues (the value written is the queue index,
    // virtio 1.2 §4.2.2 QueueNotify) wakes its card, which serves every queue on each wake-up.
    vm.ioeventfd({ addr: BigInt(slot.base + MMIO_QUEUE_NOTIFY), len: 4, fd: notifyFd });
    vm.irqfd({ fd: irqFd, gsi: slot.gsi });
  }
}

/**
 * The dom0 drive: a PIO ioeventfd on the doorbell's event-channel port, so a guest notification
 * (the probe's `outl(port + 0, 0)`, guest/src/xenblk.c) wakes the back end without a userspace
 * exit; any value, 4 bytes wide (KVM matches the access length, api.rst KVM_IOEVENTFD). The xenbus
 * port (+4) still exits to the doorbell device on the vCPU thread. And the irqfd on its GSI.
 */
function wireDom0Slot(vm: VmFd, slot: Dom0Slot): void {
  vm.ioeventfd({ addr: BigInt(slot.port + DOORBELL_NOTIFY), len: 4, fd: slot.notifyFd, pio: true });
  vm.irqfd({ fd: slot.irqFd, gsi: slot.gsi });
}

/** The script a KVM vCPU's worker thread runs (vcpu-worker.ts). */
const KVM_VCPU_WORKER_URL = new URL("./vcpu-worker.js", import.meta.url);

/**
 * Builds a KVM machine ready to run: KVM objects, memfd guest memory, the loaded kernel,
 * configured vCPUs. A file that is not a kernel is refused before any KVM object exists.
 */
export function buildKvmMachine(config: KvmMachineConfig): Machine {
  parseKernelImage(config.kernel.bytes);
  const kvm = Kvm.open(config.kvmPath);
  let vm: VmFd | undefined;
  let mem: MemfdGuestMemory | undefined;
  const vcpus: VcpuFd[] = [];
  const virtio: VirtioSlot[] = [];
  let ata: AtaSlot | undefined;
  let dom0: Dom0Slot | undefined;
  const closeVirtio = () => {
    for (const v of virtio) {
      sys.close(v.notifyFd);
      sys.close(v.irqFd);
    }
    if (ata !== undefined) closeAtaSlot(ata);
    if (dom0 !== undefined) closeDom0Slot(dom0);
  };
  try {
    vm = kvm.createVm();
    mem = createMemfdGuestMemory(memoryLayout(config.memMiB * 1024 * 1024));
    configureVm(kvm, vm, mem.memory);
    wireVirtioSlots(vm, config.deviceSlots ?? [], virtio);
    // The emulated drive needs nothing from KVM: its exits reach the vCPU threads, and IRQ 14 is
    // raised with KVM_IRQ_LINE on the in-kernel PIC/IOAPIC like the UART's.
    if (config.legacyDrives?.ata !== undefined) ata = openAtaSlot(config.legacyDrives.ata);
    if (config.legacyDrives?.dom0 !== undefined) {
      dom0 = openDom0Slot(config.legacyDrives.dom0);
      wireDom0Slot(vm, dom0);
    }
    for (let i = 0; i < config.vcpus; i++) vcpus.push(vm.createVcpu(i));
    const virtioMmio = config.virtioMmio ?? (config.deviceSlots ?? []).map((s) => ({ base: s.base, size: VIRTIO_MMIO_SLOT_SIZE, gsi: s.gsi }));
    const boot = configureVcpus(kvm, vcpus, mem.memory, { ...config, virtioMmio });
    const vmFd = vm;
    const memory = mem;
    return {
      workerUrl: KVM_VCPU_WORKER_URL,
      vcpus: vcpus.map((v) => ({
        id: v.id,
        setImmediateExit: (value: 0 | 1) => {
          v.kvmRun.immediateExit = value;
        },
        backend: { vmFd: vmFd.fd, vcpuFd: v.fd, runAddress: v.runAddress, runSize: v.runSize } satisfies KvmVcpuBackend,
        openPooled: () => ({ ...openedKvmVcpu(vmFd, v), interrupt: () => v.interruptAsyncRun() }),
      })),
      irqLine: (line, level) => vmFd.irqLine(line, level),
      boot,
      memory: memory.memory,
      virtio,
      ...(ata !== undefined ? { ata } : {}),
      ...(dom0 !== undefined ? { dom0 } : {}),
      guestMemfd: {
        fd: memory.fd,
        regions: memory.memory.regions.map((r) => ({ gpa: r.gpa, size: r.size, fdOffset: r.fdOffset })),
      },
      close() {
        closeVirtio();
        for (const v of vcpus) v.close();
        memory.close();
        vmFd.close();
        kvm.close();
      },
    };
  } catch (e) {
    closeVirtio();
    for (const v of vcpus) v.close();
    mem?.close();
    vm?.close();
    kvm.close();
    throw e;
  }
}

// Known before any machine is built: Vm.create starts the vCPU threads while this one is built.
buildKvmMachine.vcpuWorkerUrl = KVM_VCPU_WORKER_URL;
