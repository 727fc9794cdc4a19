// virtio-rng, the entropy device (virtio 1.2 §5.4): one request queue whose device-writable
// buffers the device fills with random bytes. Pure with respect to the world: the entropy comes
// from an injected EntropySource (the card uses node:crypto randomFillSync, the host CSPRNG),
// throttling from a Throttle, counting from RngStats.
//
// Request rules: a chain of device-writable buffers only (virtio 1.2 §5.4.6.2: "The driver MUST
// NOT place driver-readable buffers into the queue"). The device places at least one byte and may
// use less than the whole buffer (§5.4.6.1); we give min(writable bytes, maxRequestBytes). A chain
// with a device-readable buffer, with no writable byte, or that fails the virtqueue checks is
// answered with used length 0 and the device carries on.

import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { VirtioDeviceInfo } from "../mmio.js";
import { type DescriptorChain, type SplitQueue } from "../queue.js";
import { F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, bit } from "../spec.js";
import type { ProcessResult, Throttle } from "../blk/device.js";

/** Device ID of the entropy source. virtio 1.2 §5.4.1 */
export const DEVICE_ID_ENTROPY = 4;
/** One queue, requestq (index 0). virtio 1.2 §5.4.2 */
export const RNG_NUM_QUEUES = 1;
/** No device-specific configuration. virtio 1.2 §5.4.4 */
export const RNG_CONFIG_SIZE = 0;
export const RNG_QUEUE_SIZE_DEFAULT = 256;
/**
 * Bytes one request gets at most (our choice: §5.4.6.1 lets the device use less than the buffer).
 * Bounds the time one request holds the card and the entropy one request can drain.
 */
export const RNG_MAX_REQUEST_BYTES_DEFAULT = 64 * 1024;

/** Fills a buffer with random bytes (the card: node:crypto randomFillSync). */
export interface EntropySource {
  fill(into: Uint8Array): void;
}

export interface RngStats {
  /** A request answered with `bytes` random bytes. */
  request(bytes: number): void;
  /** A request answered with used length 0 (malformed chain). */
  error(): void;
  throttled(): void;
}

export interface RngOptions {
  /** Upper bound per request; default RNG_MAX_REQUEST_BYTES_DEFAULT. */
  maxRequestBytes?: number;
  /** QueueNumMax offered; default RNG_QUEUE_SIZE_DEFAULT. */
  queueSize?: number;
}

/** No device feature bits are defined for the entropy device (virtio 1.2 §5.4.3): ring features only. */
export function rngFeatures(): bigint {
  return bit(F_VERSION_1) | bit(F_RING_INDIRECT_DESC) | bit(F_RING_EVENT_IDX);
}

export function rngDeviceInfo(opts: RngOptions = {}): VirtioDeviceInfo {
  return {
    deviceId: DEVICE_ID_ENTROPY,
    features: rngFeatures(),
    numQueues: RNG_NUM_QUEUES,
    queueNumMax: opts.queueSize ?? RNG_QUEUE_SIZE_DEFAULT,
    config: new Uint8Array(RNG_CONFIG_SIZE),
  };
}

/** Why a chain cannot be answered with entropy, or undefined when it can. */
export function rngChainProblem(chain: DescriptorChain): string | undefined {
  if (chain.readable.length > 0) return `chain has ${chain.readable.length} device-readable buffer(s); virtio 1.2 §5.4.6.2 allows none`;
  if (chain.writableBytes === 0) return "chain has no device-writable byte to fill";
  return undefined;
}

/** The virtio-rng request machine for one device. */
export class RngDevice {
  readonly maxRequestBytes: number;

  constructor(
    private readonly mem: GuestMemory,
    private readonly source: EntropySource,
    opts: RngOptions,
    private readonly stats: RngStats,
    private readonly throttle?: Throttle,
  ) {
    const max = opts.maxRequestBytes ?? RNG_MAX_REQUEST_BYTES_DEFAULT;
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`maxRequestBytes must be a positive integer, not ${max}`);
    this.maxRequestBytes = max;
  }

  /**
   * Answers every available request. A throttled request stays in the avail ring and the result
   * says how long to wait. A fatal VirtqueueError propagates: the caller marks the device NEEDS_RESET.
   */
  process(q: SplitQueue): ProcessResult {
    const oldUsed = q.pos.nextUsed;
    for (;;) {
      for (let chain: DescriptorChain | undefined; (chain = q.peekChain(() => this.stats.error())) !== undefined; ) {
        const head = chain.head;
        if (rngChainProblem(chain) !== undefined) {
          q.advance();
          q.pushUsed(head, 0);
          this.stats.error();
          continue;
        }
        const n = Math.min(chain.writableBytes, this.maxRequestBytes);
        if (this.throttle !== undefined) {
          const wait = this.throttle.consume(n, 1);
          if (wait > 0) {
            this.stats.throttled();
            return { kind: "throttled", interrupt: q.needsInterrupt(oldUsed), waitMs: wait };
          }
        }
        q.advance();
        let left = n;
        for (const s of chain.writable) {
          if (left === 0) break;
          const take = Math.min(s.len, left);
          // Straight into guest memory: the segment was checked to be guest RAM by the queue.
          this.source.fill(this.mem.slice(s.addr, take));
          left -= take;
        }
        // Used length: the bytes written. virtio 1.2 §2.7.8
        q.pushUsed(head, n);
        this.stats.request(n);
      }
      q.publishAvailEvent();
      // With EVENT_IDX a buffer made available before avail_event was published sent no kick: look again.
      if (q.pending() === 0) break;
    }
    return { kind: "idle", interrupt: q.needsInterrupt(oldUsed) };
  }
}
