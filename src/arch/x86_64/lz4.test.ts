// LZ4 block and legacy-frame decoding (lz4 doc/lz4_Block_format.md, doc/lz4_Frame_format.md
// "Legacy frame"): hand-built blocks, malformed inputs, and — where the `lz4` command exists — a
// round trip through `lz4 -l`, the compressor the kernel build uses.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { KernelFormatError } from "./errors.js";
import { LZ4_LEGACY_BLOCK_MAX, LZ4_LEGACY_MAGIC, lz4CompressBound, lz4DecompressBlock, lz4DecompressLegacy } from "./lz4.js";

const bytes = (...parts: Array<number | number[] | Uint8Array | string>): Uint8Array => {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else if (typeof p === "string") out.push(...new TextEncoder().encode(p));
    else out.push(...p);
  }
  return new Uint8Array(out);
};
const u32le = (n: number): number[] => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Decodes one block into a fresh buffer of `cap` bytes and returns what was written. */
function block(src: Uint8Array, cap = 1 << 16): Uint8Array {
  const dst = new Uint8Array(cap);
  return dst.subarray(0, lz4DecompressBlock(src, dst));
}

/** A legacy frame (magic + u32 LE size + block per chunk), as `lz4 -l` lays it out. */
function frame(...blocks: Uint8Array[]): Uint8Array {
  return bytes(u32le(LZ4_LEGACY_MAGIC), ...blocks.flatMap((b) => [u32le(b.length), b]));
}

const rejects = (fn: () => unknown, pattern: RegExp): void => {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof KernelFormatError, `expected a KernelFormatError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
};

test("block: literals only (token 0x50 = 5 literals, no match)", () => {
  assert.equal(text(block(bytes(0x50, "hello"))), "hello");
});

test("block: a lone token 0x00 is a valid empty block", () => {
  assert.equal(block(bytes(0x00)).length, 0);
});

test("block: offset 1 overlapping match is a run-length fill", () => {
  // "a", then a match of 4+6 = 10 at offset 1, then a final literal-only sequence "b".
  assert.equal(text(block(bytes(0x16, "a", 1, 0, 0x10, "b"))), "a".repeat(11) + "b");
});

test("block: offset 3 overlapping match repeats the period", () => {
  // "abc", match 4+5 = 9 bytes at offset 3, then "!".
  assert.equal(text(block(bytes(0x35, "abc", 3, 0, 0x10, "!"))), "abcabcabcabc!");
});

test("block: non-overlapping match copies an earlier span", () => {
  // "0123456789", match of 4 at offset 10 → "0123", then "X".
  assert.equal(text(block(bytes(0xa0, "0123456789", 10, 0, 0x10, "X"))), "01234567890123X");
});

test("block: literal length extension (15 + 255 + 30 = 300 literals)", () => {
  const lit = randomBytes(300);
  assert.deepEqual(block(bytes(0xf0, 255, 30, lit)), new Uint8Array(lit));
});

test("block: literal length of exactly 15 needs one 0 extension byte", () => {
  const lit = randomBytes(15);
  assert.deepEqual(block(bytes(0xf0, 0, lit)), new Uint8Array(lit));
});

test("block: match length extension (4 + 15 + 255 + 255 + 7 = 536 bytes at offset 1)", () => {
  const out = block(bytes(0x1f, "z", 1, 0, 255, 255, 7, 0x00));
  assert.equal(out.length, 1 + 536);
  assert.ok(out.every((b) => b === 0x7a));
});

test("block: writes at dstStart and refuses to reach before it", () => {
  const dst = new Uint8Array(32).fill(0xee);
  assert.equal(lz4DecompressBlock(bytes(0x20, "hi"), dst, 8), 2);
  assert.equal(text(dst.subarray(8, 10)), "hi");
  assert.equal(dst[7], 0xee);
  // Offset 3 from output byte 2 (of this block) points before dstStart, even though dst has bytes there.
  rejects(() => lz4DecompressBlock(bytes(0x20, "hi", 3, 0, 0x00), dst, 8), /offset 3 at output byte 2 reaches before the start/);
});

test("block: malformed inputs, each with its own message", () => {
  rejects(() => block(new Uint8Array(0)), /empty input/);
  rejects(() => block(bytes(0x10, "a", 0, 0, 0x00)), /match offset 0/);
  rejects(() => block(bytes(0x10, "a", 2, 0, 0x00)), /offset 2 at output byte 1 reaches before the start/);
  rejects(() => block(bytes(0x50, "abc")), /5 literal bytes at input byte 1 .*\(truncated input\)/);
  rejects(() => block(bytes(0xf0, 255, 255)), /input ends inside the literal length extension/);
  rejects(() => block(bytes(0x1f, "a", 1, 0, 255)), /input ends inside the match length extension/);
  rejects(() => block(bytes(0x10, "a", 1)), /input ends inside a match offset/);
  rejects(() => block(bytes(0x10, "a", 1, 0)), /last sequence must hold only literals/);
  rejects(() => block(bytes(0x50, "hello"), 4), /5 literal bytes at output byte 0 overflow the 4-byte output limit/);
  rejects(() => block(bytes(0x1f, "a", 1, 0, 200, 0x00), 100), /219-byte match at output byte 1 overflows the 100-byte output limit/);
  rejects(() => lz4DecompressBlock(bytes(0x00), new Uint8Array(4), 5), /output window 5\.\.4/);
});

test("block: a huge claimed length made of 255s fails fast without allocating or hanging", () => {
  const src = new Uint8Array(1 << 20).fill(255);
  src[0] = 0xf0;
  rejects(() => block(src), /input ends inside the literal length extension/);
});

test("legacy frame: chunks, a concatenated frame, and the kernel's appended size are accepted", () => {
  const a = bytes(0x50, "hello");
  const b = bytes(0x16, "a", 1, 0, 0x10, "b");
  const one = frame(a, b);
  assert.equal(text(lz4DecompressLegacy(one, 1024)), "hello" + "a".repeat(11) + "b");
  // scripts/Makefile.lib size_append: the uncompressed size, u32 LE, after the frame.
  assert.equal(text(lz4DecompressLegacy(bytes(one, u32le(17)), 1024)), "hello" + "a".repeat(11) + "b");
  // Fewer than 4 trailing bytes, and zero padding.
  assert.equal(text(lz4DecompressLegacy(bytes(frame(a), 0, 0), 1024)), "hello");
  assert.equal(text(lz4DecompressLegacy(bytes(frame(a), u32le(0), u32le(0), u32le(0)), 1024)), "hello");
  // A second frame (its magic where a chunk size would be).
  assert.equal(text(lz4DecompressLegacy(bytes(frame(a), frame(bytes(0x30, "!!!"))), 1024)), "hello!!!");
});

test("legacy frame: malformed inputs, each with its own message", () => {
  rejects(() => lz4DecompressLegacy(bytes(0x02, 0x21), 16), /expected magic 0x184c2102 .* got only 2 bytes/);
  rejects(() => lz4DecompressLegacy(bytes(u32le(0x184d2204), 0x00), 16), /expected magic 0x184c2102 .* got 0x184d2204/);
  rejects(() => lz4DecompressLegacy(bytes(u32le(LZ4_LEGACY_MAGIC)), 16), /no compressed chunk after the magic/);
  rejects(() => lz4DecompressLegacy(bytes(u32le(LZ4_LEGACY_MAGIC), u32le(100), 0x50, "hello"), 16), /claims 100 compressed bytes but only 6 remain/);
  const huge = lz4CompressBound(LZ4_LEGACY_BLOCK_MAX) + 1;
  rejects(() => lz4DecompressLegacy(bytes(u32le(LZ4_LEGACY_MAGIC), u32le(huge), 0, 0, 0, 0, 0), 16), /more than any 8 MiB block needs/);
  rejects(() => lz4DecompressLegacy(frame(bytes(0x50, "hello")), 4), /chunk at byte 4 \(0 of at most 4 output bytes written\): .*overflow the 4-byte output limit/);
  rejects(() => lz4DecompressLegacy(frame(bytes(0x10, "a", 0, 0, 0x00)), 16), /chunk at byte 4 .*match offset 0/);
  rejects(() => lz4DecompressLegacy(bytes(0x02, 0x21, 0x4c, 0x18), -1), /output limit -1/);
});

test("legacy frame: output limit counts across chunks", () => {
  const f = frame(bytes(0x50, "hello"), bytes(0x50, "world"));
  assert.equal(text(lz4DecompressLegacy(f, 10)), "helloworld");
  rejects(() => lz4DecompressLegacy(f, 9), /\(5 of at most 9 output bytes written\).*overflow the 4-byte output limit/);
});

test("block and frame: 5000 mutated inputs either decode within the limit or throw KernelFormatError", () => {
  // xorshift32 (Marsaglia 2003), fixed seed: the same inputs on every run.
  let x = 0x9e3779b9;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const base = frame(bytes(0xf3, 0, "0123456789abcde", 5, 0, 0x1f, "a", 1, 0, 255, 3, 0x20, "ok"), bytes(0x50, "hello"));
  for (let i = 0; i < 5000; i++) {
    const m = base.slice(0, (next() % 8 === 0 ? next() % base.length : base.length));
    for (let k = 1 + (next() % 4); k > 0; k--) if (m.length > 0) m[next() % m.length] = next() & 0xff;
    for (const run of [() => lz4DecompressLegacy(m, 4096), () => block(m.subarray(4), 64)]) {
      try {
        assert.ok(run().length <= 4096);
      } catch (e) {
        assert.ok(e instanceof KernelFormatError, `input ${Buffer.from(m).toString("hex")}: ${String(e)}`);
      }
    }
  }
});

function hasLz4(): boolean {
  try {
    execFileSync("lz4", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

test("round trip: `lz4 -l` (legacy format) of random + repetitive data, over several 8 MiB chunks", (t) => {
  if (!hasLz4()) {
    t.skip("the lz4 command is not installed (apt-get install lz4), so no reference compressor output to check against");
    return;
  }
  // 8 MiB chunks (LZ4_LEGACY_BLOCK_MAX): 20 MiB spans three of them.
  const size = 20 * 1024 * 1024 + 12345;
  const data = new Uint8Array(size);
  const rnd = randomBytes(size);
  for (let at = 0; at < size; ) {
    const kind = rnd[at]! % 4;
    const len = Math.min(size - at, 1 + (rnd[at + 1] ?? 0) * 64);
    if (kind === 0) data.set(rnd.subarray(at, at + len), at); // incompressible
    else if (kind === 1) data.fill(rnd[at + 2] ?? 0, at, at + len); // runs (offset-1 matches)
    else {
      // Repeats of an earlier span, at short and long distances.
      const dist = kind === 2 ? 1 + (rnd[at + 3] ?? 0) % 16 : 1 + ((rnd[at + 3] ?? 0) << 8 | (rnd[at + 4] ?? 0));
      for (let i = 0; i < len; i++) data[at + i] = at + i >= dist ? data[at + i - dist]! : rnd[at + i]!;
    }
    at += len;
  }
  for (const level of ["-1", "-9"]) {
    const compressed = new Uint8Array(execFileSync("lz4", ["-l", level, "-c"], { input: data, maxBuffer: 64 * 1024 * 1024 }));
    assert.equal(compressed[0], 0x02, "legacy magic, first byte");
    const out = lz4DecompressLegacy(compressed, size);
    assert.equal(out.length, size, `lz4 -l ${level}`);
    assert.ok(Buffer.from(out).equals(Buffer.from(data)), `lz4 -l ${level}: round trip differs`);
    // With the kernel build's trailer (size_append) too.
    const withSize = new Uint8Array(compressed.length + 4);
    withSize.set(compressed);
    new DataView(withSize.buffer).setUint32(compressed.length, size, true);
    assert.equal(lz4DecompressLegacy(withSize, size).length, size);
    rejects(() => lz4DecompressLegacy(compressed, size - 1), /output limit/);
    rejects(() => lz4DecompressLegacy(compressed.subarray(0, compressed.length - 100), size), /truncated input/);
  }
});
