// The `typervisor` command as a user runs it: a separate process, its exit status and output.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync, chmodSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const bin = join(root, "bin", "typervisor.js");

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"] });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function assertOneLineError(r: { status: number | null; stderr: string; stdout: string }, status: number, re: RegExp) {
  assert.equal(r.status, status, `exit status (stderr: ${r.stderr})`);
  assert.match(r.stderr, re);
  assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line, got: ${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\bat .*\.js:\d+/, "no stack trace");
}

test("--help and --version", () => {
  const h = cli(["--help"]);
  assert.equal(h.status, 0);
  assert.match(h.stdout, /typervisor run \[options\]/);
  const v = cli(["--version"]);
  assert.equal(v.status, 0);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  assert.equal(v.stdout.trim(), `typervisor ${pkg.version}`);
});

test("probe --path prints the absolute path of the built probe guest", () => {
  const r = cli(["probe", "--path"]);
  assert.equal(r.status, 0, r.stderr);
  const p = r.stdout.trim();
  assert.ok(p.startsWith("/"), p);
  assert.ok(existsSync(p), `${p} exists`);
  assert.deepEqual([...readFileSync(p).subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], "an ELF file");
});

test("bad arguments: one line, exit 2", () => {
  assertOneLineError(cli(["run", "--vcpus", "99"]), 2, /--vcpus must be from 1 to 8/);
  assertOneLineError(cli(["run", "--nope"]), 2, /Unknown option '--nope'/);
  assertOneLineError(cli(["launch"]), 2, /unknown command "launch"/);
});

test("unreadable, truncated and non-kernel files: one line, exit 2, before KVM is touched", () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-cli-"));
  assertOneLineError(cli(["run", "--kernel", join(dir, "missing")]), 2, /cannot read kernel .*missing: no such file/);
  assertOneLineError(cli(["run", "--kernel", dir]), 2, /cannot read kernel .*: is a directory/);

  const text = join(dir, "notes.txt");
  writeFileSync(text, "this is not a kernel\n".repeat(100));
  assertOneLineError(cli(["run", "--kernel", text]), 2, /notes\.txt: .*not a kernel image/);

  const empty = join(dir, "empty");
  writeFileSync(empty, "");
  assertOneLineError(cli(["run", "--kernel", empty]), 2, /empty: /);

  // A real ELF (the probe) cut short in the middle of its program headers.
  const probe = readFileSync(cli(["probe", "--path"]).stdout.trim());
  const cut = join(dir, "truncated.elf");
  writeFileSync(cut, probe.subarray(0, 100));
  assertOneLineError(cli(["run", "--kernel", cut]), 2, /truncated\.elf: /);

  if (process.getuid?.() !== 0) {
    const secret = join(dir, "secret");
    writeFileSync(secret, "x");
    chmodSync(secret, 0o000);
    assertOneLineError(cli(["run", "--kernel", secret]), 2, /permission denied/);
  }
  const initrd = join(dir, "missing-initrd");
  assertOneLineError(cli(["run", "--kernel", cli(["probe", "--path"]).stdout.trim(), "--initrd", initrd]), 2, /cannot read initrd/);
});

test("a drive whose image is missing is refused in one line, exit 2, before KVM is touched", () => {
  assertOneLineError(cli(["run", "--drive", "path=/nonexistent/disk.img,id=rootfs"]), 2, /drive rootfs: .*\/nonexistent\/disk\.img does not exist/);
  assertOneLineError(cli(["run", "--drive", "id=x"]), 2, /--drive needs path=FILE/);
});

test("without /dev/kvm, run says so in one line and exits 4", (t) => {
  if (existsSync("/dev/kvm")) {
    t.skip("/dev/kvm exists here; the integration tests cover booting");
    return;
  }
  assertOneLineError(cli(["run", "--console", "none"]), 4, /\/dev\/kvm/);
});

test("measure --json predicts the PCRs from the files, computed independently here", async () => {
  const { createHash } = await import("node:crypto");
  const probe = cli(["probe", "--path"]).stdout.trim();
  const kernel = readFileSync(probe);
  const cmdline = "probe.run=demo quiet";
  const r = cli(["measure", "--kernel", probe, "--cmdline", cmdline, "--json"]);
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as Record<string, string>;
  // DESIGN.md §5: PCR = SHA384(48 zero bytes || SHA384(kernel || cmdline || initrd)); no initrd here.
  const sha384 = (b: Uint8Array) => createHash("sha384").update(b).digest();
  const expected = sha384(Buffer.concat([Buffer.alloc(48), sha384(Buffer.concat([kernel, Buffer.from(cmdline)]))])).toString("hex");
  assert.equal(got["pcr0"], expected);
  assert.equal(got["pcr1"], expected);
  assert.equal(got["pcr2"], "0".repeat(96));
  assertOneLineError(cli(["measure", "--kernel", "/nonexistent/kernel"]), 2, /cannot read kernel/);
});

test("signed images: a signature over another PCR0 or a flipped byte refuses the boot (exit 2); a good one passes to KVM", async () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-sign-"));
  const chip = join(dir, "chip");
  assert.equal(cli(["chip", "init", "--dir", chip]).status, 0);
  const probe = cli(["probe", "--path"]).stdout.trim();
  const key = join(chip, "leaf-key.pem");
  const cert = join(chip, "leaf-cert.pem");
  const sig = join(dir, "probe.sig");
  const signed = cli(["sign", "--kernel", probe, "--cmdline", "probe.run=demo", "--key", key, "--cert", cert, "--out", sig]);
  assert.equal(signed.status, 0, signed.stderr);

  assertOneLineError(
    cli(["run", "--cmdline", "probe.run=boot", "--signature", sig, "--trust", cert, "--require-signed"]),
    2,
    /refusing to boot: the image signature does not verify \(pcr0: /,
  );
  const flipped = readFileSync(sig);
  flipped[flipped.length - 5] ^= 0x01;
  const bad = join(dir, "flipped.sig");
  writeFileSync(bad, flipped);
  assertOneLineError(cli(["run", "--cmdline", "probe.run=demo", "--signature", bad, "--trust", cert]), 2, /refusing to boot: .*\(signature: /);
  assertOneLineError(cli(["run", "--require-signed"]), 2, /--require-signed needs --signature SIG and --trust CERT/);

  // The right image passes the check; what happens next depends on KVM.
  const ok = cli(["run", "--console", "none", "--cmdline", "probe.run=demo", "--signature", sig, "--trust", cert, "--require-signed"]);
  if (existsSync("/dev/kvm")) assert.equal(ok.status, 0, ok.stderr);
  else assertOneLineError(ok, 4, /\/dev\/kvm/);
});
