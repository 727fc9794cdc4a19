// Cards: device backends off the vCPU threads (DESIGN.md §2). The VMM wires them (README.md).
export { signalEventfd, createVirtioMmioDevice } from "./notify.js";
export {
  startCard,
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

