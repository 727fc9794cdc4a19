// Block drives of a VM: validated at the edge (the image exists and can be opened the way the
// drive needs), given a virtio-mmio slot and an interrupt line, and described to the guest on
// the kernel command line the way Firecracker does (`virtio_mmio.device=<size>@<addr>:<irq>`).

import { DriveConfigError, openImage, type RateLimiterConfig } from "../cards/index.js";
import { chipLoad } from "../security/chip.js";
import { VIRTIO_MMIO_START, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_END, IRQ_BASE, IRQ_MAX } from "../arch/x86_64/layout.js";

export interface DriveConfig {
  /** Drive id (Firecracker's drive_id); also the virtio-blk serial (GET_ID), at most 20 bytes. */
  id: string;
  /** Raw image file. */
  path: string;
  readOnly?: boolean;
  rateLimiter?: RateLimiterConfig;
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

/** What a virtio slot carries: the card kind and its configuration. */
export type DeviceSpec = { kind: "blk"; drive: DriveConfig } | { kind: "rng"; entropy: EntropyConfig } | { kind: "nsm"; nsm: NsmConfig };

export interface DeviceSlot {
  device: DeviceSpec;
  /** Bus and card name: virtio-blk-<id>, virtio-rng, virtio-nsm. */
  name: string;
  /** Guest-physical base of the device's virtio-mmio window. */
  base: number;
  /** The interrupt line (GSI) of the device. */
  gsi: number;
}

export { DriveConfigError };

/** virtio 1.2 §5.2.6: GET_ID answers at most 20 bytes. */
const MAX_ID_BYTES = 20;

/**
 * Checks each device at the edge and gives it a slot: drives first (so the first drive is the
 * guest's /dev/vda), then the entropy device, then the NSM. Throws DriveConfigError naming the
 * drive and the problem.
 */
export function assignDeviceSlots(opts: { drives?: readonly DriveConfig[]; entropy?: EntropyConfig; nsm?: NsmConfig }): DeviceSlot[] {
  const drives = opts.drives ?? [];
  const ids = new Set<string>();
  const specs: DeviceSpec[] = drives.map((drive) => {
    if (!/^[A-Za-z0-9_-]+$/.test(drive.id) || Buffer.byteLength(drive.id) > MAX_ID_BYTES) {
      throw new DriveConfigError(`drive id "${drive.id}" must be 1-${MAX_ID_BYTES} letters, digits, '_' or '-'`);
    }
    if (ids.has(drive.id)) throw new DriveConfigError(`drive id "${drive.id}" is used twice`);
    ids.add(drive.id);
    checkImage(drive);
    return { kind: "blk", drive };
  });
  if (opts.entropy !== undefined) specs.push({ kind: "rng", entropy: opts.entropy });
  if (opts.nsm !== undefined) {
    // The chip identity is checked here, at the edge, rather than when the card starts.
    try {
      chipLoad(opts.nsm.chipDir);
    } catch (e) {
      throw new DriveConfigError(`nsm: ${(e as Error).message}`);
    }
    specs.push({ kind: "nsm", nsm: opts.nsm });
  }
  const maxSlots = Math.min((VIRTIO_MMIO_END - VIRTIO_MMIO_START) / VIRTIO_MMIO_SLOT_SIZE, IRQ_MAX - IRQ_BASE + 1);
  if (specs.length > maxSlots) throw new DriveConfigError(`${specs.length} virtio devices configured; at most ${maxSlots} fit`);
  return specs.map((device, i) => ({
    device,
    name: device.kind === "blk" ? `virtio-blk-${device.drive.id}` : `virtio-${device.kind}`,
    base: VIRTIO_MMIO_START + i * VIRTIO_MMIO_SLOT_SIZE,
    gsi: IRQ_BASE + i,
  }));
}

/** Drives alone (each becomes a virtio-blk slot). */
export function assignDriveSlots(drives: readonly DriveConfig[]): DeviceSlot[] {
  return assignDeviceSlots({ drives });
}

/** Opens the image the way the card will (same checks, same messages) and closes it again. */
function checkImage(drive: DriveConfig): void {
  try {
    openImage(drive.path, drive.readOnly === true).close();
  } catch (e) {
    if (e instanceof DriveConfigError) throw new DriveConfigError(`drive ${drive.id}: ${e.message}`);
    throw e;
  }
}

/** The kernel command line fragment that describes the slots to the guest. */
export function virtioMmioCmdline(slots: readonly DeviceSlot[]): string {
  return slots.map((s) => `virtio_mmio.device=4K@0x${s.base.toString(16)}:${s.gsi}`).join(" ");
}
