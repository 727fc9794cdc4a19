// `typervisor compare`: the Xen-vs-Nitro comparison (docs/xen-vs-nitro.md). src/compare/run.ts owns
// the workload, the image and the numbers; this file is the VMM's side: `bootProbe` boots the probe
// guest through `Vm.create` with the bench image on the I/O path asked for, and reports what the
// VMM knows (serial output, exits, host CPU time, copies measured by the device).

import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CompareCliOptions } from "./args.js";
import { EXIT_GUEST_FAILURE, EXIT_HOST, EXIT_OK, EXIT_USAGE } from "./exit-codes.js";
import { Vm, type VmExit } from "../vmm/vm.js";
import type { KernelSource } from "../vmm/builder.js";
import type { CounterName } from "../vmm/vcpu-control.js";
import { probePath } from "../probe/path.js";
import { CompareImageError, runCompare, type BootProbe, type BootResult, type CompareReport, type IoPath } from "../compare/run.js";
import { terminalTable, writeReport } from "../compare/report.js";
import { runHostedProbe } from "../probe/hosted.js";
import { boxRefusal } from "../bench/guard.js";

/** The id of the bench drive in every compare VM. */
export const BENCH_DRIVE_ID = "bench";
/**
 * Guest RAM of a compare VM: the probe's bench buffers end at 32 MiB (guest/src/ata.h BENCH_BASE +
 * BENCH_SIZE = 0x2000000); 256 MiB is DESIGN.md §6's measured VM size and QEMU's run of the probe.
 */
export const COMPARE_MEM_MIB = 256;
/** One boot may take this long before it is stopped and counted as failed (the emulated path's 64 random ops at ~2k exits each take seconds under PVM; 10 minutes is a wide margin). */
export const BOOT_TIMEOUT_MS = 10 * 60 * 1000;

/** Guest exits among the vCPU counters (vmm/vcpu-control.ts); INTERRUPTED counts kicks, and an unhandled access is also counted as an IO or MMIO exit. */
const EXIT_COUNTERS: readonly CounterName[] = ["IO_IN", "IO_OUT", "MMIO_READ", "MMIO_WRITE", "OTHER"];

export interface CompareIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
}

export interface CompareDeps {
  /** Default /dev/kvm. */
  kvmPath?: string;
  /** Default: vmBootProbe over the built probe guest. Tests inject one. */
  bootProbe?: BootProbe;
  /** Where run.ts puts the image (default /dev/shm). */
  imageDir?: string;
  /** The environment the box check reads (default process.env; TYPERVISOR_BOX=1 inside the box). */
  env?: NodeJS.ProcessEnv;
}


/** A BootProbe that boots `kernel` in a Typervisor VM with the image as drive "bench" on the I/O path asked for. */
export function vmBootProbe(opts: { kernel: KernelSource; kvmPath?: string; memMiB?: number; timeoutMs?: number }): BootProbe {
  let n = 0;
  return async (path: IoPath, cmdline: string, image: string): Promise<BootResult> => {
    const dir = mkdtempSync(join(tmpdir(), "typervisor-compare-console-"));
    const consolePath = join(dir, `console-${path}-${++n}.txt`);
    const consoleFd = openSync(consolePath, "w");
    let vm: Vm;
    try {
      vm = Vm.create({
        kernel: opts.kernel,
        cmdline,
        vcpus: 1,
        memMiB: opts.memMiB ?? COMPARE_MEM_MIB,
        consoleFd,
        drives: [{ id: BENCH_DRIVE_ID, path: image, ioPath: path }],
        ...(opts.kvmPath !== undefined ? { kvmPath: opts.kvmPath } : {}),
      });
    } catch (e) {
      closeSync(consoleFd);
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const timeoutMs = opts.timeoutMs ?? BOOT_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    try {
      // The VMM process's CPU time: vCPU threads, card threads and the main loop; the card's own
      // thread (its metrics' cpuMicros) is then taken out and reported apart. A Dom0 back end is a
      // child process, counted apart (its own process.cpuUsage, reported through its metrics).
      const cpu0 = process.cpuUsage();
      try {
        await vm.start();
      } catch (e) {
        vm.stop("start failed");
        await vm.wait();
        throw new Error(`cannot start the VM: ${(e as Error).message}`);
      }
      timer = setTimeout(() => vm.stop("timeout"), timeoutMs);
      const exit = await vm.wait();
      const cpu = process.cpuUsage(cpu0);
      failUnlessFinished(exit, timeoutMs);
      const m = vm.driveMetrics()[BENCH_DRIVE_ID];
      const exits = vm.exitCounters().reduce((sum, c) => sum + EXIT_COUNTERS.reduce((s, k) => s + c[k], 0), 0);
      // Copies each payload byte took, where the device counts them (ATA and Dom0 do; the card does not).
      const copied = m?.ata?.copiedBytes ?? m?.dom0?.copiedBytes;
      const cardMicros = m?.ioPath === "card" ? m.cpuMicros : 0;
      const result: BootResult = {
        lines: readFileSync(consolePath, "utf8"),
        hostCpuSeconds: {
          vmm: (cpu.user + cpu.system - cardMicros) / 1e6,
          ...(m?.ioPath === "card" ? { card: cardMicros / 1e6 } : {}),
          ...(m?.dom0 !== undefined ? { dom0: m.dom0.cpuSeconds } : {}),
        },
        exits,
      };
      if (copied !== undefined && m !== undefined && m.bytes > 0) result.copiesPerRequest = copied / m.bytes;
      return result;
    } finally {
      clearTimeout(timer);
      vm.close();
      closeSync(consoleFd);
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

/** A probe run that crashed, failed or ran out of time is an error of that run; a guest that reported failure still has its lines read. */
function failUnlessFinished(exit: VmExit, timeoutMs: number): void {
  if (exit.kind === "crash") throw new Error(`the probe crashed: ${exit.reason} on vCPU ${exit.vcpu}`);
  if (exit.kind === "error") throw new Error(`vCPU ${exit.vcpu} failed: ${exit.message}`);
  if (exit.kind === "stopped" && exit.by === "timeout") throw new Error(`the probe did not finish within ${timeoutMs / 1000} s`);
}

/**
 * A BootProbe without a VM: the probe's drivers run hosted (src/probe/hosted.ts) against the same
 * back end each path has in a VM — a card, the ATA model on this thread, a Dom0 process. Exits are
 * the accesses that would trap in a VM; CPU time is this process's while the test ran (the drivers,
 * the transport, the ATA model), less the card thread's, with Dom0's apart; start-up is in none.
 */
export function hostedBootProbe(): BootProbe {
  return async (path: IoPath, cmdline: string, image: string): Promise<BootResult> => {
    const run = /(?:^|\s)probe\.run=(\S+)/.exec(cmdline)?.[1];
    // The hosted library has no boot test: the baseline of a hosted run is no access at all.
    if (run === undefined || run === "boot") return { lines: "", hostCpuSeconds: { vmm: 0 }, exits: 0 };
    const options = cmdline.replace(/(?:^|\s)probe\.run=\S+/, "").trim();
    const rig = path === "card" ? { devices: [{ kind: "blk" as const, config: { path: image, id: BENCH_DRIVE_ID } }] } : path === "emulated" ? { ata: image } : { dom0: image };
    const r = await runHostedProbe(run, rig, options);
    try {
      const card = r.cards[0]?.metrics();
      const cardMicros = card?.cpuMicros ?? 0;
      const d = r.dom0?.metrics();
      const copied = r.ata?.copiedBytes ?? d?.copiedBytes;
      const bytes = r.ata !== undefined ? (r.ata.sectorsRead + r.ata.sectorsWritten) * 512 : d?.bytes;
      const result: BootResult = {
        lines: r.lines,
        hostCpuSeconds: {
          vmm: (r.cpuMicros - cardMicros) / 1e6,
          ...(card !== undefined ? { card: cardMicros / 1e6 } : {}),
          ...(r.dom0 !== undefined ? { dom0: r.dom0.cpuSeconds() } : {}),
        },
        exits: r.exits,
      };
      if (copied !== undefined && bytes !== undefined && bytes > 0) result.copiesPerRequest = copied / bytes;
      return result;
    } finally {
      await r.close();
    }
  };
}

/** `typervisor compare`: exit 0 when every path ran clean, 1 when some run failed (listed), 2 inside the box (not --hosted), 4 without KVM. */
export async function compareCommand(opts: CompareCliOptions, io: CompareIo, deps: CompareDeps = {}): Promise<number> {
  const kvmPath = deps.kvmPath ?? "/dev/kvm";
  // Inside the box /dev/kvm works (TCG emulates AMD-V) but every figure would be the emulator's.
  const refusal = opts.hosted ? null : boxRefusal("typervisor compare", "block I/O through three I/O paths on KVM", "a host with KVM (or use --hosted)", deps.env ?? process.env);
  if (refusal !== null) {
    io.stderr.write(`${refusal}\n`);
    return EXIT_USAGE;
  }
  // --hosted runs no VM, so it never needs /dev/kvm (whichever probe runs it).
  if (opts.hosted) deps = { ...deps, bootProbe: deps.bootProbe ?? hostedBootProbe() };
  else if (!existsSync(kvmPath)) {
    io.stderr.write(`typervisor: compare needs ${kvmPath}, and this host has none: nothing was measured\n`);
    return EXIT_HOST;
  }
  let bootProbe = deps.bootProbe;
  if (bootProbe === undefined) {
    let kernel: KernelSource;
    try {
      const p = probePath();
      kernel = { name: p, bytes: new Uint8Array(readFileSync(p)) };
    } catch (e) {
      io.stderr.write(`typervisor: compare: ${(e as Error).message}\n`);
      return EXIT_HOST;
    }
    bootProbe = vmBootProbe({ kernel, ...(deps.kvmPath !== undefined ? { kvmPath: deps.kvmPath } : {}) });
  }
  let report: CompareReport;
  try {
    report = await runCompare({
      bootProbe,
      sizeBytes: opts.sizeBytes,
      runs: opts.runs,
      paths: opts.paths,
      ...(deps.imageDir !== undefined ? { imageDir: deps.imageDir } : {}),
      ...(opts.hosted ? { hosted: true } : {}),
      log: (line) => io.stderr.write(`compare: ${line}\n`),
    });
  } catch (e) {
    if (!(e instanceof CompareImageError)) throw e;
    io.stderr.write(`typervisor: compare: ${e.message}\n`);
    return EXIT_HOST;
  }
  io.stdout.write(`${terminalTable(report)}\n`);
  io.stderr.write(`compare: writing ${opts.outDir}/report.json and report.html\n`);
  const files = writeReport(report, opts.outDir);
  io.stdout.write(`report: ${files.json} ${files.html}\n`);
  const failed = report.paths.filter((p) => p.errors.length > 0).map((p) => p.path);
  if (failed.length > 0) {
    io.stderr.write(`typervisor: compare: runs failed on ${failed.join(", ")} (listed under the table and in report.json)\n`);
    return EXIT_GUEST_FAILURE;
  }
  return EXIT_OK;
}
