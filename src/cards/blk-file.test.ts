// The raw-image backend's DISCARD and WRITE_ZEROES on real files: tmpfs (/dev/shm, where the
// benchmarks put their images) and the disk under the temporary directory. What must hold on
// every file system: the range reads as zeros, the rest is untouched, the size stays. Where the
// file system can punch holes, a discard also gives the blocks back (st_blocks falls).
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { closeSync, existsSync, fstatSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileBackend, openImage } from "./blk-file.js";
import * as sys from "../sys/index.js";
import { GuestMemory } from "../memory/guest-memory.js";

const SIZE = 4 << 20;
const HOLE_AT = 1 << 20;
const HOLE_LEN = 2 << 20;

function pattern(): Uint8Array {
  const b = new Uint8Array(SIZE);
  for (let i = 0; i < SIZE; i++) b[i] = (i * 7 + 1) & 0xff || 1; // never 0
  return b;
}

const dirs: Array<[string, string]> = [["temporary directory", tmpdir()]];
if (existsSync("/dev/shm")) dirs.push(["tmpfs (/dev/shm)", "/dev/shm"]);

/** An image of `contents` in a fresh directory under `base`, opened, with its FileBackend; all undone after the test. */
function imageBackend(t: TestContext, base: string, contents: Uint8Array, readOnly: boolean): { be: FileBackend; fd: number } {
  const dir = mkdtempSync(join(base, "typervisor-blkfile-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "disk.img");
  writeFileSync(path, contents);
  const image = openImage(path, readOnly);
  t.after(() => image.close());
  return { be: new FileBackend(image.fd, image.sizeBytes), fd: image.fd };
}

for (const [where, base] of dirs) {
  for (const op of ["discard", "writeZeroes", "writeZeroes+unmap"] as const) {
    test(`FileBackend ${op} on ${where}: the range reads as zeros, the rest and the size are kept`, (t) => {
      const want = pattern();
      const { be, fd: imageFd } = imageBackend(t, base, want, false);
      be.flush();
      const blocksBefore = fstatSync(imageFd).blocks;

      if (op === "discard") be.discard(HOLE_AT, HOLE_LEN);
      else be.writeZeroes(HOLE_AT, HOLE_LEN, op === "writeZeroes+unmap");

      want.fill(0, HOLE_AT, HOLE_AT + HOLE_LEN);
      const got = new Uint8Array(SIZE);
      be.read(got, 0);
      assert.deepEqual(Buffer.from(got), Buffer.from(want));
      const st = fstatSync(imageFd);
      assert.equal(st.size, SIZE, "the image keeps its size");
      if (op === "writeZeroes") {
        assert.ok(st.blocks >= blocksBefore, `WRITE_ZEROES without unmap keeps the range allocated (${blocksBefore} → ${st.blocks} blocks)`);
      } else if (st.blocks < blocksBefore) {
        // A hole was punched: at least the 2 MiB range (in 512-byte st_blocks) came back.
        assert.ok(blocksBefore - st.blocks >= HOLE_LEN / 512, `${blocksBefore} → ${st.blocks} blocks`);
      } else {
        t.diagnostic(`${where} did not punch a hole (blocks ${blocksBefore} → ${st.blocks}): the range was zeroed instead`);
      }
    });
  }
}

test("FileBackend: a storage error other than 'not supported' is the request's (SysError), not swallowed", (t) => {
  const { be } = imageBackend(t, tmpdir(), pattern(), true); // O_RDONLY: fallocate answers EBADF
  assert.throws(() => be.discard(0, 4096), { name: "SysError", code: "EBADF" });
});

test("FileBackend readAt/writeAt move bytes between the image and guest RAM by host address; GuestMemory checks the range first", (t) => {
  const data = pattern();
  const { be } = imageBackend(t, tmpdir(), data, false);
  // Guest RAM as the card maps it: a shared mapping of a memfd, at guest address 1 MiB.
  const ram = 1 << 20;
  const fd = sys.memfdCreate("blk-file-test", 0);
  t.after(() => closeSync(fd));
  sys.ftruncate(fd, ram);
  const addr = sys.mmap(ram, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
  t.after(() => sys.munmap(addr, ram));
  const mem = new GuestMemory([{ gpa: 0x100000, bytes: new Uint8Array(sys.view(addr, ram)), hostAddr: addr }]);
  // Image -> guest at 0x100000 + 8 KiB, two pages from image offset 12 KiB.
  be.readAt(mem.hostAddress(0x102000, 8192), 8192, 12288);
  assert.deepEqual(mem.read(0x102000, 8192), data.subarray(12288, 12288 + 8192));
  assert.equal(mem.readU8(0x101fff), 0, "nothing before the buffer");
  assert.equal(mem.readU8(0x104000), 0, "nothing after it");
  // Guest -> image at offset 1 MiB.
  mem.fill(0x110000, 4096, 0xab);
  be.writeAt(mem.hostAddress(0x110000, 4096), 4096, 1 << 20);
  const back = new Uint8Array(4096);
  be.read(back, 1 << 20);
  assert.ok(back.every((b) => b === 0xab));
  // A range that is not entirely guest RAM has no host address: the same error as any access.
  assert.throws(() => mem.hostAddress(0x1ff000, 8192), { name: "GuestMemoryError" });
  assert.throws(() => mem.hostAddress(0xff000, 4096), { name: "GuestMemoryError" });
  assert.throws(() => mem.hostAddress(-1, 1), { name: "GuestMemoryError" });
  // Memory that is no host mapping (a test's anonymous RAM) answers -1: the caller uses a view.
  assert.equal(GuestMemory.anonymous([[0, 4096]]).hostAddress(0, 4096), -1);
});
