// Cards: device backends off the vCPU threads (DESIGN.md §2). The VMM wires them (README.md).
import { VirtioMmioTransport } from "../devices/virtio/mmio.js";
import { signalEventfd } from "./card.js";

export {
  startCard,
  signalEventfd,
  notifyConfigChange,
  CardConfigError,
  type CardHandle,
  type CardOptions,
  type CardKindOptions,
  type CardKind,
  type BlkCardConfig,
  type RngCardConfig,
  type NsmCardConfig,
  type NsmSigner,
  type CardRegion,
} from "./card.js";
export { SharedPcrBank, SHARED_PCR_BANK_BYTES, type PcrBankState } from "./shared-pcr-bank.js";
export type { PcrRegisters } from "../security/pcr.js";
export { DriveConfigError, openImage, FileBackend } from "./blk-file.js";
export { CardMetrics, METRIC_NAMES, type CardMetricsSnapshot } from "./metrics.js";
export { RateLimiter, TokenBucket, RateLimiterConfigError, type RateLimiterConfig, type TokenBucketConfig } from "./rate-limiter.js";
export { createTransportState, MMIO_WINDOW, TRANSPORT_STATE_BYTES } from "../devices/virtio/mmio.js";

/**
 * The virtio-mmio register file for one vCPU worker's MMIO bus (insert it at the device's slot
 * with length MMIO_WINDOW or the slot size). A QueueNotify write that reaches it — only when no
 * ioeventfd caught it — signals `notifyFd` itself, so the card sees every kick either way.
 */
export function createVirtioMmioDevice(transportState: SharedArrayBuffer, notifyFd: number): VirtioMmioTransport {
  return new VirtioMmioTransport(transportState, () => signalEventfd(notifyFd));
}
