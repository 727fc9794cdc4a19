// Unit tests of the box's parts that need no QEMU: the init scripts, argument paths, the result
// reporter and parser, and where each KVM test is routed (module ordering: src/image/modules.test.ts). The box itself boots
// in every `npm test` on a host without hardware KVM (every KVM test file runs through it).

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { envFile, initramfsInit, rootInit, EXIT_MARK, RESULT_TTY } from "./image.js";
import { namedPaths } from "./main.js";
import { qemuMajor, wedgedCpu } from "./box.js";
import boxReporter, { parseResults, RESULT_PREFIX, FILE_ENV } from "./reporter.js";
import { meets, qemuAccel, route, kvmKind, boxShell, endedFiles, FILE_MARK, againAfterGuestCrash, GUEST_CRASH_RETRIES, GUEST_STALLED } from "../testing/kvm.js";
import { shQuote } from "./image.js";
import { execFileSync } from "node:child_process";
import { chmodSync, readFileSync } from "node:fs";

test("the initramfs /init loads modules in order, stops the box when one fails, and switches to the root disk", () => {
  const s = initramfsInit(["lib/a.ko", "lib/b.ko"]);
  assert.ok(s.startsWith("#!/bin/busybox sh\n"));
  assert.ok(s.indexOf("insmod /lib/a.ko") < s.indexOf("insmod /lib/b.ko"));
  assert.match(s, /insmod \/lib\/b\.ko \|\| \{ echo "box: insmod b\.ko failed"; \/bin\/busybox poweroff -f; \}/);
  assert.match(s, /exec \/bin\/busybox switch_root \/newroot \/box\/init\n$/);
});

test("the root /box/init runs the command with stdin closed and reports its status on the result port", () => {
  const s = rootInit();
  assert.match(s, /export [^\n]*TYPERVISOR_BOX=1/);
  assert.match(s, /\/bin\/sh \/box\/command <\/dev\/null\nrc=\$\?\n/);
  assert.ok(s.includes(`echo "${EXIT_MARK} $rc" > ${RESULT_TTY}`));
});

test("envFile quotes values for sh and refuses names sh would not take", () => {
  assert.equal(envFile({ shell: "x", cwd: "/w d", env: { A: "it's", B_2: "$HOME" } }), "export A='it'\\''s'\nexport B_2='$HOME'\nBOX_CWD='/w d'\n");
  assert.throws(() => envFile({ shell: "x", cwd: "/", env: { "A-B": "1" } }), /"A-B" is not an environment variable name/);
});

test("namedPaths: host files an argument names, alone, after '=' or between commas", () => {
  const dir = mkdtempSync(join(tmpdir(), "box-args-"));
  try {
    writeFileSync(join(dir, "vmlinuz"), "");
    writeFileSync(join(dir, "disk.img"), "");
    const got = namedPaths(["run", "--kernel", "vmlinuz", "--drive", "path=disk.img,ro", "--cmdline", "console=ttyS0", "--x=/nonexistent"], dir);
    assert.deepEqual(got.sort(), [join(dir, "disk.img"), join(dir, "vmlinuz")]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the box reporter: one line per finished test with its file, path of names, outcome and error; parseResults reads them back", async () => {
  async function* events() {
    yield { type: "test:start", data: { name: "top", nesting: 0 } };
    yield { type: "test:start", data: { name: "child", nesting: 1 } };
    yield { type: "test:pass", data: { name: "child", nesting: 1, details: { duration_ms: 3.4 } } };
    yield { type: "test:diagnostic", data: { name: "", nesting: 1, message: "attempt 1 hung; retried" } };
    yield { type: "test:fail", data: { name: "top", nesting: 0, details: { duration_ms: 10, error: Object.assign(new Error("wrapper"), { cause: new Error("0 !== 1") }) } } };
    yield { type: "test:start", data: { name: "skipped", nesting: 0 } };
    yield { type: "test:pass", data: { name: "skipped", nesting: 0, skip: "QEMU 7.2 has no virtio-nsm", details: { duration_ms: 0 } } };
    yield { type: "test:plan", data: { name: "", nesting: 0 } };
    yield { type: "test:diagnostic", data: { name: "", nesting: 0, message: "tests 3" } };
  }
  const before = process.env[FILE_ENV];
  process.env[FILE_ENV] = "/p/dist/x.test.js";
  let out = "";
  try {
    for await (const line of boxReporter(events())) out += line;
  } finally {
    if (before === undefined) delete process.env[FILE_ENV];
    else process.env[FILE_ENV] = before;
  }
  const lines = out.trim().split("\n");
  assert.equal(lines.length, 3);
  assert.ok(lines.every((l) => l.startsWith(RESULT_PREFIX)));
  const r = parseResults(`console noise\n${out}${RESULT_PREFIX}{"cut short`);
  assert.deepEqual(r.map((x) => [x.file, x.path, x.outcome, x.durationMs]), [
    ["/p/dist/x.test.js", ["top", "child"], "pass", 3],
    ["/p/dist/x.test.js", ["top"], "fail", 10],
    ["/p/dist/x.test.js", ["skipped"], "skip", 0],
  ]);
  assert.equal(r[1]!.error!.message, "0 !== 1");
  assert.equal(r[2]!.reason, "QEMU 7.2 has no virtio-nsm");
  assert.deepEqual(r[0]!.diagnostics, ["attempt 1 hung; retried"], "a test's own diagnostics travel with it");
  assert.equal(r[2]!.diagnostics, undefined, "the run's summary is nobody's diagnostic");
});

test("routing: a test runs natively where the host meets its need, else in the box; inside, only what the outer host could not run", () => {
  assert.equal(meets("hardware", "hardware"), true);
  assert.equal(meets("pvm", "kvm"), true);
  assert.equal(meets("pvm", "hardware"), false);
  assert.equal(meets("none", "kvm"), false);
  assert.equal(route("kvm", { inBox: false, host: "pvm" }), "native");
  assert.equal(route("hardware", { inBox: false, host: "pvm" }), "box-replay");
  assert.equal(route("kvm", { inBox: false, host: "none" }), "box-replay");
  assert.equal(route("hardware", { inBox: false, host: "hardware" }), "native");
  assert.equal(route("kvm", { inBox: true, host: "hardware", outer: "pvm" }), "in-box-elsewhere");
  assert.equal(route("hardware", { inBox: true, host: "hardware", outer: "pvm" }), "in-box-run");
  assert.equal(route("kvm", { inBox: true, host: "hardware", outer: "none" }), "in-box-run");
  assert.equal(route("kvm", { inBox: true, host: "hardware" }), "in-box-run"); // by hand: everything
  assert.equal(qemuAccel("hardware", "pvm", true), "tcg");
  assert.equal(qemuAccel("kvm", "pvm", true), "kvm");
  assert.equal(qemuAccel("kvm", "hardware", false), "tcg");
});

test("kvmKind: none without the device, pvm with kvm_pvm loaded, hardware otherwise", () => {
  const dir = mkdtempSync(join(tmpdir(), "box-kind-"));
  try {
    const dev = join(dir, "kvm");
    const pvm = join(dir, "kvm_pvm");
    assert.equal(kvmKind(dev, pvm), "none");
    writeFileSync(dev, "");
    assert.equal(kvmKind(dev, pvm), "hardware");
    mkdirSync(pvm);
    assert.equal(kvmKind(dev, pvm), "pvm");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the box's shell runs each KVM file under a time limit, marks its end with its status, and exits with a failing one's", () => {
  const dir = mkdtempSync(join(tmpdir(), "box-shell-"));
  try {
    // A stand-in `node` that exits with the number in the test file's name, and logs its arguments.
    const bin = join(dir, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "node"), `#!/bin/sh\necho "$@" >> ${join(dir, "argv")}\nfor a; do f=$a; done\nexit $(basename "$f" .test.js | tr -dc 0-9)\n`);
    chmodSync(join(bin, "node"), 0o755);
    const tty = join(dir, "tty");
    writeFileSync(tty, "");
    const files = ["/p/dist/a 0.test.js", "/p/dist/b3.test.js", "/p/dist/c0.test.js"];
    const shell = boxShell(files, { shQuote, fileEnv: FILE_ENV, resultPathEnv: "BOX_RESULT_PATH", resultTty: tty, reporter: "/p/dist/box/reporter.js" });
    assert.match(shell, /timeout -s KILL \d+ node --test --test-only/);
    let status = 0;
    try {
      execFileSync("/bin/sh", ["-c", shell], { env: { PATH: `${bin}:/usr/bin:/bin` }, stdio: "ignore" });
    } catch (e) {
      status = (e as { status: number }).status;
    }
    assert.equal(status, 3, "the run's status is a failing file's");
    const ended = endedFiles(`noise\n${readFileSync(tty, "utf8")}${FILE_MARK} x\n`);
    assert.deepEqual([...ended], [["/p/dist/a 0.test.js", 0], ["/p/dist/b3.test.js", 3], ["/p/dist/c0.test.js", 0]], "every file ran and is marked, a failing one included");
    assert.equal(readFileSync(join(dir, "argv"), "utf8").trim().split("\n").length, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("wedgedCpu reads the box kernel's soft-lockup reports (the last in a chunk); other console text is none", () => {
  assert.equal(wedgedCpu("box: pass dist/x.test.js › a test\n"), undefined);
  assert.deepEqual(wedgedCpu("[  200.948197] watchdog: BUG: soft lockup - CPU#1 stuck for 131s! [node:128]\n"), { cpu: 1, seconds: 131 });
  assert.deepEqual(
    wedgedCpu("[ 1.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]\n[ 2.0] watchdog: BUG: soft lockup - CPU#1 stuck for 48s! [node:9]\n"),
    { cpu: 1, seconds: 48 },
  );
});

test("againAfterGuestCrash: a stock guest's crash exit in the box runs the test again (GUEST_CRASH_RETRIES times at most), saying so; other failures and one crash more fail", async () => {
  const notes: string[] = [];
  const t = { diagnostic: (m: string) => notes.push(m) } as unknown as Parameters<ReturnType<typeof againAfterGuestCrash>>[0];
  const crash = "exit\ntypervisor: guest crashed on vCPU 0: triple fault (KVM_EXIT_SHUTDOWN: the guest triple-faulted)";
  let calls = 0;
  assert.equal(GUEST_CRASH_RETRIES, 3);
  await againAfterGuestCrash(() => {
    if (++calls <= 3) throw new Error(crash);
  })(t);
  assert.equal(calls, 4);
  assert.equal(notes.length, 3);
  assert.match(notes[0]!, /the guest crashed under nested SVM in QEMU TCG \(typervisor: guest crashed on vCPU 0.*\); the test runs again \(1 of 3, in the box only\)/);
  assert.match(notes[2]!, /runs again \(3 of 3, in the box only\)/);
  for (const [message, expected, why] of [
    ["the guest pinged the host", 1, "another failure is not retried"],
    ['{"exit":{"kind":"crash","vcpu":0}}', 1 + GUEST_CRASH_RETRIES, "a crash on the last attempt fails"],
  ] as const) {
    calls = 0;
    await assert.rejects(async () => againAfterGuestCrash(() => {
      calls++;
      throw new Error(message);
    })(t), (e: Error) => e.message === message);
    assert.equal(calls, expected, why);
  }
  // A guest its runner stopped for going silent mid-boot (image/testing.ts BootWatch) runs again too, said as a stall.
  notes.length = 0;
  calls = 0;
  await againAfterGuestCrash(() => {
    if (++calls === 1) throw new Error(`the guest connected\n--- ${GUEST_STALLED}: its console was silent for 120 s while the kernel booted; stopped\n--- typervisor run`);
  })(t);
  assert.equal(calls, 2);
  assert.match(notes[0]!, /^the guest stalled under nested SVM in QEMU TCG \(--- the guest stalled under nested TCG: its console was silent .*\); the test runs again \(1 of 3, in the box only\)$/);
});

test("qemuMajor reads the major version from QEMU's --version, and nothing from other text", () => {
  assert.equal(qemuMajor("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025 Fabrice Bellard\n"), 10);
  assert.equal(qemuMajor("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n"), 7);
  assert.equal(qemuMajor(""), undefined);
  assert.equal(qemuMajor("qemu-system-x86_64: command not found"), undefined);
});
