// The raw-image backend's DISCARD and WRITE_ZEROES on real files: tmpfs (/dev/shm, where the
// benchmarks put their images) and the disk under the temporary directory. What must hold on
// every file system: the range reads as zeros, the rest is untouched, the size stays. Where the
// file system can punch holes, a discard also gives the blocks back (st_blocks falls).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, fstatSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileBackend, openImage } from "./blk-file.js";

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

for (const [where, base] of dirs) {
  for (const op of ["discard", "writeZeroes", "writeZeroes+unmap"] as const) {
    test(`FileBackend ${op} on ${where}: the range reads as zeros, the rest and the size are kept`, (t) => {
      const dir = mkdtempSync(join(base, "typervisor-blkfile-"));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      const path = join(dir, "disk.img");
      const want = pattern();
      writeFileSync(path, want);
      const image = openImage(path, false);
      t.after(() => image.close());
      const be = new FileBackend(image.fd, image.sizeBytes);
      be.flush();
      const blocksBefore = fstatSync(image.fd).blocks;

      if (op === "discard") be.discard(HOLE_AT, HOLE_LEN);
      else be.writeZeroes(HOLE_AT, HOLE_LEN, op === "writeZeroes+unmap");

      want.fill(0, HOLE_AT, HOLE_AT + HOLE_LEN);
      const got = new Uint8Array(SIZE);
      be.read(got, 0);
      assert.deepEqual(Buffer.from(got), Buffer.from(want));
      const st = fstatSync(image.fd);
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
  const dir = mkdtempSync(join(tmpdir(), "typervisor-blkfile-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "ro.img");
  writeFileSync(path, pattern());
  const image = openImage(path, true); // O_RDONLY: fallocate answers EBADF
  t.after(() => image.close());
  const be = new FileBackend(image.fd, image.sizeBytes);
  assert.throws(() => be.discard(0, 4096), { name: "SysError", code: "EBADF" });
});
