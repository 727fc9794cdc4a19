// Opening and closing the host resources of the two non-card drive paths, shared by the KVM
// builder and the fake machine: the emulated drive's image and device state, the dom0 drive's
// eventfds. What KVM registers on them (PIO ioeventfd, irqfd) is the builder's.

import * as sys from "../sys/index.js";
import { createAtaState, openAtaImage, AtaImageError } from "../devices/ata/index.js";
import { DriveConfigError, type AtaDriveSlot, type Dom0DriveSlot } from "./drives.js";
import type { AtaSlot, Dom0Slot } from "./machine.js";

/** Opens the emulated drive's image (once, for every vCPU worker) and creates its shared state. */
export function openAtaSlot(slot: AtaDriveSlot): AtaSlot {
  const readOnly = slot.drive.readOnly === true;
  let image;
  try {
    image = openAtaImage(slot.drive.path, readOnly);
  } catch (e) {
    if (e instanceof AtaImageError) throw new DriveConfigError(`drive ${slot.drive.id}: ${e.message}`);
    throw e;
  }
  return { drive: slot.drive, port: slot.port, irq: slot.irq, state: createAtaState(), imageFd: image.fd, sizeBytes: image.sizeBytes, readOnly };
}

export function closeAtaSlot(slot: AtaSlot): void {
  sys.close(slot.imageFd);
}

/**
 * The dom0 drive's eventfds. The notify eventfd blocks (the back end sleeps in read(2) on it);
 * `irqNonBlocking` makes the interrupt eventfd non-blocking, for tests that poll it instead of KVM.
 */
export function openDom0Slot(slot: Dom0DriveSlot, opts: { irqNonBlocking?: boolean } = {}): Dom0Slot {
  const notifyFd = sys.eventfd(0, sys.EFD_CLOEXEC);
  let irqFd: number;
  try {
    irqFd = sys.eventfd(0, sys.EFD_CLOEXEC | (opts.irqNonBlocking === true ? sys.EFD_NONBLOCK : 0));
  } catch (e) {
    sys.close(notifyFd);
    throw e;
  }
  return { drive: slot.drive, ringGpa: slot.ringGpa, port: slot.port, gsi: slot.gsi, sectors: slot.sectors, notifyFd, irqFd };
}

export function closeDom0Slot(slot: Dom0Slot): void {
  sys.close(slot.notifyFd);
  sys.close(slot.irqFd);
}
