// virtio-blk as a device kind (device-kind.ts): a card drive's config, the image it opens once,
// the model its card runs, and its runtime update — another image under the running drive
// (Firecracker's PATCH /drives path_on_host).

import { openImage, FileBackend, type OpenedImage } from "../../../cards/blk-file.js";
import { CardConfigError } from "../../../cards/errors.js";
import type { RateLimiterConfig } from "../../../cards/rate-limiter.js";
import { CTL_KIND_OFFSET } from "../../../cards/control-block.js";
import { TransportState } from "../mmio.js";
import { BLK_CFG_CAPACITY, BLK_SECTOR_SIZE } from "../spec.js";
import { BlkDevice, blkDeviceInfo } from "./device.js";
import type { CardControl, CardModel, ModelContext, OpenedDevice, VirtioDeviceKind } from "../device-kind.js";

export interface BlkCardConfig {
  /** Raw image file. */
  path: string;
  readOnly?: boolean;
  /** GET_ID answer (≤ 20 bytes). */
  id?: string;
  rateLimiter?: RateLimiterConfig;
  queueSize?: number;
}

/** What the blk card's worker receives. */
interface BlkWorkerData {
  imageFd: number;
  sizeBytes: number;
  readOnly: boolean;
  id: string;
}

/** The image now under the drive (the path update changes it) and how it is opened. */
interface HeldImage {
  current: OpenedImage;
  readOnly: boolean;
  swapping: boolean;
}

// The blk card's area of the control block (cards/control.ts CTL_KIND_OFFSET): Int32 words, then
// the replacement image's size as a Float64.
/** Bumped by the VMM when a new image descriptor waits in IMAGE_FD. */
const IMAGE_GEN = 0;
/** The image generation the worker has switched to. */
const IMAGE_ACK = 1;
/**
 * The replacement image's descriptor plus one, 0 when none waits (the block starts zeroed): the
 * worker takes it with an exchange, a timed-out update withdraws it with a compare-exchange, so
 * exactly one side owns it.
 */
const IMAGE_FD = 2;
const IMAGE_WORDS = 4; // even: the Float64 after them stays 8-byte aligned
const IMAGE_SIZE_OFFSET = CTL_KIND_OFFSET + IMAGE_WORDS * 4;
/** How long the path update waits for the worker to take the new image. */
const IMAGE_SWAP_TIMEOUT_MS = 10_000;

const words = (control: SharedArrayBuffer): Int32Array => new Int32Array(control, CTL_KIND_OFFSET, IMAGE_WORDS);

/** Worker side: the blk model over the image descriptor; takes a new image between two passes. */
export function createModel(ctx: ModelContext<BlkWorkerData>): CardModel {
  const d = ctx.data;
  const device = new BlkDevice(ctx.mem, new FileBackend(d.imageFd, d.sizeBytes), { readOnly: d.readOnly, id: d.id }, ctx.stats, ctx.limiter);
  const w = words(ctx.control);
  return {
    process: (q) => device.process(q),
    beforePass() {
      // A new image (the path update): taken here, between two passes, so no request straddles it.
      const gen = Atomics.load(w, IMAGE_GEN);
      if (gen === Atomics.load(w, IMAGE_ACK)) return;
      const fd = Atomics.exchange(w, IMAGE_FD, 0) - 1; // -1: the VMM withdrew it (timed out)
      if (fd >= 0) device.replaceBackend(new FileBackend(fd, new Float64Array(ctx.control, IMAGE_SIZE_OFFSET, 1)[0]!));
      Atomics.store(w, IMAGE_ACK, gen);
    },
  };
}

/**
 * Puts the image at `path` under the running drive. Opened here with the drive's read-only
 * setting (a missing or unusable file is a DriveConfigError and nothing changes); the worker
 * switches between two requests; then the old image is closed, the capacity in config space
 * updated and a config-change interrupt raised (virtio 1.2 §5.2.4, §4.2.2 ConfigGeneration).
 * Resolves with the new size.
 */
async function replaceImage(card: CardControl, arg: unknown): Promise<{ sizeBytes: number }> {
  const path = arg as string;
  const held = card.opened.state as HeldImage;
  if (card.exited) throw new CardConfigError(`card ${card.name} has stopped`);
  if (held.swapping) throw new CardConfigError(`card ${card.name}: an image replacement is already under way`);
  held.swapping = true;
  const w = words(card.control);
  try {
    const next = openImage(path, held.readOnly); // DriveConfigError names the file; nothing changed
    new Float64Array(card.control, IMAGE_SIZE_OFFSET, 1)[0] = next.sizeBytes;
    Atomics.store(w, IMAGE_FD, next.fd + 1);
    const gen = Atomics.add(w, IMAGE_GEN, 1) + 1;
    card.wake();
    const deadline = Date.now() + IMAGE_SWAP_TIMEOUT_MS;
    while (Atomics.load(w, IMAGE_ACK) !== gen) {
      // Gave up (a pass stuck in slow I/O, or the worker gone): withdraw the descriptor unless the
      // worker took it meanwhile — then it is the drive's image now and the swap goes on.
      if ((card.exited || Date.now() > deadline) && Atomics.compareExchange(w, IMAGE_FD, next.fd + 1, 0) === next.fd + 1) {
        next.close(); // the generation stays spent: the worker acknowledges it finding no descriptor
        throw new CardConfigError(`card ${card.name}: the worker did not take the new image ${path}${card.exited ? " (it stopped)" : " in time"}`);
      }
      if (card.exited) break; // took it, then stopped: release() closes it as the current image
      await new Promise((r) => setTimeout(r, 1)); // the worker takes it at its next pass boundary
    }
    held.current.close();
    held.current = next;
    const capacity = new Uint8Array(8);
    new DataView(capacity.buffer).setBigUint64(0, BigInt(Math.floor(next.sizeBytes / BLK_SECTOR_SIZE)), true);
    new TransportState(card.transportState).updateConfig(BLK_CFG_CAPACITY, capacity); // bumps ConfigGeneration, raises the config-change bit
    card.interrupt();
    return { sizeBytes: next.sizeBytes };
  } finally {
    held.swapping = false;
  }
}

export const blkKind: VirtioDeviceKind<BlkCardConfig> = {
  kind: "blk",
  // Card drives only: the emulated and dom0 paths are not virtio (vmm/drives.ts checks every drive first).
  instances: (config) =>
    (config.drives ?? [])
      .filter((d) => (d.ioPath ?? "card") === "card")
      .map((d) => ({ path: d.path, readOnly: d.readOnly, id: d.id, rateLimiter: d.rateLimiter })),
  slotName: (c) => `virtio-blk-${c.id ?? "blk"}`,
  instanceId: (c) => c.id ?? "blk",
  cardConfig: (c) => c,
  open(config, name): OpenedDevice {
    const readOnly = config.readOnly ?? false;
    const image = openImage(config.path, readOnly);
    const held: HeldImage = { current: image, readOnly, swapping: false };
    try {
      const data: BlkWorkerData = { imageFd: image.fd, sizeBytes: image.sizeBytes, readOnly, id: config.id ?? name };
      return {
        info: blkDeviceInfo(image.sizeBytes, { readOnly, queueSize: config.queueSize }),
        workerData: data,
        rateLimiter: config.rateLimiter,
        state: held,
        release: () => held.current.close(),
      };
    } catch (e) {
      image.close();
      throw e;
    }
  },
  model: new URL(import.meta.url),
  loadModel: async () => ({ createModel }),
  updates: { path: replaceImage },
};
