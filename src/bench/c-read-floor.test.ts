// The C floor bench:card-cost prints beside the card (src/bench/c-read-floor.c, built by
// `npm run build` into guest/build/): it reads the image it is given and reports ns per read for
// pread and for io_uring in batches of 32 (or the errno where this kernel refuses io_uring), and it
// refuses what it cannot measure in one line with exit 2. Timings are not asserted, only that each
// measurement happened.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const program = fileURLToPath(new URL("../../guest/build/c-read-floor", import.meta.url));

function run(args: string[]) {
  return spawnSync(program, args, { encoding: "utf8", timeout: 60_000 });
}

test("c-read-floor reads the image and reports pread, io_uring and getppid per read", () => {
  const dir = mkdtempSync(join(tmpdir(), "tv-floor-"));
  try {
    const image = join(dir, "disk.img");
    writeFileSync(image, Buffer.alloc(1 << 20, 0x5a));
    const r = run([image, "3200"]);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, number | null>;
    assert.equal(out["reads"], 3200);
    for (const k of ["preadNs", "getppidNs"]) assert.ok(typeof out[k] === "number" && out[k] > 0, `${k}: ${String(out[k])}`);
    // Either io_uring ran (a time per read) or this kernel refused it (its errno), never neither.
    const uring = out["uringBatch32Ns"];
    assert.ok((typeof uring === "number" && uring > 0) || (uring === null && typeof out["uringError"] === "number"), r.stdout);
    assert.ok(typeof out["threadsAfterUring"] === "number" && out["threadsAfterUring"] >= 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("c-read-floor refuses a missing image, one smaller than a block and a read count not a multiple of 32", () => {
  const dir = mkdtempSync(join(tmpdir(), "tv-floor-"));
  try {
    const tiny = join(dir, "tiny.img");
    writeFileSync(tiny, Buffer.alloc(100));
    const missing = run([join(dir, "none.img")]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^c-read-floor: .*none\.img: No such file or directory\n$/);
    const small = run([tiny]);
    assert.equal(small.status, 2);
    assert.match(small.stderr, /smaller than 4096 bytes/);
    const odd = run([tiny, "33"]);
    assert.equal(odd.status, 2);
    assert.match(odd.stderr, /multiple of 32/);
    assert.equal(run([]).status, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
