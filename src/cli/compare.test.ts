// `typervisor compare` and `--drive ...,io=`: argument parsing, the no-KVM refusal, and the command's
// wiring (runner, table, report files) over an injected BootProbe. Booting the probe needs KVM and is
// not exercised here.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCommand, parseDrive, UsageError, DEFAULT_COMPARE_OUT } from "./args.js";
import { toDriveConfig } from "./run.js";
import { compareCommand } from "./compare.js";
import { EXIT_GUEST_FAILURE, EXIT_HOST, EXIT_OK, EXIT_USAGE } from "./exit-codes.js";
import type { BootProbe } from "../compare/run.js";
import { syntheticBootProbe } from "../compare/testing.js";

const limits = { maxVcpus: 8, minMem: 16, maxMem: 65536 };
const MiB = 1024 * 1024;

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) } }, out, err };
}

test("--drive io=card|emulated|dom0 selects the I/O path; absent means card", () => {
  assert.equal(parseDrive("path=a.img", 0).ioPath, undefined);
  for (const io of ["card", "emulated", "dom0"] as const) {
    const d = parseDrive(`path=a.img,io=${io},ro`, 0);
    assert.equal(d.ioPath, io);
    assert.deepEqual(toDriveConfig(d), { id: "drive0", path: "a.img", readOnly: true, ioPath: io });
  }
  assert.throws(() => parseDrive("path=a.img,io=scsi", 0), (e: unknown) => e instanceof UsageError && /io= must be card, emulated, dom0, got "scsi"/.test(e.message));
  assert.throws(() => parseDrive("path=a.img,io", 0), /io= must be/);
  const c = parseCommand(["run", "--drive", "path=a.img,io=emulated", "--drive", "path=b.img,io=dom0,id=xen"], limits);
  if (c.cmd !== "run") return assert.fail("run");
  assert.deepEqual(c.options.drives.map((d) => [d.id, d.ioPath]), [["drive0", "emulated"], ["xen", "dom0"]]);
  // The API's drive resource (Firecracker's) carries no I/O path: refused rather than dropped.
  assert.throws(() => parseCommand(["run", "--api-sock", "/tmp/x.sock", "--drive", "path=a.img,io=dom0"], limits), /io=dom0 is not served through --api-sock/);
  assert.equal(parseCommand(["run", "--api-sock", "/tmp/x.sock", "--drive", "path=a.img,io=card"], limits).cmd, "serve");
});

test("compare: defaults and options", () => {
  assert.deepEqual(parseCommand(["compare"], limits), {
    cmd: "compare",
    options: { sizeBytes: 256 * MiB, runs: 3, outDir: DEFAULT_COMPARE_OUT, paths: ["emulated", "dom0", "card"], hosted: false },
  });
  assert.deepEqual(parseCommand(["compare", "--size", "64M", "--runs", "5", "--out", "/tmp/r", "--paths", "card,dom0"], limits), {
    cmd: "compare",
    options: { sizeBytes: 64 * MiB, runs: 5, outDir: "/tmp/r", paths: ["card", "dom0"], hosted: false },
  });
  const size = (s: string) => {
    const c = parseCommand(["compare", "--size", s], limits);
    return c.cmd === "compare" ? c.options.sizeBytes : NaN;
  };
  assert.equal(size("1g"), 1024 * MiB);
  assert.equal(size("2048K"), 2 * MiB);
  assert.equal(size(String(MiB)), MiB);
  assert.equal(parseCommand(["compare", "--help"], limits).cmd, "help");
});

test("compare: bad options are one-line usage errors", () => {
  const bad: Array<[string[], RegExp]> = [
    [["--size", "1.5G"], /--size must be a whole number with an optional K, M or G suffix/],
    [["--size", "512K"], /--size must be from 1M to 128G/],
    [["--size", "256T"], /--size must be a whole number/],
    [["--size", String(MiB + 1)], /whole 512-byte sectors/],
    [["--runs", "0"], /--runs must be from 1 to 100/],
    [["--runs", "x"], /--runs must be a whole number/],
    [["--paths", "card,scsi"], /--paths takes card, emulated, dom0 separated by commas, got "scsi"/],
    [["--paths", "card,card"], /names a path twice/],
    [["--nope"], /Unknown option '--nope'/],
  ];
  for (const [args, re] of bad) {
    assert.throws(() => parseCommand(["compare", ...args], limits), (e: unknown) => e instanceof UsageError && re.test(e.message), args.join(" "));
  }
});

test("compare without KVM: one line naming the device node, exit 4, nothing written", async () => {
  const out = join(mkdtempSync(join(tmpdir(), "typervisor-compare-")), "report");
  const c = capture();
  const status = await compareCommand({ sizeBytes: MiB, runs: 1, outDir: out, paths: ["card"], hosted: false }, c.io, { kvmPath: "/nonexistent/kvm", env: {} });
  assert.equal(status, EXIT_HOST);
  assert.deepEqual(c.err, ["typervisor: compare needs /nonexistent/kvm, and this host has none: nothing was measured\n"]);
  assert.deepEqual(c.out, []);
  assert.ok(!existsSync(out));
});

test("compare where its image cannot be written: one line naming the directory, exit 4, nothing booted or written", async () => {
  const out = join(mkdtempSync(join(tmpdir(), "typervisor-compare-")), "report");
  const c = capture();
  let boots = 0;
  const status = await compareCommand({ sizeBytes: MiB, runs: 1, outDir: out, paths: ["card"], hosted: true }, c.io, {
    imageDir: "/nonexistent/images",
    bootProbe: async () => {
      boots++;
      return { lines: "", hostCpuSeconds: { vmm: 0 }, exits: 0 };
    },
    env: {},
  });
  assert.equal(status, EXIT_HOST);
  assert.deepEqual(c.err, ["typervisor: compare: cannot write the 1 MiB image in /nonexistent/images: no such directory (a smaller --size, or more room there)\n"]);
  assert.equal(boots, 0);
  assert.deepEqual(c.out, []);
  assert.ok(!existsSync(out));
});

test("typervisor compare as a user runs it, on a host without /dev/kvm: exit 4, one line", (t) => {
  if (existsSync("/dev/kvm")) {
    t.skip("/dev/kvm exists here: the command would run the comparison");
    return;
  }
  const bin = join(fileURLToPath(new URL("../../", import.meta.url)), "bin", "typervisor.js");
  const env = { ...process.env };
  delete env["TYPERVISOR_BOX"]; // the no-KVM answer, not the box's
  const r = spawnSync(process.execPath, [bin, "compare", "--runs", "1"], { encoding: "utf8", timeout: 60_000, env });
  assert.equal(r.status, 4, r.stderr);
  assert.equal(r.stderr, "typervisor: compare needs /dev/kvm, and this host has none: nothing was measured\n");
});

test("compare runs the runner over the boot probe, prints the table and writes report.json and report.html", async () => {
  const out = join(mkdtempSync(join(tmpdir(), "typervisor-compare-")), "report");
  const { bootProbe, calls } = syntheticBootProbe();
  const c = capture();
  // Any existing path stands in for /dev/kvm: the boot probe is injected, no VM runs.
  const status = await compareCommand({ sizeBytes: 8 * MiB, runs: 2, outDir: out, paths: ["dom0", "card"], hosted: false }, c.io, { kvmPath: tmpdir(), bootProbe, env: {} });
  assert.equal(status, EXIT_OK, c.err.join(""));
  assert.deepEqual([...new Set(calls.map((x) => x.path))], ["dom0", "card"]);
  assert.equal(calls.length, 2 * 3, "a baseline and 2 runs per path");
  const text = c.out.join("");
  assert.match(text, /4K rand read QD1, IOPS/);
  assert.match(text, /not run/, "the emulated column");
  assert.match(text, new RegExp(`report: ${join(out, "report.json")} ${join(out, "report.html")}`));
  const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as { paths: Array<{ path: string }>; host: { runs: number } };
  assert.deepEqual(report.paths.map((p) => p.path), ["dom0", "card"]);
  assert.equal(report.host.runs, 2);
  assert.match(readFileSync(join(out, "report.html"), "utf8"), /<html/);
  assert.ok(c.err.some((l) => /dom0: run 1\/2/.test(l)), "progress goes to stderr");
  // Progress names the path, the baseline and each run of how many, and how long each took.
  const progress = c.err.join("");
  assert.match(progress, /^compare: 2 paths \(dom0, card\), a baseline boot and 2 runs each, a 8 MiB image in /m);
  for (const [i, path] of ["dom0", "card"].entries()) {
    assert.match(progress, new RegExp(`^compare: ${path}: path ${i + 1}/2, baseline boot \\(no I/O\\)$`, "m"));
    assert.match(progress, new RegExp(`^compare: ${path}: baseline done in [\\d.]+ s$`, "m"));
    for (const run of [1, 2]) assert.match(progress, new RegExp(`^compare: ${path}: run ${run}/2 done in [\\d.]+ s$`, "m"));
  }
  assert.match(c.err.at(-1)!, /^compare: writing .*report\.json and report\.html\n$/);
  assert.ok(c.out.every((s) => !s.startsWith("compare:")), "no progress on stdout");
});

test("compare inside the box (TYPERVISOR_BOX=1): one line, exit 2, before KVM or the boot probe is touched; --hosted still runs", async () => {
  const out = join(mkdtempSync(join(tmpdir(), "typervisor-compare-")), "report");
  const { bootProbe, calls } = syntheticBootProbe();
  const c = capture();
  const status = await compareCommand({ sizeBytes: MiB, runs: 1, outDir: out, paths: ["card"], hosted: false }, c.io, { kvmPath: tmpdir(), bootProbe, env: { TYPERVISOR_BOX: "1" } });
  assert.equal(status, EXIT_USAGE);
  assert.deepEqual(c.err, ["typervisor compare measures block I/O through three I/O paths on KVM; inside the box (QEMU TCG) its figures mean nothing — run it on a host with KVM (or use --hosted)\n"]);
  assert.deepEqual(c.out, []);
  assert.equal(calls.length, 0, "nothing booted");
  assert.ok(!existsSync(out), "nothing written");
  // --hosted runs no VM: it is not refused (the injected probe stands in for the hosted drivers).
  const h = capture();
  const hosted = await compareCommand({ sizeBytes: MiB, runs: 1, outDir: out, paths: ["card"], hosted: true }, h.io, { kvmPath: tmpdir(), bootProbe, env: { TYPERVISOR_BOX: "1" } });
  assert.equal(hosted, EXIT_OK, h.err.join(""));
  assert.equal(calls.length, 2, "a baseline and one run");
});

test("typervisor compare --help says what it measures, that it needs KVM on a real host, and refuses the box", () => {
  const bin = join(fileURLToPath(new URL("../../", import.meta.url)), "bin", "typervisor.js");
  const r = spawnSync(process.execPath, [bin, "compare", "--help"], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.startsWith("typervisor compare [--size 256M]"), r.stdout);
  assert.match(r.stdout, /^Measures one block workload/m);
  assert.match(r.stdout, /Needs KVM on a real host: \/dev\/kvm/);
  assert.match(r.stdout, /Inside the box\n\(QEMU TCG, TYPERVISOR_BOX=1\) it refuses/);
  assert.match(r.stdout, /2 bad arguments, or inside the box/);
});

test("compare --hosted measures all three paths without a VM: the probe's drivers against our back ends, each run verified clean", { timeout: 120_000 }, async () => {
  const out = join(mkdtempSync(join(tmpdir(), "typervisor-compare-")), "report");
  const c = capture();
  // No /dev/kvm is looked for: --hosted runs no VM.
  const status = await compareCommand({ sizeBytes: 8 * MiB, runs: 1, outDir: out, paths: ["emulated", "dom0", "card"], hosted: true }, c.io, { kvmPath: "/nonexistent/kvm" });
  assert.equal(status, EXIT_OK, c.err.join(""));
  const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as {
    hosted?: boolean;
    paths: Array<{ path: string; errors: string[]; exitsPerIo: { median: number }; copiesPerRequest: number; modes: Array<{ mode: string; qd: number; iops: { median: number } }> }>;
  };
  assert.equal(report.hosted, true);
  for (const p of report.paths) {
    assert.deepEqual(p.errors, [], p.path);
    assert.ok(p.modes.find((m) => m.mode === "randread" && m.qd === 1)!.iops.median > 0, p.path);
  }
  const by = Object.fromEntries(report.paths.map((p) => [p.path, p]));
  // What does not depend on the host: the emulated disk traps on every register access (thousands per
  // 4 KiB), the card on a few per request, Dom0's doorbell is an ioeventfd; Dom0 copies twice, the card once.
  assert.ok(by["emulated"]!.exitsPerIo.median > 1000, `emulated ${by["emulated"]!.exitsPerIo.median}`);
  assert.ok(by["card"]!.exitsPerIo.median < 5, `card ${by["card"]!.exitsPerIo.median}`);
  assert.ok(by["dom0"]!.exitsPerIo.median < 1, `dom0 ${by["dom0"]!.exitsPerIo.median}`);
  assert.ok(by["dom0"]!.copiesPerRequest >= 2 && by["card"]!.copiesPerRequest === 1);
  assert.match(readFileSync(join(out, "report.html"), "utf8"), /Hosted run, no VM/);
});

test("compare exits 1 and names the path when its runs failed", async () => {
  const out = join(mkdtempSync(join(tmpdir(), "typervisor-compare-")), "report");
  const failing: BootProbe = async (path) => {
    throw new Error(`cannot start the VM: no ${path}`);
  };
  const c = capture();
  const status = await compareCommand({ sizeBytes: MiB, runs: 1, outDir: out, paths: ["emulated"], hosted: false }, c.io, { kvmPath: tmpdir(), bootProbe: failing, env: {} });
  assert.equal(status, EXIT_GUEST_FAILURE);
  assert.match(c.out.join(""), /emulated: run 1: cannot start the VM: no emulated/);
  assert.match(c.err.at(-1)!, /^typervisor: compare: runs failed on emulated/);
  assert.ok(existsSync(join(out, "report.json")), "the report says what failed");
});
