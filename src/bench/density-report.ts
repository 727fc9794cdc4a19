// bench:density's pure half: from what density.ts measured, the figures, the goals and whether
// each is met, as a table and one JSON object. No VM here, so it is unit-tested.

import { KIB_PER_MIB, alignTable, rangeJson, round, summarize, type ProcMemory } from "./stats.js";

/**
 * The goals (issue 12): at least 10 microVM starts per second per host core, and at most 8 MiB of
 * VMM memory per microVM. Firecracker's design document (docs/design.md, "Features") states a
 * steady mutation rate of 5 microVMs per host core per second, for 1 vCPU and 128 MiB of RAM.
 */
export const DENSITY_GOALS = { startsPerSecondPerCore: 10, mibPerVm: 8 } as const;
export const FIRECRACKER_STARTS_PER_SECOND_PER_CORE = 5;

export interface DensityInput {
  vms: number;
  /** os.availableParallelism(): what the start rate is divided by. */
  cores: number;
  /** Starts in flight at once. */
  inFlight: number;
  memMiB: number;
  cmdline: string;
  /** Where the VMs' exits are handled (vm.ts ThreadKind). */
  vcpuThreads: "dedicated" | "pooled";
  memoryOnly: boolean;
  /** Wall seconds from the first create() until all VMs had booted and were paused. */
  startSeconds: number;
  /** CPU seconds of the whole process (every thread, guest time included) over the same span. */
  cpuSeconds: number;
  /** Per VM, ms from its create() to its "PROBE hold" line. */
  bootMs: readonly number[];
  /** /proc/self/status before the N (after the warm-up VM) and with all N up. */
  before: ProcMemory;
  all: ProcMemory;
  /** The process's maximum RSS (VmHWM of /proc/self/status, or the RSS with all up where that trails it), KiB. */
  maxRssKiB: number;
  /** Wall seconds to stop all N. */
  stopSeconds: number;
}

/** The figures of a density run, and whether each goal is met. */
export function densityFigures(m: DensityInput) {
  const perVm = (a: number, b: number) => (a - b) / KIB_PER_MIB / m.vms;
  const startsPerSecond = m.vms / m.startSeconds;
  const startsPerSecondPerCore = startsPerSecond / m.cores;
  const mibPerVm = perVm(m.all.vmRss, m.before.vmRss);
  return {
    startsPerSecond,
    startsPerSecondPerCore,
    cpuMsPerStart: (m.cpuSeconds * 1000) / m.vms,
    boot: summarize(m.bootMs),
    mibPerVm,
    anonMibPerVm: perVm(m.all.rssAnon, m.before.rssAnon),
    fileMibPerVm: perVm(m.all.rssFile, m.before.rssFile),
    shmemMibPerVm: perVm(m.all.rssShmem, m.before.rssShmem),
    startGoalMet: startsPerSecondPerCore >= DENSITY_GOALS.startsPerSecondPerCore,
    memoryGoalMet: mibPerVm <= DENSITY_GOALS.mibPerVm,
  };
}

const met = (ok: boolean) => (ok ? "met" : "NOT met");
const mib = (kib: number) => (kib / KIB_PER_MIB).toFixed(1);

/** The table (several lines) and the JSON line (one object) of a bench:density run. */
export function densityReport(m: DensityInput): { table: string; json: Record<string, unknown> } {
  const f = densityFigures(m);
  const rows: string[][] = [];
  if (!m.memoryOnly) {
    rows.push(
      [`starts (all ${m.vms} booted and paused)`, `${m.startSeconds.toFixed(2)} s`, ""],
      ["starts per second", f.startsPerSecond.toFixed(1), ""],
      [
        `starts per second per core (${m.cores} cores)`,
        f.startsPerSecondPerCore.toFixed(2),
        `goal ≥ ${DENSITY_GOALS.startsPerSecondPerCore} (Firecracker's design: ${FIRECRACKER_STARTS_PER_SECOND_PER_CORE}): ${met(f.startGoalMet)}`,
      ],
      ['boot, create() to "PROBE hold", ms', `${f.boot.median.toFixed(0)} (${f.boot.min.toFixed(0)}–${f.boot.max.toFixed(0)})`, "median (min–max)"],
      ["process CPU per start, ms", f.cpuMsPerStart.toFixed(1), "all threads, guest time included"],
    );
  }
  rows.push(
    ["RSS before (after one warm-up VM), MiB", mib(m.before.vmRss), ""],
    [`RSS with all ${m.vms} up, MiB`, mib(m.all.vmRss), ""],
    ["memory per VM, MiB", f.mibPerVm.toFixed(2), `goal ≤ ${DENSITY_GOALS.mibPerVm}: ${met(f.memoryGoalMet)}`],
    ["  of which anon / file / shmem (guest RAM)", `${f.anonMibPerVm.toFixed(2)} / ${f.fileMibPerVm.toFixed(2)} / ${f.shmemMibPerVm.toFixed(2)}`, ""],
    ["max RSS of the process (VmHWM), MiB", mib(m.maxRssKiB), ""],
  );
  if (!m.memoryOnly) rows.push([`stop all ${m.vms}`, `${m.stopSeconds.toFixed(2)} s`, ""]);
  const table =
    `${m.vms} probe VMs (${m.cmdline}, ${m.memMiB} MiB, 1 vCPU each, ${m.vcpuThreads} vCPU threads) from one Node process through the SDK, ` +
    `${m.inFlight} start${m.inFlight === 1 ? "" : "s"} in flight${m.memoryOnly ? "; memory only (--memory-only)" : ""}\n` +
    alignTable(rows) +
    "memory per VM = (RSS with all up − RSS before) / VMs, from /proc/self/status; each VM is paused once booted\n";
  const json: Record<string, unknown> = {
    bench: "density",
    vms: m.vms,
    cores: m.cores,
    in_flight: m.inFlight,
    mem_mib: m.memMiB,
    cmdline: m.cmdline,
    vcpu_threads: m.vcpuThreads,
    memory_only: m.memoryOnly,
  };
  if (!m.memoryOnly) {
    Object.assign(json, {
      start_seconds: round(m.startSeconds, 3),
      starts_per_second: round(f.startsPerSecond, 2),
      starts_per_second_per_core: round(f.startsPerSecondPerCore, 3),
      boot_ms: rangeJson(f.boot, 1),
      cpu_ms_per_start: round(f.cpuMsPerStart, 2),
      stop_seconds: round(m.stopSeconds, 3),
      goal_starts_per_second_per_core: DENSITY_GOALS.startsPerSecondPerCore,
      start_goal_met: f.startGoalMet,
    });
  }
  Object.assign(json, {
    rss_before_mib: round(m.before.vmRss / KIB_PER_MIB, 2),
    rss_all_mib: round(m.all.vmRss / KIB_PER_MIB, 2),
    mib_per_vm: round(f.mibPerVm, 3),
    mib_per_vm_anon: round(f.anonMibPerVm, 3),
    mib_per_vm_file: round(f.fileMibPerVm, 3),
    mib_per_vm_shmem: round(f.shmemMibPerVm, 3),
    max_rss_mib: round(m.maxRssKiB / KIB_PER_MIB, 2),
    goal_mib_per_vm: DENSITY_GOALS.mibPerVm,
    memory_goal_met: f.memoryGoalMet,
  });
  return { table, json };
}
