// The two things the vCPU threads need from the card runtime, in a module of their own so that a
// vCPU worker loads these and not the card runtime (the kinds, their models, the security chip):
// an eventfd signal, and the virtio-mmio register file whose QueueNotify signals the card.

import * as sys from "../sys/index.js";
import { VirtioMmioTransport } from "../devices/virtio/mmio.js";

/** The 8-byte counter increment an eventfd write adds (one per thread: module state is per isolate). */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/** Signals an eventfd once (8-byte counter add, eventfd(2)). */
export function signalEventfd(fd: number): void {
  sys.write(fd, ONE);
}

/**
 * The virtio-mmio register file for one vCPU worker's MMIO bus (insert it at the device's slot
 * with length MMIO_WINDOW or the slot size). A QueueNotify write that reaches it — only when no
 * ioeventfd caught it — signals `notifyFd` itself, so the card sees every kick either way.
 */
export function createVirtioMmioDevice(transportState: SharedArrayBuffer, notifyFd: number): VirtioMmioTransport {
  return new VirtioMmioTransport(transportState, () => signalEventfd(notifyFd));
}
