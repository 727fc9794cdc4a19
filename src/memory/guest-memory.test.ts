import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
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

test("readU16Atomic/writeU16Atomic: little-endian values at aligned addresses, bounds-checked, odd addresses and odd host offsets fall back", () => {
  const mem = GuestMemory.anonymous([[0x1000, 0x100]]);
  mem.writeU16Atomic(0x1010, 0xbeef);
  assert.equal(mem.readU16(0x1010), 0xbeef);
  assert.equal(mem.readU8(0x1010), 0xef, "little-endian, as virtio's modern rings");
  mem.writeU16(0x1020, 0x1234);
  assert.equal(mem.readU16Atomic(0x1020), 0x1234);
  mem.writeU16Atomic(0x1031, 0xabcd); // odd address: an ordinary store
  assert.equal(mem.readU16Atomic(0x1031), 0xabcd);
  mem.writeU16Atomic(0x1040, 0x12345); // only the low 16 bits
  assert.equal(mem.readU16(0x1040), 0x2345);
  assert.throws(() => mem.readU16Atomic(0x10ff), GuestMemoryError);
  assert.throws(() => mem.writeU16Atomic(0x2000, 1), GuestMemoryError);
  // A region whose bytes start at an odd host offset has no 16-bit lanes: every access falls back.
  const odd = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(new ArrayBuffer(0x101), 1, 0x100) }]);
  odd.writeU16Atomic(2, 0x5aa5);
  assert.equal(odd.readU16Atomic(2), 0x5aa5);
  assert.equal(odd.readU16(2), 0x5aa5);
});

test("readU16Atomic never sees half of a racing writeU16Atomic from another thread (virtqueue indices)", () => {
  // Run in a child with --max-opt=0: V8 then never optimises the accessors, which is where a
  // DataView access is byte by byte and tears (a card's first requests run that way). The writer
  // flips the index between 0x00ff and 0x0100: a torn read would show 0x01ff or 0x0000.
  const program = `
    import { Worker } from "node:worker_threads";
    import { GuestMemory } from ${JSON.stringify(new URL("./guest-memory.js", import.meta.url).href)};
    const sab = new SharedArrayBuffer(0x1000);
    const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(sab) }]);
    const flag = new Int32Array(sab, 0x800, 1);
    mem.writeU16Atomic(0x10, 0x00ff);
    const writer = new Worker(\`
      import { workerData } from "node:worker_threads"; // ESM: the child's --input-type reaches its eval worker
      const { GuestMemory } = await import(workerData.url);
      const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(workerData.sab) }]);
      const flag = new Int32Array(workerData.sab, 0x800, 1);
      Atomics.store(flag, 0, 1);
      for (let i = 0; Atomics.load(flag, 0) === 1; i++) mem.writeU16Atomic(0x10, (i & 1) === 0 ? 0x00ff : 0x0100);\`, { eval: true, workerData: { sab, url: ${JSON.stringify(new URL("./guest-memory.js", import.meta.url).href)} } });
    while (Atomics.load(flag, 0) === 0) await new Promise((r) => setTimeout(r, 1));
    const seen = new Set();
    const end = Date.now() + 300;
    while (Date.now() < end) for (let i = 0; i < 10000; i++) seen.add(mem.readU16Atomic(0x10));
    Atomics.store(flag, 0, 2);
    await new Promise((r) => writer.once("exit", r));
    console.log(JSON.stringify([...seen].sort((a, b) => a - b)));
  `;
  const r = spawnSync(process.execPath, ["--max-opt=0", "--input-type=module", "-e", program], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), [0x00ff, 0x0100]);
});
