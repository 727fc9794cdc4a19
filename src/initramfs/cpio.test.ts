import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeCpio, S_IFDIR, S_IFREG, S_IFLNK } from "./cpio.js";

const sample = () =>
  writeCpio([
    { name: "bin", mode: S_IFDIR | 0o755 },
    { name: "bin/hello", mode: S_IFREG | 0o755, data: new TextEncoder().encode("#!/bin/sh\necho hi\n") },
    { name: "init", mode: S_IFLNK | 0o777, linkTarget: "bin/hello" },
  ]);

test("newc headers: magic, 4-byte alignment, trailer", () => {
  const a = sample();
  const text = Buffer.from(a).toString("latin1");
  assert.ok(text.startsWith("070701"));
  assert.equal(a.length % 4, 0);
  assert.ok(text.includes("TRAILER!!!\0"));
  // Every header starts on a 4-byte boundary.
  for (let i = text.indexOf("070701"); i >= 0; i = text.indexOf("070701", i + 1)) assert.equal(i % 4, 0);
});

test("the archive unpacks with GNU cpio when it is installed", (t) => {
  const probe = spawnSync("cpio", ["--version"]);
  if (probe.error !== undefined) {
    t.skip("GNU cpio is not installed (apt-get install cpio): the format is checked by the header test only");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "cpio-"));
  writeFileSync(join(dir, "a.cpio"), sample());
  const r = spawnSync("sh", ["-c", "cpio -idm --quiet < a.cpio"], { cwd: dir });
  assert.equal(r.status, 0, r.stderr.toString());
  assert.equal(readFileSync(join(dir, "bin/hello"), "utf8"), "#!/bin/sh\necho hi\n");
  assert.equal(statSync(join(dir, "bin/hello")).mode & 0o777, 0o755);
  assert.equal(readlinkSync(join(dir, "init")), "bin/hello");
});

test("absolute names are refused", () => {
  assert.throws(() => writeCpio([{ name: "/etc", mode: S_IFDIR }]), /relative/);
});
