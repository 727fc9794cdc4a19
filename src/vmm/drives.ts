// Block drives of a VM: validated at the edge (the image exists and can be opened the way the
// drive needs), given a place on the machine, and described to the guest on the kernel command
// line. Each drive takes one of three I/O paths (docs/xen-vs-nitro.md):
//   card      a virtio-mmio slot and an interrupt line, served by a card off the vCPU threads;
//             described the way Firecracker does (`virtio_mmio.device=<size>@<addr>:<irq>`)
//   emulated  the ATA disk on the primary channel (ports 0x1f0/0x3f6, ISA IRQ 14), handled on the
//             vCPU thread that takes each exit; `typervisor_ata=0x1f0:14`
//   dom0      a blkif ring + grant table in guest RAM, served by a Dom0 back-end process; a
//             doorbell at port 0x610 and a GSI of its own; `typervisor_xenblk=<ring>@<port>:<irq>:<sectors>`

import { DriveConfigError, openImage, type RateLimiterConfig } from "../cards/index.js";
import { ALL_VIRTIO_KINDS } from "../devices/virtio/kinds.js";
import { blkKind, type BlkCardConfig } from "../devices/virtio/blk/kind.js";
import type { DeviceInstance, VirtioDevicesConfig } from "../devices/virtio/device-kind.js";
import { VIRTIO_MMIO_START, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_END, IRQ_BASE, IRQ_MAX, EBDA_START, PAGE_SIZE, CMDLINE_START, CMDLINE_MAX_SIZE } from "../arch/x86_64/layout.js";
import { ATA_PRIMARY_COMMAND_BASE, ATA_PRIMARY_IRQ } from "../devices/ata/spec.js";
import { BLKIF_SECTOR_SIZE, XENBLK_DOORBELL_PORT, XENBLK_SHARED_BYTES, xenblkCmdline } from "../dom0/blkif.js";

/** How a drive's I/O reaches its image (docs/xen-vs-nitro.md). */
export type IoPath = "card" | "emulated" | "dom0";
export const IO_PATHS: readonly IoPath[] = ["card", "emulated", "dom0"];

export interface DriveConfig {
  /** Drive id (Firecracker's drive_id); also the virtio-blk serial (GET_ID), at most 20 bytes. */
  id: string;
  /** Raw image file. */
  path: string;
  readOnly?: boolean;
  /** Token buckets; card drives only (the other paths have no rate limiter). */
  rateLimiter?: RateLimiterConfig;
  /** The I/O path (default "card"). At most one emulated and one dom0 drive per VM. */
  ioPath?: IoPath;
}

/** virtio-rng fed from the host CSPRNG (Firecracker's entropy device). */
export interface EntropyConfig {
  rateLimiter?: RateLimiterConfig;
}

/** The guest's Nitro Secure Module: attestation signed by the security chip in `chipDir`. */
export interface NsmConfig {
  chipDir: string;
  /** module_id of DescribeNSM and of attestation documents (default: "typervisor-" + the VM id). */
  moduleId?: string;
}

/** What a virtio slot carries: the device's kind and its instance config (devices/virtio/kinds.ts). */
export type DeviceSpec = DeviceInstance;

export interface DeviceSlot {
  device: DeviceSpec;
  /** Bus and card name: virtio-blk-<id>, virtio-rng, virtio-nsm. */
  name: string;
  /** Guest-physical base of the device's virtio-mmio window. */
  base: number;
  /** The interrupt line (GSI) of the device. */
  gsi: number;
}

/** The emulated ATA disk: device 0 of the primary channel. */
export interface AtaDriveSlot {
  drive: DriveConfig;
  /** Command block base (8 ports); the control block is at 0x3f6 (devices/ata/spec.ts). */
  port: number;
  /** ISA interrupt line, raised by the vCPU thread that completes a command. */
  irq: number;
}

/** The Dom0 (xenblk) drive: ring + grant table in guest RAM, a doorbell port, an interrupt line. */
export interface Dom0DriveSlot {
  drive: DriveConfig;
  /** Guest-physical address of the ring page; the grant table page follows (XENBLK_SHARED_BYTES in all). */
  ringGpa: number;
  /** Doorbell: event channel at port + 0 (an ioeventfd on KVM), xenbus state at port + 4. */
  port: number;
  /** The GSI the back end raises through its irqfd. */
  gsi: number;
  /** 512-byte sectors of the image (blkif.h sectors are always 512 bytes), for the command line. */
  sectors: number;
}

/** Where every device of a VM goes. */
export interface DevicePlan {
  virtio: DeviceSlot[];
  ata?: AtaDriveSlot;
  dom0?: Dom0DriveSlot;
}

export { DriveConfigError };

/** virtio 1.2 §5.2.6: GET_ID answers at most 20 bytes. */
const MAX_ID_BYTES = 20;

/**
 * The xenblk ring and grant table: the two pages right below the page that holds the EBDA
 * (0x9d000-0x9efff; layout.ts EBDA_START = 0x9fc00). They stay e820 RAM on purpose: the front end
 * must see them as RAM (guest/src/xenblk.c refuses a ring that is not, "ring_not_ram", as a Linux
 * blkfront's ring is a page it owns), and nothing else uses them: the VMM's boot tables end at the
 * page tables (0xefff) and the command line (CMDLINE_START + CMDLINE_MAX_SIZE = 0x20800), the
 * probe guest lives at 1 MiB and up, and Linux since 5.13 never hands out RAM below 1 MiB
 * ("x86/setup: Always reserve the first 1M of RAM"). Belongs in layout.ts with the other addresses.
 */
export const XENBLK_RING_GPA = Math.floor(EBDA_START / PAGE_SIZE) * PAGE_SIZE - XENBLK_SHARED_BYTES;
if (XENBLK_RING_GPA < CMDLINE_START + CMDLINE_MAX_SIZE) throw new Error("layout: the xenblk ring overlaps the command line");

/**
 * Checks each device at the edge and places it: every drive is checked here (whatever its path),
 * then each virtio kind gives its instances in kinds.ts order — card drives first (so the first
 * of them is the guest's /dev/vda), then the entropy device, then the NSM — each on a virtio-mmio
 * slot; the emulated drive on the ATA primary channel; the dom0 drive on the xenblk ring, its
 * doorbell and the first GSI after the virtio slots. Throws DriveConfigError naming the drive and
 * the problem.
 */
export function planDevices(opts: VirtioDevicesConfig): DevicePlan {
  const drives = opts.drives ?? [];
  const ids = new Set<string>();
  let ata: DriveConfig | undefined;
  let dom0: { drive: DriveConfig; sizeBytes: number } | undefined;
  for (const drive of drives) {
    if (!/^[A-Za-z0-9_-]+$/.test(drive.id) || Buffer.byteLength(drive.id) > MAX_ID_BYTES) {
      throw new DriveConfigError(`drive id "${drive.id}" must be 1-${MAX_ID_BYTES} letters, digits, '_' or '-'`);
    }
    if (ids.has(drive.id)) throw new DriveConfigError(`drive id "${drive.id}" is used twice`);
    ids.add(drive.id);
    const io = drive.ioPath ?? "card";
    if (!IO_PATHS.includes(io)) throw new DriveConfigError(`drive ${drive.id}: I/O path "${String(io)}" is not one of ${IO_PATHS.join(", ")}`);
    if (io !== "card" && drive.rateLimiter !== undefined) {
      throw new DriveConfigError(`drive ${drive.id}: rate limiters are a card feature; an ${io} drive has none`);
    }
    if (io === "emulated" && ata !== undefined) {
      throw new DriveConfigError(`drive ${drive.id}: only one emulated drive fits (ATA primary channel, device 0), and ${ata.id} has it`);
    }
    if (io === "dom0" && dom0 !== undefined) {
      throw new DriveConfigError(`drive ${drive.id}: only one dom0 drive is supported (one xenblk ring and doorbell), and ${dom0.drive.id} has it`);
    }
    const sizeBytes = checkImage(drive);
    if (io === "emulated") ata = drive;
    else if (io === "dom0") dom0 = { drive, sizeBytes };
  }
  const specs: DeviceSpec[] = ALL_VIRTIO_KINDS.flatMap((kind) => kind.instances(opts).map((instance) => ({ kind, instance })));
  // Interrupt lines for the virtio slots and the dom0 drive; IRQ 14 stays with the ATA channel.
  const gsis: number[] = [];
  for (let g = IRQ_BASE; g <= IRQ_MAX; g++) if (ata === undefined || g !== ATA_PRIMARY_IRQ) gsis.push(g);
  const maxSlots = Math.min((VIRTIO_MMIO_END - VIRTIO_MMIO_START) / VIRTIO_MMIO_SLOT_SIZE, gsis.length - (dom0 !== undefined ? 1 : 0));
  if (specs.length > maxSlots) throw new DriveConfigError(`${specs.length} virtio devices configured; at most ${maxSlots} fit`);
  const plan: DevicePlan = {
    virtio: specs.map((device, i) => ({
      device,
      name: device.kind.slotName(device.instance),
      base: VIRTIO_MMIO_START + i * VIRTIO_MMIO_SLOT_SIZE,
      gsi: gsis[i]!,
    })),
  };
  if (ata !== undefined) plan.ata = { drive: ata, port: ATA_PRIMARY_COMMAND_BASE, irq: ATA_PRIMARY_IRQ };
  if (dom0 !== undefined) {
    plan.dom0 = {
      drive: dom0.drive,
      ringGpa: XENBLK_RING_GPA,
      port: XENBLK_DOORBELL_PORT,
      gsi: gsis[specs.length]!,
      sectors: Math.floor(dom0.sizeBytes / BLKIF_SECTOR_SIZE),
    };
  }
  return plan;
}

/** The drive id of a card drive's virtio device (a blk instance), else undefined. */
export function cardDriveId(device: DeviceSpec): string | undefined {
  return device.kind === blkKind ? blkKind.instanceId!(device.instance as BlkCardConfig) : undefined;
}

/** The virtio slots alone (every drive is still checked). */
export function assignDeviceSlots(opts: VirtioDevicesConfig): DeviceSlot[] {
  return planDevices(opts).virtio;
}

/** Drives alone (card drives become virtio-blk slots; all are checked). */
export function assignDriveSlots(drives: readonly DriveConfig[]): DeviceSlot[] {
  return assignDeviceSlots({ drives });
}

/** Opens the image the way its back end will (same checks, same messages), closes it, returns its size. */
function checkImage(drive: DriveConfig): number {
  try {
    const image = openImage(drive.path, drive.readOnly === true);
    image.close();
    return image.sizeBytes;
  } catch (e) {
    if (e instanceof DriveConfigError) throw new DriveConfigError(`drive ${drive.id}: ${e.message}`);
    throw e;
  }
}

/** The kernel command line fragment that describes the slots to the guest. */
export function virtioMmioCmdline(slots: readonly DeviceSlot[]): string {
  return slots.map((s) => `virtio_mmio.device=4K@0x${s.base.toString(16)}:${s.gsi}`).join(" ");
}

/** The command line fragment for the emulated and dom0 drives (guest/README.md: typervisor_ata, typervisor_xenblk). */
export function legacyDriveCmdline(plan: DevicePlan): string {
  const parts: string[] = [];
  if (plan.ata !== undefined) parts.push(`typervisor_ata=0x${plan.ata.port.toString(16)}:${plan.ata.irq}`);
  if (plan.dom0 !== undefined) parts.push(xenblkCmdline(plan.dom0.ringGpa, plan.dom0.port, plan.dom0.gsi, plan.dom0.sectors));
  return parts.join(" ");
}

/** Everything the VMM appends to the user's command line for its devices. */
export function devicesCmdline(plan: DevicePlan): string {
  return [virtioMmioCmdline(plan.virtio), legacyDriveCmdline(plan)].filter((s) => s !== "").join(" ");
}
