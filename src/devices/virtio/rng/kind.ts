// virtio-rng as a device kind (device-kind.ts): Firecracker's entropy device, fed from the host
// CSPRNG on the card's thread.

import { randomFillSync } from "node:crypto";
import type { RateLimiterConfig } from "../../../cards/rate-limiter.js";
import { CardConfigError } from "../../../cards/errors.js";
import { RNG_MAX_REQUEST_BYTES_DEFAULT, RngDevice, rngDeviceInfo } from "./device.js";
import type { CardModel, ModelContext, VirtioDeviceKind } from "../device-kind.js";

/** virtio-rng (virtio 1.2 §5.4): entropy from the host CSPRNG. */
export interface RngCardConfig {
  /** Bytes (bandwidth) and requests (ops) per refillTime; absent = unlimited. */
  rateLimiter?: RateLimiterConfig;
  /** Bytes one request gets at most (default 64 KiB). */
  maxRequestBytes?: number;
  queueSize?: number;
}

interface RngWorkerData {
  maxRequestBytes: number;
}

/** Worker side: the rng model over the host CSPRNG (node:crypto randomFillSync: OpenSSL's DRBG seeded by the kernel). */
export function createModel(ctx: ModelContext<RngWorkerData>): CardModel {
  return new RngDevice(ctx.mem, { fill: (b) => void randomFillSync(b) }, { maxRequestBytes: ctx.data.maxRequestBytes }, ctx.stats, ctx.limiter);
}

export const rngKind: VirtioDeviceKind<RngCardConfig | undefined> = {
  kind: "rng",
  instances: (config) => (config.entropy === undefined ? [] : [{ rateLimiter: config.entropy.rateLimiter }]),
  slotName: () => "virtio-rng",
  cardConfig: (c) => c,
  open(config) {
    const max = config?.maxRequestBytes ?? RNG_MAX_REQUEST_BYTES_DEFAULT;
    if (!Number.isSafeInteger(max) || max < 1) throw new CardConfigError(`rng maxRequestBytes must be a positive integer, not ${max}`);
    const data: RngWorkerData = { maxRequestBytes: max };
    return { info: rngDeviceInfo({ queueSize: config?.queueSize }), workerData: data, rateLimiter: config?.rateLimiter, release: () => {} };
  },
  model: new URL(import.meta.url),
  loadModel: async () => ({ createModel }),
  // Firecracker's `entropy` group, with its key names where the meaning is the same.
  metricGroups: (_, m) => ({
    entropy: {
      entropy_event_count: m.requests,
      entropy_bytes: m.bytes,
      host_rng_fails: m.errors,
      entropy_rate_limiter_throttled: m.throttled,
      queue_event_count: m.kicks,
      interrupt_count: m.interrupts,
      needs_reset: m.needsReset,
    },
  }),
};
