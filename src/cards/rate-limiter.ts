// Token-bucket rate limiters with the semantics of Firecracker's (docs/api_requests/
// patch-block.md, src/vmm/src/rate_limiter): a bucket of `size` tokens that refills completely
// in `refillTime` ms (continuously, size/refillTime per ms), plus a `oneTimeBurst` of extra
// tokens spent first and never refilled. A request larger than the bucket is let through when
// the bucket can give all it has, and the limiter then stays blocked for as long as the excess
// takes to refill ("over-consumption"). Time comes from an injected clock, so tests are exact.

export interface TokenBucketConfig {
  /** Bucket capacity in tokens (bytes or operations); > 0. */
  size: number;
  /** Extra tokens available once, at start; default 0. */
  oneTimeBurst?: number;
  /** Milliseconds for an empty bucket to refill completely; > 0. */
  refillTime: number;
}

export interface RateLimiterConfig {
  /** Bytes per refillTime. */
  bandwidth?: TokenBucketConfig | null;
  /** Operations per refillTime. */
  ops?: TokenBucketConfig | null;
}

export class RateLimiterConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RateLimiterConfigError";
  }
}

/** Milliseconds, monotonic. */
export type Clock = () => number;

export type Reduce = { kind: "ok" } | { kind: "overconsumed"; blockMs: number } | { kind: "failed"; waitMs: number };

export function validateBucket(what: string, c: TokenBucketConfig): void {
  const ok = (n: unknown, min: number): boolean => typeof n === "number" && Number.isFinite(n) && n >= min && Number.isSafeInteger(Math.floor(n));
  if (!ok(c.size, 1)) throw new RateLimiterConfigError(`${what}.size must be a positive number, not ${String(c.size)}`);
  if (!ok(c.refillTime, 1)) throw new RateLimiterConfigError(`${what}.refillTime must be at least 1 ms, not ${String(c.refillTime)}`);
  if (c.oneTimeBurst !== undefined && !ok(c.oneTimeBurst, 0)) {
    throw new RateLimiterConfigError(`${what}.oneTimeBurst must be zero or more, not ${String(c.oneTimeBurst)}`);
  }
}

export class TokenBucket {
  readonly size: number;
  readonly refillTime: number;
  private budget: number;
  private burst: number;
  private lastUpdate: number;

  constructor(config: TokenBucketConfig, private readonly clock: Clock) {
    validateBucket("bucket", config);
    this.size = config.size;
    this.refillTime = config.refillTime;
    this.budget = config.size; // starts full, as Firecracker's
    this.burst = config.oneTimeBurst ?? 0;
    this.lastUpdate = clock();
  }

  /** Tokens available now (budget + remaining burst). */
  available(): number {
    this.replenish();
    return this.budget + this.burst;
  }

  get oneTimeBurst(): number {
    return this.burst;
  }

  private replenish(): void {
    const now = this.clock();
    const elapsed = now - this.lastUpdate;
    if (elapsed <= 0) return;
    this.lastUpdate = now;
    this.budget = Math.min(this.size, this.budget + (elapsed * this.size) / this.refillTime);
  }

  /** Milliseconds until `tokens` (≤ size) are in the budget. */
  private msUntil(tokens: number): number {
    return Math.max(1, Math.ceil(((tokens - this.budget) * this.refillTime) / this.size));
  }

  reduce(tokens: number): Reduce {
    if (tokens <= 0) return { kind: "ok" };
    this.replenish();
    if (this.burst > 0) {
      if (this.burst >= tokens) {
        this.burst -= tokens;
        return { kind: "ok" };
      }
      tokens -= this.burst;
      this.burst = 0;
    }
    if (tokens > this.budget) {
      if (tokens > this.size) {
        // More than the bucket ever holds: take it all and block for the excess (over-consumption).
        if (this.budget < this.size) return { kind: "failed", waitMs: this.msUntil(this.size) };
        this.budget = 0;
        return { kind: "overconsumed", blockMs: Math.ceil(((tokens - this.size) * this.refillTime) / this.size) };
      }
      return { kind: "failed", waitMs: this.msUntil(tokens) };
    }
    this.budget -= tokens;
    return { kind: "ok" };
  }

  /** Gives back tokens taken by a reduce that another bucket then refused. */
  refund(tokens: number): void {
    this.budget = Math.min(this.size, this.budget + tokens);
  }
}

/** A bandwidth bucket and an ops bucket; either may be absent (unlimited). */
export class RateLimiter {
  private bandwidth: TokenBucket | undefined;
  private ops: TokenBucket | undefined;
  private blockedUntil = 0;
  /** Requests turned away (each call of consume that did not go ahead). */
  throttledCount = 0;

  constructor(config: RateLimiterConfig, private readonly clock: Clock = () => performance.now()) {
    this.update(config);
  }

  /** Replaces the buckets (fresh, full budgets); a missing/null bucket means unlimited. */
  update(config: RateLimiterConfig): void {
    if (config.bandwidth) validateBucket("bandwidth", config.bandwidth);
    if (config.ops) validateBucket("ops", config.ops);
    this.bandwidth = config.bandwidth ? new TokenBucket(config.bandwidth, this.clock) : undefined;
    this.ops = config.ops ? new TokenBucket(config.ops, this.clock) : undefined;
    this.blockedUntil = 0;
  }

  get unlimited(): boolean {
    return this.bandwidth === undefined && this.ops === undefined;
  }

  /** 0: go ahead (tokens taken). Otherwise ms to wait before asking again (nothing taken). */
  consume(bytes: number, ops: number): number {
    // Unlimited (the usual drive): no clock read per request. blockedUntil is only ever set by a
    // bucket and reset by update, so with none it is 0.
    if (this.bandwidth === undefined && this.ops === undefined) return 0;
    const now = this.clock();
    if (now < this.blockedUntil) {
      this.throttledCount++;
      return Math.max(1, Math.ceil(this.blockedUntil - now));
    }
    let block = 0;
    const o = this.ops?.reduce(ops) ?? { kind: "ok" as const };
    if (o.kind === "failed") {
      this.throttledCount++;
      return o.waitMs;
    }
    if (o.kind === "overconsumed") block = Math.max(block, o.blockMs);
    const b = this.bandwidth?.reduce(bytes) ?? { kind: "ok" as const };
    if (b.kind === "failed") {
      this.ops?.refund(ops);
      this.throttledCount++;
      return b.waitMs;
    }
    if (b.kind === "overconsumed") block = Math.max(block, b.blockMs);
    if (block > 0) this.blockedUntil = now + block;
    return 0;
  }
}
