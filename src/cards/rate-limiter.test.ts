// Token buckets with Firecracker's semantics (size, one_time_burst, refill_time), injected clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { RateLimiter, RateLimiterConfigError, TokenBucket } from "./rate-limiter.js";

function clock() {
  let t = 1000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

test("a bucket starts full, refills size/refillTime per ms, caps at size", () => {
  const c = clock();
  const b = new TokenBucket({ size: 1000, refillTime: 100 }, c.now);
  assert.deepEqual(b.reduce(1000), { kind: "ok" });
  assert.equal(b.reduce(1).kind, "failed");
  c.advance(50);
  assert.equal(b.available(), 500);
  c.advance(1000);
  assert.equal(b.available(), 1000);
});

test("one_time_burst is spent first and never refilled", () => {
  const c = clock();
  const b = new TokenBucket({ size: 100, oneTimeBurst: 300, refillTime: 1000 }, c.now);
  assert.equal(b.available(), 400);
  assert.deepEqual(b.reduce(350), { kind: "ok" });
  assert.equal(b.oneTimeBurst, 0);
  assert.equal(b.available(), 50);
  c.advance(10_000);
  assert.equal(b.available(), 100);
});

test("failed reduce takes nothing and says how long to wait", () => {
  const c = clock();
  const b = new TokenBucket({ size: 100, refillTime: 1000 }, c.now);
  b.reduce(90);
  const r = b.reduce(50);
  assert.deepEqual(r, { kind: "failed", waitMs: 400 });
  assert.equal(b.available(), 10);
  c.advance(400);
  assert.deepEqual(b.reduce(50), { kind: "ok" });
});

test("over-consumption: a request larger than the bucket passes when full, then blocks the limiter", () => {
  const c = clock();
  const l = new RateLimiter({ bandwidth: { size: 1000, refillTime: 100 } }, c.now);
  assert.equal(l.consume(3000, 1), 0);
  const wait = l.consume(1, 1);
  assert.equal(wait, 200, "excess 2000 tokens at 10/ms");
  c.advance(200);
  assert.equal(l.consume(0, 1), 0);
  assert.equal(l.throttledCount, 1);
});

test("bandwidth and ops buckets together; a refused bandwidth refunds the op", () => {
  const c = clock();
  const l = new RateLimiter({ bandwidth: { size: 4096, refillTime: 1000 }, ops: { size: 2, refillTime: 1000 } }, c.now);
  assert.equal(l.consume(4096, 1), 0);
  assert.ok(l.consume(4096, 1) > 0);
  c.advance(1000);
  assert.equal(l.consume(4096, 1), 0, "the refused op was refunded");
  assert.equal(l.consume(0, 1), 0, "the second of 2 ops");
  assert.ok(l.consume(0, 1) > 0, "ops bucket now empty");
  assert.equal(l.throttledCount, 2);
});

test("update replaces buckets while running; null = unlimited; bad configs are named", () => {
  const c = clock();
  const l = new RateLimiter({ ops: { size: 1, refillTime: 1000 } }, c.now);
  l.consume(0, 1);
  assert.ok(l.consume(0, 1) > 0);
  l.update({ ops: null });
  assert.ok(l.unlimited);
  for (let i = 0; i < 100; i++) assert.equal(l.consume(1 << 20, 1), 0);
  assert.throws(() => l.update({ bandwidth: { size: 0, refillTime: 100 } }), RateLimiterConfigError);
  assert.throws(() => new RateLimiter({ ops: { size: 10, refillTime: 0 } }), /refillTime/);
});
