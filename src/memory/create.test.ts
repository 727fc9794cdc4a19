import { test } from "node:test";
import assert from "node:assert/strict";
import { fstatSync } from "node:fs";
import * as sys from "../sys/index.js";
import { createMemfdGuestMemory } from "./create.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

test("memfd-backed regions: guest writes land in the memfd at the region's offset", () => {
  const m = createMemfdGuestMemory([
    [0, 2 * MiB],
    [4 * MiB, 1 * MiB],
  ]);
  try {
    m.memory.writeU32(0x1000, 0xcafef00d);
    m.memory.writeU32(4 * MiB + 8, 0x12345678);
    const buf = new Uint8Array(4);
    sys.pread(m.fd, buf, 0x1000);
    assert.equal(Buffer.from(buf).readUInt32LE(0), 0xcafef00d);
    // The second region follows the first in the file.
    sys.pread(m.fd, buf, 2 * MiB + 8);
    assert.equal(Buffer.from(buf).readUInt32LE(0), 0x12345678);
    assert.equal(m.memory.regions[1]!.fdOffset, 2 * MiB);
    assert.equal(typeof m.memory.regions[0]!.hostAddr, "bigint");
    assert.throws(() => m.memory.readU8(2 * MiB), /not guest RAM/);
  } finally {
    m.close();
  }
});

test("a 4 GiB guest with the MMIO gap maps untouched (pages are committed on use)", () => {
  const m = createMemfdGuestMemory([
    [0, 3 * GiB],
    [4 * GiB, 1 * GiB],
  ]);
  try {
    assert.equal(m.memory.totalSize, 4 * GiB);
    m.memory.writeU8(3 * GiB - 1, 0xaa);
    m.memory.writeU8(5 * GiB - 1, 0xbb);
    assert.equal(m.memory.readU8(3 * GiB - 1), 0xaa);
    assert.equal(m.memory.readU8(5 * GiB - 1), 0xbb);
    assert.throws(() => m.memory.readU8(3 * GiB), /not guest RAM/, "the gap is not RAM");
  } finally {
    m.close();
  }
});

test("unaligned layouts are refused before anything is created", () => {
  assert.throws(() => createMemfdGuestMemory([[0, 1000]]), /not page-aligned/);
  assert.throws(() => createMemfdGuestMemory([[0x800, 4096]]), /not page-aligned/);
});

test("a new guest commits no page: the memfd has no block until the guest (or the loader) touches one", () => {
  const m = createMemfdGuestMemory([[0, 128 * MiB]]);
  try {
    // st_blocks of a memfd counts the shmem pages it holds (512-byte units): creating the
    // memory neither zeroes nor pre-faults it.
    assert.equal(fstatSync(m.fd).blocks, 0);
    m.memory.writeU8(5 * 4096 + 3, 1);
    assert.equal(fstatSync(m.fd).blocks * 512, 4096, "one write commits one page");
  } finally {
    m.close();
  }
});
