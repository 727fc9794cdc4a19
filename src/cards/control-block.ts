// The control block a card's VMM side shares with its worker (a SharedArrayBuffer): what the VMM
// tells the worker between two passes. Generic words first, then the rate limiter's parameters,
// then an area each device kind lays out for its own runtime updates (blk: the image swap).

import { validateBucket, type RateLimiterConfig, type TokenBucketConfig } from "./rate-limiter.js";

// Int32 words.
export const CTL_STOP = 0;
export const CTL_LIMITER_GEN = 1;
export const CTL_WORDS = 2; // even: the Float64 areas below stay 8-byte aligned
// Limiter parameters (Float64 after the Int32 words): bw size, burst, refill; ops size, burst, refill. 0 size = none.
export const CTL_LIMITER_OFFSET = CTL_WORDS * 4;
/** Where the device kind's own area starts (8-byte aligned), and its size. */
export const CTL_KIND_OFFSET = CTL_LIMITER_OFFSET + 6 * 8; // after the limiter (LIMITER_BYTES)
export const CTL_KIND_BYTES = 64;
export const CTL_BYTES = CTL_KIND_OFFSET + CTL_KIND_BYTES;

/** Bytes a rate limiter's parameters take in a control block (6 Float64). */
export const LIMITER_BYTES = 6 * 8;

/**
 * Writes `config` into `ctl` at byte `offset` (8-byte aligned) and bumps the Int32 generation word
 * at byte `genOffset`, which the worker watches. Validates the buckets first (RateLimiterConfigError).
 */
export function writeLimiterAt(ctl: SharedArrayBuffer, config: RateLimiterConfig | undefined, offset: number, genOffset: number): void {
  const f = new Float64Array(ctl, offset, 6);
  const put = (at: number, b: TokenBucketConfig | null | undefined, what: string): void => {
    if (b) validateBucket(what, b);
    f[at] = b ? b.size : 0;
    f[at + 1] = b ? (b.oneTimeBurst ?? 0) : 0;
    f[at + 2] = b ? b.refillTime : 0;
  };
  put(0, config?.bandwidth, "bandwidth");
  put(3, config?.ops, "ops");
  Atomics.add(new Int32Array(ctl, genOffset, 1), 0, 1);
}

/** The rate limiter parameters at byte `offset` of `ctl` (writeLimiterAt's). */
export function readLimiterAt(ctl: SharedArrayBuffer, offset: number): RateLimiterConfig {
  const f = new Float64Array(ctl, offset, 6);
  const get = (at: number): TokenBucketConfig | null =>
    f[at]! > 0 ? { size: f[at]!, oneTimeBurst: f[at + 1]!, refillTime: f[at + 2]! } : null;
  return { bandwidth: get(0), ops: get(3) };
}

/** The card's own rate limiter (CTL_LIMITER_*). */
export function writeLimiterConfig(ctl: SharedArrayBuffer, config: RateLimiterConfig | undefined): void {
  writeLimiterAt(ctl, config, CTL_LIMITER_OFFSET, CTL_LIMITER_GEN * 4);
}

export function readLimiterConfig(ctl: SharedArrayBuffer): RateLimiterConfig {
  return readLimiterAt(ctl, CTL_LIMITER_OFFSET);
}
