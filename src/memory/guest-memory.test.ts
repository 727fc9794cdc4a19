import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory, GuestMemoryError } from "./guest-memory.js";

test("typed reads and writes are little-endian and land in the right region", () => {
  const mem = GuestMemory.anonymous([
    [0, 0x1000],
    [0x10000, 0x1000],
  ]);
  mem.writeU32(0x10, 0xdeadbeef);
  assert.equal(mem.readU8(0x10), 0xef);
  assert.equal(mem.readU16(0x12), 0xdead);
  mem.writeU64(0x10ff8n, 0x1122334455667788n);
  assert.equal(mem.readU64(0x10ff8), 0x1122334455667788n);
  assert.equal(mem.regions[1]!.bytes[0xff8], 0x88);
  assert.equal(mem.totalSize, 0x2000);
  assert.equal(mem.end, 0x11000);
});

test("accesses outside RAM, across a hole, or past the end are errors, not host accesses", () => {
  const mem = GuestMemory.anonymous([
    [0, 0x1000],
    [0x1000 + 0x1000, 0x1000],
  ]);
  assert.throws(() => mem.readU8(0x1000), GuestMemoryError);
  assert.throws(() => mem.readU32(0xffe), /0xffe\+4 is not guest RAM/);
  assert.throws(() => mem.readU8(0x3000), GuestMemoryError);
  assert.throws(() => mem.write(0x2ff0, new Uint8Array(0x20)), GuestMemoryError);
  assert.throws(() => mem.readU8(-1), GuestMemoryError);
  assert.throws(() => mem.readU64(2n ** 64n - 8n), GuestMemoryError);
  assert.throws(() => mem.slice(0.5, 1), GuestMemoryError);
  assert.throws(() => mem.slice(0, -1), GuestMemoryError);
});

test("slice is a zero-copy view; read is a copy", () => {
  const mem = GuestMemory.anonymous([[0x100000, 0x1000]]);
  const v = mem.slice(0x100010, 4);
  v.set([1, 2, 3, 4]);
  assert.equal(mem.readU32(0x100010), 0x04030201);
  const c = mem.read(0x100010, 4);
  c[0] = 9;
  assert.equal(mem.readU8(0x100010), 1);
});

test("C strings are bounded and must be terminated", () => {
  const mem = GuestMemory.anonymous([[0, 0x100]]);
  mem.write(0x10, new TextEncoder().encode("console=ttyS0\0"));
  assert.equal(mem.readCString(0x10, 64), "console=ttyS0");
  assert.throws(() => mem.readCString(0x10, 4), /not terminated within 4 bytes/);
  mem.fill(0, 0x100, 0x41);
  assert.throws(() => mem.readCString(0xf0, 1000), /not terminated/);
});

test("overlapping regions are refused", () => {
  assert.throws(
    () =>
      GuestMemory.anonymous([
        [0, 0x2000],
        [0x1000, 0x1000],
      ]),
    /overlap/,
  );
});
