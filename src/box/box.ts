// The box: a KVM host in a QEMU virtual machine, for tests and development only (typervisor itself
// never falls back to it). QEMU's TCG emulates AMD-V (`-cpu max` has svm and npt), Debian's cloud
// kernel loads kvm_amd inside, and Typervisor runs there unchanged against a real /dev/kvm. Slow
// (every instruction is translated) but with hardware-KVM semantics on any x86-64 machine.
//
// One run = one boot: build the images (image.ts), boot QEMU with the console (ttyS0) on a pipe
// and the result port (ttyS1) in a file, run one shell command, read `BOX-EXIT <status>` back.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fetchDebianKernel, fetchDebianPackageFile, kernelModulesDir } from "../testing/debian.js";
import { buildInitramfs, buildRootDisk, EXIT_MARK, fileMiB, type BoxAssets, type BoxCommand } from "./image.js";

/** The repository root (dist/box/ or src/box/ → ../../). */
export const PROJECT_ROOT = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");

/** Guest RAM of the box: room for the tests' own VMs (up to a few GiB) plus node and tmpfs. */
export const BOX_MEM_MIB = 6144;
/** vCPUs of the box: this project's machines have 2 cores; MTTCG runs one host thread per vCPU. */
export const BOX_VCPUS = 2;

/** The QEMU binary, overridable for a host that keeps it elsewhere. */
const QEMU = process.env["TYPERVISOR_BOX_QEMU"] ?? "qemu-system-x86_64";

/**
 * The oldest QEMU whose TCG runs the box's nested guests dependably. Measured here with a 1-vCPU
 * Debian guest booting (a net and a vsock card) 10 to 20 times in a row in one box: QEMU 7.2
 * (bookworm's) failed 3 boots of 27 (a crash exit at a random point, a silent guest, and the box's
 * kernel wedged with its vCPU looping in TCG's cpu_exec), and its guests warned "XSAVE consistency
 * problem"; QEMU 10.0 (bookworm-backports) failed none of 20 and gets the XSAVE sizes right. Not
 * flawless either: 8-vCPU guests failed 2 boots of 15 there (vmm/linux-boot.test.ts).
 */
export const BOX_QEMU_MAJOR = 10;

/** QEMU's major version from `--version`'s first line ("QEMU emulator version 10.0.2 (...)"), or undefined. */
export function qemuMajor(versionText: string): number | undefined {
  const m = /^QEMU emulator version (\d+)\./m.exec(versionText);
  return m === null ? undefined : Number(m[1]);
}

/** `QEMU --version`'s output (null: QEMU did not run), asked once. */
let qemuVersion: string | null | undefined;
function qemuVersionText(): string | null {
  if (qemuVersion === undefined) {
    try {
      qemuVersion = execFileSync(QEMU, ["--version"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    } catch {
      qemuVersion = null;
    }
  }
  return qemuVersion;
}

/** Why the box cannot run on this host (a sentence a user can act on), or undefined when it can. */
export function boxUnavailable(): string | undefined {
  if (qemuVersionText() === null) {
    return `the box needs QEMU (${QEMU}): install Debian's qemu-system-x86`;
  }
  try {
    execFileSync("mke2fs", ["-V"], { stdio: "ignore" });
  } catch {
    return "the box needs mke2fs: install Debian's e2fsprogs";
  }
  return undefined;
}

/** The kernel, its modules and busybox, fetched with apt into .cache/ once. Throws with the reason. */
export function boxAssets(): BoxAssets {
  const kernel = fetchDebianKernel();
  const modulesDir = kernelModulesDir(kernel);
  const busybox = fetchDebianPackageFile("busybox-static", /^bin\/busybox$/);
  return { kernel, modulesDir, busybox };
}

export interface BoxRunOptions {
  command: BoxCommand;
  /** Host files or folders the command names (they appear at the same paths inside). */
  extraPaths?: string[];
  /** Each console chunk as it arrives (the box kernel's messages and the command's output). */
  onConsole?: (chunk: string) => void;
  /** Each line written to the result port, as it arrives (polled). */
  onResultLine?: (line: string) => void;
  /** Progress lines (what the box is doing), default none. */
  onProgress?: (line: string) => void;
  /** The whole run, boot included; the box is killed after it. Default 20 minutes. */
  timeoutMs?: number;
  /**
   * The box is killed when neither its console nor its result port has said anything for this
   * long (a hung box kernel, a wedged QEMU): default none.
   */
  stallMs?: number;
  /** Aborting it kills the box (a test runner ending this process, say). */
  signal?: AbortSignal;
  assets?: BoxAssets;
}

/** How long a box CPU may be reported stuck (soft lockup) before the box counts as wedged. */
const WEDGED_S = 120;

/** The CPU and seconds of the last soft-lockup report in a console chunk (Linux kernel/watchdog.c's "BUG: soft lockup - CPU#%d stuck for %us!"). */
export function wedgedCpu(chunk: string): { cpu: number; seconds: number } | undefined {
  let last: { cpu: number; seconds: number } | undefined;
  for (const m of chunk.matchAll(/BUG: soft lockup - CPU#(\d+) stuck for (\d+)s!/g)) last = { cpu: Number(m[1]), seconds: Number(m[2]) };
  return last;
}

export interface BoxRunResult {
  /** The command's exit status, or null when the box stopped without reporting one. */
  status: number | null;
  /** Why the box stopped without a status: a timeout, QEMU's own failure, a crash inside. */
  failure?: string;
  console: string;
  /** Everything written to the result port before the exit mark. */
  results: string;
  wallMs: number;
}

const RESULT_POLL_MS = 250;

/** Boots the box once, runs `command`, and returns its status and output. */
export async function runInBox(o: BoxRunOptions): Promise<BoxRunResult> {
  const t0 = Date.now();
  const progress = o.onProgress ?? (() => {});
  const assets = o.assets ?? boxAssets();
  const work = mkdtempSync(join(tmpdir(), "typervisor-box-"));
  try {
    progress(`building the box's images in ${work}`);
    const initrd = join(work, "initrd.cpio");
    writeFileSync(initrd, buildInitramfs(assets));
    const disk = buildRootDisk({ assets, projectRoot: PROJECT_ROOT, command: o.command, extraPaths: o.extraPaths, workDir: work });
    const resultsPath = join(work, "results.txt");
    writeFileSync(resultsPath, "");
    const major = qemuMajor(qemuVersionText() ?? "");
    if (major !== undefined && major < BOX_QEMU_MAJOR) {
      progress(`QEMU ${major} is older than ${BOX_QEMU_MAJOR}: its TCG crashes or wedges a nested guest now and then (a stock-Linux test that crashes runs again); Debian 12 has QEMU 10 in bookworm-backports (.ci/run installs it)`);
    }
    progress(`booting the box: QEMU ${major ?? "(version unknown)"} TCG, ${BOX_VCPUS} vCPUs, ${BOX_MEM_MIB} MiB, kvm_amd inside, root disk ${fileMiB(disk)}`);
    const args = [
      "-M", "q35", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", String(BOX_VCPUS), "-m", String(BOX_MEM_MIB),
      "-nodefaults", "-display", "none", "-no-reboot",
      "-serial", "stdio", "-serial", `file:${resultsPath}`,
      "-kernel", assets.kernel, "-initrd", initrd,
      // quiet: the box kernel's own messages would bury the command's output; panic=-1 reboots
      // (and -no-reboot exits) at once on a panic.
      "-append", "console=ttyS0 quiet loglevel=3 panic=-1",
      "-drive", `file=${disk},if=virtio,format=raw,cache=unsafe`,
    ];
    const child = spawn(QEMU, args, { stdio: ["ignore", "pipe", "pipe"] });
    let consoleText = "";
    let stderr = "";
    let lastActivity = Date.now();
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      consoleText += c;
      o.onConsole?.(c);
      // The box kernel's soft-lockup reports are no progress: they are what a wedged box prints
      // (seen here: nested SVM under TCG leaves a CPU stuck in KVM_RUN, reported every ~30 s for
      // as long as the box runs). Past WEDGED_S the box is stopped, as a silent one is.
      const stuck = wedgedCpu(c);
      if (stuck !== undefined && stuck.seconds >= WEDGED_S) {
        kill(`the box's kernel reports CPU#${stuck.cpu} stuck for ${stuck.seconds} s (a soft lockup: the box is wedged) and was stopped`);
      }
      if (stuck === undefined) lastActivity = Date.now();
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    let seen = 0;
    let partial = "";
    const pollResults = (): void => {
      let text: string;
      try {
        text = readFileSync(resultsPath, "latin1");
      } catch {
        return;
      }
      if (text.length <= seen) return;
      lastActivity = Date.now();
      partial += text.slice(seen);
      seen = text.length;
      const lines = partial.split(/\r?\n/);
      partial = lines.pop() ?? "";
      for (const l of lines) o.onResultLine?.(l);
    };
    let killedFor: string | undefined;
    const kill = (why: string): void => {
      killedFor ??= why;
      child.kill("SIGKILL");
    };
    const poll = setInterval(() => {
      pollResults();
      if (o.stallMs !== undefined && Date.now() - lastActivity > o.stallMs) {
        kill(`the box made no progress for ${Math.round(o.stallMs / 1000)} s (nothing on its console or its result port) and was stopped`);
      }
    }, RESULT_POLL_MS);
    const timeoutMs = o.timeoutMs ?? 20 * 60_000;
    const killer = setTimeout(() => kill(`the box did not finish within ${Math.round(timeoutMs / 1000)} s`), timeoutMs);
    const onAbort = (): void => kill("the box was stopped by its caller");
    if (o.signal?.aborted === true) onAbort();
    o.signal?.addEventListener("abort", onAbort);
    const code = await new Promise<number | null>((res) => {
      child.on("error", (e) => {
        stderr += String(e);
        res(null);
      });
      child.on("close", (c) => res(c));
    });
    clearTimeout(killer);
    clearInterval(poll);
    o.signal?.removeEventListener("abort", onAbort);
    pollResults();
    if (partial !== "") o.onResultLine?.(partial);
    const all = readFileSync(resultsPath, "latin1").replace(/\r/g, "");
    const mark = new RegExp(`^${EXIT_MARK} (\\d+)$`, "m").exec(all);
    const result: BoxRunResult = {
      status: mark === null ? null : Number(mark[1]),
      console: consoleText,
      results: mark === null ? all : all.slice(0, mark.index),
      wallMs: Date.now() - t0,
    };
    if (mark === null) {
      result.failure = killedFor ?? `the box stopped without reporting an exit status (QEMU exit ${code}${stderr.trim() ? `: ${stderr.trim().split("\n").pop()}` : ""})`;
    }
    progress(`box finished in ${(result.wallMs / 1000).toFixed(1)} s: ${result.status === null ? result.failure!.split("\n")[0] : `exit status ${result.status}`}`);
    return result;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
