// npm run bench:density — how many microVMs one Node process starts per second per core, and the
// memory each one adds: BENCH_VMS probe VMs (probe.run=hold: the guest reports, then spins until
// the host pauses it) created and started through the SDK (MicroVM.create, the probe kernel, as
// `typervisor run` does), a few starts in flight at once; each VM is paused once its guest has
// reported, so that all N are up together and idle; then all are stopped. Prints progress on
// stderr, a table, then one JSON object as the last line on stdout. Refuses to run inside the box
// unless --memory-only (guard.ts); --help says what it measures.

import { availableParallelism } from "node:os";
import { existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { MicroVM, PROBE_KERNEL } from "../sdk/microvm.js";
import { THREAD_KINDS, threadPoolSize, type ThreadKind } from "../vmm/vm.js";
import { describeExit } from "../vmm/exit-report.js";
import { EXIT_CANNOT_MEASURE, benchEntryOptions, envInt, inBox } from "./guard.js";
import { parseProcStatus, type ProcMemory } from "./stats.js";
import { densityReport } from "./density-report.js";

const HELP = `npm run bench:density — microVM starts per second per core, and memory per microVM, in one process

Measures how fast one Node process starts microVMs, and what each costs in memory, through the
SDK (MicroVM.create with the probe kernel, as \`typervisor run\` builds its VM): BENCH_VMS probe
VMs (1 vCPU, 128 MiB, probe.run=hold: the guest reports "PROBE hold", then spins without exits)
created and started, BENCH_DENSITY_IN_FLIGHT of them at a time; each is paused once its guest has
reported, so that all are up at once and idle. Then all are stopped. Figures: starts per second
per core (cores = os.availableParallelism()) from the first create() until all are booted and
paused; each VM's create() to "PROBE hold"; process CPU per start; memory per VM = (RSS with all
up − RSS before) / VMs, RSS from /proc/self/status, "before" taken after one warm-up VM has
started and stopped; the process's max RSS (VmHWM). The goals: ≥ 10 starts per second per core
(Firecracker's design states 5) and ≤ 8 MiB per VM; it says whether each is met.

Needs KVM on a real host: /dev/kvm and the built probe guest (npm run build).
Inside the box (QEMU TCG, TYPERVISOR_BOX=1) it refuses: times there mean nothing. --memory-only
(or BENCH_MEMORY_ONLY=1) prints the memory figures alone, and runs in the box as well: resident
memory is real there.

Each run is made twice, one after the other, each in a process of its own: with a worker thread per vCPU
("dedicated", the default of the SDK) and with pooled vCPUs (KVM_RUN on libuv's thread pool, the
exits on the event loop: no V8 isolate per VM; each running one holds a pool thread, so
UV_THREADPOOL_SIZE must exceed BENCH_VMS + 1, which the npm script sees to).

Environment: BENCH_VMS (default 50), BENCH_DENSITY_IN_FLIGHT (starts at once, default the cores),
BENCH_VCPU_THREADS (default "dedicated,pooled": which runs, in order).
Output: progress on stderr; a table per run, then one JSON object as the last line ({"runs": [...]}), on stdout.
Exit status: 0 measured; 1 a run failed; 2 cannot measure here (no /dev/kvm, the box without
--memory-only, a bad setting).
`;

const NAME = "bench:density";
const { progress, memoryOnly } = benchEntryOptions({ name: NAME, what: "microVM start rates and memory per microVM", help: HELP, memoryOnly: true });

const CMDLINE = "probe.run=hold";
const MEM_MIB = 128;
/** A VM that has not reported within this has hung (the box translates every instruction: more there). */
const BOOT_TIMEOUT_MS = inBox() ? 600_000 : 60_000;
const HOLD_LINE = "PROBE hold\n";

function cannot(why: string): number {
  process.stderr.write(`${NAME}: ${why}\n`);
  return EXIT_CANNOT_MEASURE;
}

const procMemory = (): ProcMemory => parseProcStatus(readFileSync("/proc/self/status", "utf8"));

/**
 * Creates and starts one VM, waits for its guest's "PROBE hold" line, and pauses it. Returns the
 * VM (paused) and the ms from create() to the line. On failure the VM is stopped.
 */
async function bootOne(vcpuThreads: ThreadKind): Promise<{ vm: MicroVM; bootMs: number }> {
  const t0 = process.hrtime.bigint();
  const vm = MicroVM.create({ kernel: PROBE_KERNEL, cmdline: CMDLINE, memMiB: MEM_MIB, vcpus: 1, vcpuThreads });
  try {
    let seen = "";
    let reported = false;
    let timer: NodeJS.Timeout | undefined;
    const held = new Promise<bigint>((resolve, reject) => {
      // Read to the end either way (the stream must drain); only the first few KiB are looked at.
      vm.console.on("data", (b: Buffer) => {
        if (reported || seen.length > 4096) return;
        seen += b.toString("latin1");
        if (seen.includes(HOLD_LINE)) {
          reported = true;
          resolve(process.hrtime.bigint());
        }
      });
      void vm.exited.then((exit) => reject(new Error(`a VM ended before its guest reported hold: ${describeExit(exit)}; console: ${JSON.stringify(seen.slice(0, 300))}`)));
      timer = setTimeout(() => reject(new Error(`a VM's guest did not report hold within ${BOOT_TIMEOUT_MS / 1000} s; console: ${JSON.stringify(seen.slice(0, 300))}`)), BOOT_TIMEOUT_MS);
    });
    await vm.start();
    const t1 = await held.finally(() => clearTimeout(timer));
    await vm.pause();
    return { vm, bootMs: Number(t1 - t0) / 1e6 };
  } catch (e) {
    await vm.stop("bench failed");
    throw e;
  }
}

async function main(): Promise<number> {
  const cores = availableParallelism();
  const vms = envInt("BENCH_VMS", 50, 1, 10_000);
  if (typeof vms === "string") return cannot(vms);
  const inFlight = envInt("BENCH_DENSITY_IN_FLIGHT", cores, 1, 10_000);
  if (typeof inFlight === "string") return cannot(inFlight);
  const modesSetting = process.env.BENCH_VCPU_THREADS ?? "dedicated,pooled";
  const modes = modesSetting.split(",");
  if (modes.some((m) => !THREAD_KINDS.includes(m as ThreadKind))) {
    return cannot(`BENCH_VCPU_THREADS must be a comma-separated list of ${THREAD_KINDS.join(", ")}, got "${modesSetting}"`);
  }
  // Each pooled vCPU holds a thread of libuv's pool while it runs (the warm-up VM has stopped first).
  if (modes.includes("pooled") && threadPoolSize() < vms + 2) {
    return cannot(`${vms} pooled vCPUs need UV_THREADPOOL_SIZE of at least ${vms + 2} (it is ${threadPoolSize()}; npm run bench:density sets it from BENCH_VMS)`);
  }
  if (!existsSync("/dev/kvm")) return cannot("needs /dev/kvm, and this host has none: nothing was measured");
  const runs: Array<Record<string, unknown>> = [];
  if (modes.length === 1) runs.push(await runMode(modes[0] as ThreadKind, vms, inFlight, cores));
  else {
    // Each run in a process of its own: memory one run freed (worker heaps, malloc arenas) would
    // otherwise be reused by the next and hide what that one costs.
    for (const mode of modes) {
      const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
        env: { ...process.env, BENCH_VCPU_THREADS: mode },
        stdio: ["ignore", "pipe", "inherit"],
        encoding: "utf8",
      });
      if (r.status !== 0) return r.status ?? 1;
      const lines = r.stdout.trimEnd().split("\n");
      const last = JSON.parse(lines.pop()!) as { runs: Array<Record<string, unknown>> };
      process.stdout.write(lines.join("\n") + "\n");
      runs.push(...last.runs);
    }
  }
  process.stdout.write(JSON.stringify({ bench: "density", runs, host_kvm: existsSync("/sys/module/kvm_pvm") ? "pvm" : "kvm", box: inBox() }) + "\n");
  return 0;
}

/** One run of `vms` VMs whose vCPUs are `mode`: prints its table, returns its JSON object. */
async function runMode(mode: ThreadKind, vms: number, inFlight: number, cores: number): Promise<Record<string, unknown>> {
  progress(`${mode} vCPU threads — warm-up: one VM started and stopped before the memory baseline`);
  const warm = await bootOne(mode);
  await warm.vm.stop("warm-up");
  const before = procMemory();

  progress(`${vms} VMs (${CMDLINE}, ${MEM_MIB} MiB, ${mode} vCPU threads), ${inFlight} starts in flight, ${cores} cores${memoryOnly ? ", memory only" : ""}`);
  const up: MicroVM[] = [];
  const bootMs: number[] = [];
  let next = 0;
  let failure: unknown;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const worker = async () => {
    while (next < vms && failure === undefined) {
      next++;
      try {
        const b = await bootOne(mode);
        up.push(b.vm);
        bootMs.push(b.bootMs);
        if (up.length % 10 === 0 || up.length === vms) progress(`${up.length}/${vms} up`);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, vms) }, worker));
  const t1 = process.hrtime.bigint();
  const cpu = process.cpuUsage(cpu0);
  try {
    if (failure !== undefined) throw failure;
    const notPaused = up.filter((vm) => vm.state !== "paused");
    if (notPaused.length > 0) throw new Error(`${notPaused.length} of the ${vms} VMs are not up and paused (${notPaused.map((v) => v.state).join(", ")})`);
    const all = procMemory();
    progress(`all ${vms} up; stopping them`);
    const s0 = process.hrtime.bigint();
    const ends = await Promise.all(up.splice(0).map((vm) => vm.stop("bench done")));
    const stopSeconds = Number(process.hrtime.bigint() - s0) / 1e9;
    const odd = ends.find((e) => e.kind !== "stopped");
    if (odd !== undefined) throw new Error(`a VM ended otherwise than by the stop: ${describeExit(odd)}`);
    // The kernel brings its high-water mark up to date lazily (getrusage's ru_maxrss and VmHWM
    // can trail an RSS seen earlier by a few pages): the largest of what was seen.
    const maxRssKiB = Math.max(all.vmRss, all.vmHwm, procMemory().vmHwm);
    const { table, json } = densityReport({
      vms, cores, inFlight, memMiB: MEM_MIB, cmdline: CMDLINE, vcpuThreads: mode, memoryOnly,
      startSeconds: Number(t1 - t0) / 1e9, cpuSeconds: (cpu.user + cpu.system) / 1e6, bootMs,
      before, all, maxRssKiB, stopSeconds,
    });
    process.stdout.write(table);
    return json;
  } finally {
    await Promise.all(up.map((vm) => vm.stop("bench failed")));
  }
}

process.exitCode = await main().catch((e: unknown) => {
  process.stderr.write(`${NAME}: ${(e as Error).message}\n`);
  return 1;
});
