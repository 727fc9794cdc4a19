// bench:start's pure half: the order of the runs, and the table and JSON line made from their
// samples (start.ts takes the samples). No VM and no process here, so it is unit-tested.

import { KIB_PER_MIB, alignTable, fmtRange, fmtRatio, rangeJson, ratio, round, summarize, type Range } from "./stats.js";

export type StartSide = "typervisor" | "qemu";
export const START_SIDES: readonly StartSide[] = ["typervisor", "qemu"];

/** One boot of the probe demo, one process, timed from spawn(). */
export interface StartSample {
  /** Until the first byte on its stdout (the guest's "PROBE start ..." line). */
  firstByteMs: number;
  /** Until the process exited. */
  exitMs: number;
  /** Its maximum resident set size. */
  maxRssKiB: number;
}

/** One kind of boot: which side, how many vCPUs. */
export interface StartCase {
  side: StartSide;
  vcpus: number;
}

/** Every case, the sides alternating (typervisor and QEMU unless told), at each vCPU count. */
export function startCases(vcpuCounts: readonly number[], sides: readonly StartSide[] = START_SIDES): StartCase[] {
  return vcpuCounts.flatMap((vcpus) => sides.map((side) => ({ side, vcpus })));
}

/** The cases in the order of run `i` (from 0): as given on even runs, reversed on odd ones, so neither side always goes first. */
export function runOrder<T>(cases: readonly T[], i: number): T[] {
  return i % 2 === 0 ? [...cases] : [...cases].reverse();
}

export interface StartReportInput {
  runs: number;
  memMiB: number;
  cmdline: string;
  /** Where the RSS figure comes from, in words (printed and in the JSON line). */
  rssSource: string;
  /** Only the RSS figures (the times are taken but neither printed nor put in the JSON line). */
  memoryOnly: boolean;
  /** Samples per case, keyed `${side}:${vcpus}`. */
  samples: ReadonlyMap<string, readonly StartSample[]>;
  vcpuCounts: readonly number[];
  /** typervisor's `--vcpu-threads` (vm.ts ThreadKind). */
  vcpuThreads: "dedicated" | "pooled" | "main";
  /** The sides measured (default both; typervisor alone where there is no QEMU, memory only). */
  sides?: readonly StartSide[];
  /**
   * The reference processes (node-floor.ts), one of each per run. Max RSS, KiB: Node.js with koffi
   * loaded and nothing else (`bare`), the same with one idle worker thread started (`worker`), the
   * same with one function compiled by TurboFan (`jit`). And `bare`'s ms from spawn() to its first
   * byte on stdout (`firstByteMs`: Node.js's own start-up, beside the guests' first console byte).
   */
  floor?: { bare: readonly number[]; worker: readonly number[]; jit: readonly number[]; firstByteMs: readonly number[] };
}

export const caseKey = (c: StartCase): string => `${c.side}:${c.vcpus}`;

type Metric = "firstByteMs" | "exitMs" | "maxRssMiB";
const METRIC_LABEL: Record<Metric, string> = { firstByteMs: "first console byte, ms", exitMs: "exit, ms", maxRssMiB: "max RSS, MiB" };
const METRIC_JSON: Record<Metric, string> = { firstByteMs: "first_byte_ms", exitMs: "exit_ms", maxRssMiB: "max_rss_mib" };
const METRIC_DIGITS: Record<Metric, number> = { firstByteMs: 1, exitMs: 1, maxRssMiB: 1 };

function metricRange(samples: readonly StartSample[], m: Metric): Range {
  return summarize(samples.map((s) => (m === "maxRssMiB" ? s.maxRssKiB / KIB_PER_MIB : s[m])));
}

/** What a further vCPU may cost and still be nothing but the spread of max RSS from run to run, MiB. */
const FURTHER_VCPU_NOISE_MIB = 0.1;

const vcpuLabel = (v: number): string => `${v} vCPU${v === 1 ? "" : "s"}`;

/** The table (several lines) and the JSON line (one object) of a bench:start run. */
export function startReport(input: StartReportInput): { table: string; json: Record<string, unknown> } {
  const metrics: Metric[] = input.memoryOnly ? ["maxRssMiB"] : ["firstByteMs", "exitMs", "maxRssMiB"];
  const get = (side: StartSide, vcpus: number): readonly StartSample[] => {
    const s = input.samples.get(caseKey({ side, vcpus }));
    if (s === undefined || s.length === 0) throw new Error(`bench:start has no samples for ${side} at ${vcpuLabel(vcpus)}`);
    return s;
  };
  const sides = input.sides ?? START_SIDES;
  const paired = sides.length === START_SIDES.length;
  const rows: string[][] = [["", ...sides, ...(paired ? ["typervisor/qemu"] : [])]];
  const json: Record<string, unknown> = {
    bench: "start",
    runs: input.runs,
    mem_mib: input.memMiB,
    cmdline: input.cmdline,
    memory_only: input.memoryOnly,
    vcpu_threads: input.vcpuThreads,
    rss_source: input.rssSource,
  };
  const perSide: Partial<Record<StartSide, Record<string, unknown>>> = Object.fromEntries(sides.map((side) => [side, {}]));
  const ratios: Record<string, Record<string, number | null>> = {};
  for (const v of input.vcpuCounts) {
    const r: Record<string, number | null> = {};
    for (const side of sides) perSide[side]![`vcpus_${v}`] = {};
    for (const m of metrics) {
      const ranges = sides.map((side) => metricRange(get(side, v), m));
      const row = [`${vcpuLabel(v)}: ${METRIC_LABEL[m]}`, ...ranges.map((x) => fmtRange(x, METRIC_DIGITS[m]))];
      sides.forEach((side, i) => ((perSide[side]![`vcpus_${v}`] as Record<string, unknown>)[METRIC_JSON[m]] = rangeJson(ranges[i]!, 2)));
      if (paired) {
        const q = ratio(ranges[0]!.median, ranges[1]!.median);
        row.push(fmtRatio(q));
        r[METRIC_JSON[m]] = round(q, 3);
      }
      rows.push(row);
    }
    ratios[`vcpus_${v}`] = r;
  }
  for (const side of sides) json[side] = perSide[side];
  if (paired) json["ratio_typervisor_vs_qemu"] = ratios;
  // The cost of each further vCPU: the median max RSS at the most vCPUs less that at the fewest,
  // over the vCPUs between them.
  const lo = Math.min(...input.vcpuCounts);
  const hi = Math.max(...input.vcpuCounts);
  if (hi > lo) {
    const per = sides.map((side) => (metricRange(get(side, hi), "maxRssMiB").median - metricRange(get(side, lo), "maxRssMiB").median) / (hi - lo));
    const row = [`each further vCPU (${lo}→${hi}): max RSS, MiB`, ...per.map((x) => x.toFixed(2))];
    const further: Record<string, number | null> = Object.fromEntries(sides.map((side, i) => [side, round(per[i]!, 3)]));
    if (paired) {
      // Under 0.1 MiB a further vCPU's cost is within max RSS's run-to-run spread: a ratio to it says nothing.
      const q = Math.min(per[0]!, per[1]!) < FURTHER_VCPU_NOISE_MIB ? null : ratio(per[0]!, per[1]!);
      row.push(fmtRatio(q));
      further["ratio"] = round(q, 3);
    }
    rows.push(row);
    json["rss_per_further_vcpu_mib"] = further;
  }
  if (input.floor !== undefined) floorRows(input, rows, json, metricRange(get("typervisor", lo), "maxRssMiB").median, paired);
  const what = (input.memoryOnly ? "memory only (--memory-only: no times)" : "times from spawn()") + (paired ? "" : "; no QEMU here: typervisor alone");
  const table =
    `the probe demo (${input.cmdline}, ${input.memMiB} MiB; typervisor with ${input.vcpuThreads} vCPU threads), one process per boot; median of ${input.runs} runs (min–max), ${what}\n` +
    alignTable(rows) +
    `max RSS: ${input.rssSource}\n`;
  return { table, json };
}

/**
 * The rows that say how much of typervisor's figures is Node.js's own: the floor (node with koffi,
 * no VM) and its time to its first byte on stdout, what one idle worker thread adds to it, what the
 * optimizing compiler's first use adds to it, and what is left of the demo at the fewest vCPUs
 * over the floor (Typervisor's code, its V8 heap, the VM). QEMU has no column in them.
 */
function floorRows(input: StartReportInput, rows: string[][], json: Record<string, unknown>, demoMiB: number, paired: boolean): void {
  const { bare, worker, jit, firstByteMs } = input.floor!;
  if (bare.length === 0 || worker.length === 0 || jit.length === 0 || firstByteMs.length === 0) throw new Error("bench:start has no samples of the Node.js floor");
  const floor = summarize(bare.map((k) => k / KIB_PER_MIB));
  const withWorker = summarize(worker.map((k) => k / KIB_PER_MIB));
  const withJit = summarize(jit.map((k) => k / KIB_PER_MIB));
  const perWorker = withWorker.median - floor.median;
  const firstJit = withJit.median - floor.median;
  const own = demoMiB - floor.median;
  const lo = Math.min(...input.vcpuCounts);
  const pad = paired ? ["", ""] : [];
  const floorJson: Record<string, unknown> = { max_rss_mib: rangeJson(floor, 2) };
  if (!input.memoryOnly) {
    const fb = summarize(firstByteMs);
    rows.push([`Node.js + koffi, no VM (the floor): first stdout byte, ms`, fmtRange(fb, 1), ...pad]);
    floorJson["first_byte_ms"] = rangeJson(fb, 2);
  }
  rows.push([`Node.js + koffi, no VM (the floor): max RSS, MiB`, fmtRange(floor, 1), ...pad]);
  rows.push([`one idle worker thread on that floor, MiB`, perWorker.toFixed(2), ...pad]);
  rows.push([`V8's optimizing compiler used once on that floor, MiB`, firstJit.toFixed(2), ...pad]);
  rows.push([`typervisor at ${vcpuLabel(lo)} over the floor, MiB`, own.toFixed(2), ...pad]);
  json["node_floor"] = {
    ...floorJson,
    worker_thread_mib: round(perWorker, 3),
    first_optimizing_compile_mib: round(firstJit, 3),
    [`typervisor_vcpus_${lo}_over_floor_mib`]: round(own, 3),
  };
}
