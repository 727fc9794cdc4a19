// What the VM lifecycle (vm.ts) needs from the hypervisor below it, and nothing more: vCPUs it
// can hand to worker threads and kick, an interrupt line, and the loaded guest. The KVM machine
// is built by builder.ts; tests build a fake one to exercise threads, signals and stops
// without /dev/kvm.

import type { GuestMemory } from "../memory/guest-memory.js";
import type { CardRegion } from "../cards/index.js";
import type { BootSummary } from "./builder.js";
import type { DeviceSpec, DriveConfig } from "./drives.js";
import type { PooledVcpuHandle } from "./vcpu-pooled.js";

/** A virtio-mmio device slot whose backend is a card (DESIGN.md §1: off the vCPU threads). */
export interface VirtioSlot {
  name: string;
  base: number;
  gsi: number;
  /** The transport's guest-visible state, shared by the vCPU workers and the card. */
  state: SharedArrayBuffer;
  /** Signalled by a guest QueueNotify write (KVM_IOEVENTFD), read by the card. */
  notifyFd: number;
  /** Written by the card to raise the device interrupt (KVM_IRQFD). */
  irqFd: number;
  device: DeviceSpec;
}

/** The emulated ATA drive (drives.ts AtaDriveSlot), opened: every vCPU worker puts it on its PIO bus. */
export interface AtaSlot {
  drive: DriveConfig;
  /** Command block base (0x1f0); the control block is at ATA_PRIMARY_CONTROL_BASE. */
  port: number;
  irq: number;
  /** The device state every worker's AtaDevice shares (devices/ata createAtaState). */
  state: SharedArrayBuffer;
  /** The image, opened once by the VMM; descriptors are process-wide, so every worker uses this one. */
  imageFd: number;
  sizeBytes: number;
  readOnly: boolean;
}

/** The dom0 drive (drives.ts Dom0DriveSlot) with its eventfds; the back-end process starts with the VM. */
export interface Dom0Slot {
  drive: DriveConfig;
  ringGpa: number;
  port: number;
  gsi: number;
  sectors: number;
  /** Signalled by a doorbell write (a PIO ioeventfd on KVM, else the doorbell device); read by Dom0. */
  notifyFd: number;
  /** Written by Dom0 to raise the interrupt (an irqfd on `gsi` on KVM). */
  irqFd: number;
}

export interface MachineVcpu {
  readonly id: number;
  /** Sets kvm_run.immediate_exit (or its double): the next run returns EINTR at once. */
  setImmediateExit(value: 0 | 1): void;
  /** Plain data the vCPU's worker thread opens its vCPU from (posted with the worker data). */
  readonly backend: unknown;
  /**
   * Opens the vCPU on the calling thread to run pooled (vcpu-pooled.ts): KVM_RUN on libuv's pool,
   * exits on this thread's event loop. Absent where the machine cannot.
   */
  openPooled?(): PooledVcpuHandle;
}

export interface Machine {
  /** The worker entry that opens `MachineVcpu.backend` and runs the exit loop. */
  readonly workerUrl: URL;
  readonly vcpus: readonly MachineVcpu[];
  /** Drives an ISA interrupt line from the main thread (console input). */
  irqLine(line: number, level: boolean): void;
  readonly boot: BootSummary;
  readonly memory: GuestMemory;
  /** Virtio devices served by cards. */
  readonly virtio: readonly VirtioSlot[];
  /** The emulated ATA drive, if the VM has one. */
  readonly ata?: AtaSlot;
  /** The dom0 drive, if the VM has one. */
  readonly dom0?: Dom0Slot;
  /** The memfd behind guest RAM and where each region lies in it, so a card can map RAM itself. */
  readonly guestMemfd?: { fd: number; regions: CardRegion[] };
  /** Releases every host resource. Only once no vCPU thread runs. */
  close(): void;
}
