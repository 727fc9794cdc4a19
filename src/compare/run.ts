// `typervisor compare`: the same block workload through three I/O paths, measured in one run
// (DESIGN.md §4: ratios measured together, not absolute figures from elsewhere).
//
//   emulated  ATA PIO disk on the vCPU thread (src/devices/ata)      probe test ata-bench
//   dom0      Xen split driver, back end in a Dom0 process (src/dom0) probe test xenblk-bench
//   card      virtio-blk card (src/cards)                             probe test blk-bench
//
// The caller (the CLI) injects bootProbe: boot the probe guest with `cmdline` and the drive
// `image` attached on `path`, and return the serial lines, the host CPU seconds of each process
// involved, and the VM's exit count. This module owns the workload, the image, and the numbers.

import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseProbeLines, type ProbeLine } from "../probe/probe-lines.js";
import { elapsed } from "../bench/guard.js";
import { PATH_ANATOMY, countPathLines } from "./loc.js";

export type IoPath = "emulated" | "dom0" | "card";
export const IO_PATHS: readonly IoPath[] = ["emulated", "dom0", "card"];

export interface HostCpuSeconds {
  vmm: number;
  card?: number;
  dom0?: number;
}

export interface BootResult {
  /** Serial output (raw text) or parsed PROBE lines. */
  lines: string | ProbeLine[];
  hostCpuSeconds: HostCpuSeconds;
  /** Guest exits of the whole run (every vCPU, every kind). */
  exits: number;
  /** Guest TSC frequency, when the VMM knows it (KVM_GET_TSC_KHZ). */
  tscHz?: number;
  /** Payload copies per request when the VMM measured them (device metrics); else the path's constant. */
  copiesPerRequest?: number;
}

export type BootProbe = (path: IoPath, cmdline: string, image: string) => Promise<BootResult>;

export interface CompareOptions {
  bootProbe: BootProbe;
  /** Image size in bytes (default 256 MiB). */
  sizeBytes?: number;
  /** Runs per path (default 3); the report gives the median and min-max. */
  runs?: number;
  paths?: readonly IoPath[];
  /** Where the image goes; default /dev/shm (tmpfs) when present. */
  imageDir?: string;
  /** 4 KiB random ops per bench run, per path (the emulated disk costs ~2k exits per op). */
  randOps?: Partial<Record<IoPath, number>>;
  /** Sequential ops per bench run, per path. */
  seqOps?: Partial<Record<IoPath, number>>;
  /** Host TSC rate when bootProbe gives none (default: read from the host, see hostTscHz). */
  tscHz?: number;
  /** Package root for counting source lines (default: this package). */
  root?: string;
  /** bootProbe runs the probe's drivers hosted (src/probe/hosted.ts), not in a VM: the report says so. */
  hosted?: boolean;
  /** Progress, one line at a time (the CLI writes it on stderr): which path, baseline or run i of n, how long each took. */
  log?: (line: string) => void;
}

/** The probe test each path runs. */
export const BENCH_TEST: Record<IoPath, string> = { emulated: "ata-bench", dom0: "xenblk-bench", card: "blk-bench" };
const DEFAULT_RAND: Record<IoPath, number> = { emulated: 64, dom0: 65536, card: 65536 };
const DEFAULT_SEQ: Record<IoPath, number> = { emulated: 2, dom0: 16, card: 16 };
/**
 * Untimed 4 KiB reads, then as many writes, each bench does first (probe.blk.warmup): the runs
 * measure the steady state. Reads alone left the first timed write run to pay for each back end's
 * first writes (its JIT compiling the write path, the file's pages first dirtied): measured here,
 * QD1 write IOPS rose by 1.3× or more on both the Dom0 path and the card once writes were warmed too.
 */
export const BENCH_WARMUP: Record<IoPath, number> = { emulated: 8, dom0: 20000, card: 20000 };

/** Requests a bench's warm-up makes for `probe.blk.warmup=n`: n reads, then n writes (guest/src/virtio.c, xenblk.c, ata.c). */
export function warmupRequests(n: number): number {
  return 2 * n;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export interface ModeFigures {
  mode: string;
  qd: number;
  bs: number;
  iops: Spread;
  mbps: Spread;
  /** Per-op latency in µs: from the guest's per-op TSC samples (p50/p99), or the QD1 mean when the test has none. */
  p50us: Spread | null;
  p99us: Spread | null;
  latencySource: "samples" | "mean" | "none";
}

export interface PathFigures {
  path: IoPath;
  test: string;
  modes: ModeFigures[];
  exitsPerIo: Spread;
  cpuSecondsPerGiB: { vmm: Spread; card: Spread | null; dom0: Spread | null; total: Spread };
  copiesPerRequest: number;
  copiesHow: string;
  privileged: {
    model: string;
    processes: Array<{ process: string; privileges: string; files: Array<{ file: string; lines: number | null }>; lines: number }>;
    totalLines: number;
    notes: string;
  };
  errors: string[];
}

export interface CompareReport {
  /** Set for reports made from recorded or invented results, never for a measured one. */
  synthetic?: string;
  /**
   * Set when the probe's drivers ran hosted against the back ends (no VM, no KVM): "exits" are the
   * accesses that would trap in a VM, each costing a function call here instead.
   */
  hosted?: boolean;
  createdAt: string;
  host: { tscHz: number; tscSource: string; imageDir: string; sizeBytes: number; runs: number };
  paths: PathFigures[];
}

// ---------------------------------------------------------------------------------------------

export function spread(values: number[]): Spread {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]!, n: v.length };
}

/** The host's TSC rate: tsc_freq_khz where the kernel exports it, else cpuinfo's "cpu MHz" (constant TSC assumed). */
export function hostTscHz(): { hz: number; source: string } {
  const sysfs = "/sys/devices/system/cpu/cpu0/tsc_freq_khz";
  if (existsSync(sysfs)) {
    const khz = Number(readFileSync(sysfs, "utf8").trim());
    if (khz > 0) return { hz: khz * 1000, source: sysfs };
  }
  try {
    const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) return { hz: Number(m[1]) * 1e6, source: "/proc/cpuinfo cpu MHz (assumes a constant TSC at that rate)" };
  } catch {
    // no /proc
  }
  return { hz: NaN, source: "unknown" };
}

/**
 * Writes `bytes` of pseudo-random data to `fd` from its start, every page allocated: a path that
 * reads never reads tmpfs's zero page for a hole, a path that writes never allocates a page that a
 * later path then finds allocated (a sparse image favoured whichever path ran second).
 */
function fillImage(fd: number, bytes: number): void {
  const chunk = randomBytes(Math.min(bytes, 1 << 20));
  for (let at = 0; at < bytes; at += chunk.length) {
    if (chunk.length >= 4) chunk.writeUInt32LE(at / chunk.length, 0); // no two chunks alike
    writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - at), at);
  }
}

/** The comparison's image could not be made (no room on the tmpfs, no such directory): nothing was measured. */
export class CompareImageError extends Error {
  override name = "CompareImageError";
}

/**
 * An image of `size` bytes on tmpfs (or `dir`), full of data (fillImage). `sizeKnob` names what sets
 * the size for the one who called (compare's `--size`, bench:blk's `BENCH_BLK_MIB`), for the error.
 */
export function makeImage(dir: string | undefined, size: number, sizeKnob = "--size"): { path: string; dir: string; remove(): void } {
  const base = dir ?? (existsSync("/dev/shm") ? "/dev/shm" : tmpdir());
  let d: string | undefined;
  try {
    d = mkdtempSync(join(base, "typervisor-compare-"));
    const fd = openSync(join(d, "disk.img"), "w");
    try {
      fillImage(fd, size);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (d !== undefined) rmSync(d, { recursive: true, force: true });
    const err = e as NodeJS.ErrnoException;
    const why = err.code === "ENOSPC" ? "no room left there" : err.code === "ENOENT" ? "no such directory" : err.message;
    throw new CompareImageError(`cannot write the ${size / 2 ** 20} MiB image in ${base}: ${why} (a smaller ${sizeKnob}, or more room there)`, { cause: e });
  }
  const made = d;
  return { path: join(made, "disk.img"), dir: made, remove: () => rmSync(made, { recursive: true, force: true }) };
}

export function benchCmdline(path: IoPath, sizeBytes: number, rand: number, seq: number): string {
  return `probe.run=${BENCH_TEST[path]} probe.blk.bytes=${sizeBytes} probe.blk.bench.n=${rand} probe.blk.seq.n=${seq} probe.blk.warmup=${BENCH_WARMUP[path]}`;
}

interface RunSample {
  modes: Map<string, { mode: string; qd: number; bs: number; iops: number; mbps: number; p50: number | null; p99: number | null; mean: number }>;
  ops: number;
  /** Every request the guest made, the untimed warm-up included: what the run's exits are divided by. */
  requests: number;
  /** Every payload byte moved, the warm-up's included: what the run's CPU time is divided by. */
  movedBytes: number;
  bytes: number;
  exits: number;
  cpu: HostCpuSeconds;
  errors: string[];
}

function sample(path: IoPath, r: BootResult, baselineExits: number, tscHz: number): RunSample {
  const lines = typeof r.lines === "string" ? parseProbeLines(r.lines) : r.lines;
  const test = BENCH_TEST[path];
  // The warm-up's 4 KiB reads and writes are part of the run's exits and CPU time, not of its timed figures.
  const warmup = warmupRequests(BENCH_WARMUP[path]);
  const out: RunSample = {
    modes: new Map(), ops: 0, bytes: 0, requests: warmup, movedBytes: warmup * 4096, exits: r.exits - baselineExits, cpu: r.hostCpuSeconds, errors: [],
  };
  for (const l of lines) {
    if (l.name !== test) continue;
    const f = l.fields;
    if (f["error"] !== undefined || f["ok"] !== "1") {
      out.errors.push(l.raw);
      continue;
    }
    const ops = Number(f["ops"]);
    const bytes = Number(f["bytes"]);
    const tsc = Number(f["tsc"]);
    const secs = tsc / tscHz;
    const key = `${f["mode"]}/qd${f["qd"]}/${f["bs"]}`;
    const toUs = (cycles: string | undefined) => (cycles === undefined ? null : (Number(cycles) / tscHz) * 1e6);
    out.modes.set(key, {
      mode: f["mode"]!,
      qd: Number(f["qd"]),
      bs: Number(f["bs"]),
      iops: ops / secs,
      mbps: bytes / secs / 1e6,
      p50: toUs(f["lat_p50"]),
      p99: toUs(f["lat_p99"]),
      mean: (secs / ops) * 1e6,
    });
    out.ops += ops;
    out.bytes += bytes;
    out.requests += ops;
    out.movedBytes += bytes;
  }
  if (!lines.some((l) => l.name === test)) out.errors.push(`no "PROBE ${test}" line in the guest output`);
  return out;
}

/** Runs the comparison; never throws for one path's failure (it is reported in `errors`). */
export async function runCompare(opts: CompareOptions): Promise<CompareReport> {
  const size = opts.sizeBytes ?? 256 * 1024 * 1024;
  const runs = opts.runs ?? 3;
  const paths = opts.paths ?? IO_PATHS;
  const log = opts.log ?? (() => {});
  const host = opts.tscHz !== undefined ? { hz: opts.tscHz, source: "given" } : hostTscHz();
  const image = makeImage(opts.imageDir, size);
  const root = opts.root ?? new URL("../../", import.meta.url).pathname;
  const figures: PathFigures[] = [];
  let tscSource = host.source;
  log(`${paths.length} path${paths.length === 1 ? "" : "s"} (${paths.join(", ")}), a baseline boot and ${runs} run${runs === 1 ? "" : "s"} each, a ${size / 2 ** 20} MiB image in ${image.dir}`);
  try {
    for (const [p, path] of paths.entries()) {
      const rand = opts.randOps?.[path] ?? DEFAULT_RAND[path];
      const seq = opts.seqOps?.[path] ?? DEFAULT_SEQ[path];
      const errors: string[] = [];
      // Baseline: the same boot with the drive attached but no I/O, so exits per I/O count only the workload.
      let baseline = 0;
      let t0 = process.hrtime.bigint();
      log(`${path}: path ${p + 1}/${paths.length}, baseline boot (no I/O)`);
      try {
        baseline = (await opts.bootProbe(path, "probe.run=boot", image.path)).exits;
        log(`${path}: baseline done in ${elapsed(t0)}`);
      } catch (e) {
        errors.push(`baseline boot: ${(e as Error).message}`);
        log(`${path}: baseline failed after ${elapsed(t0)}: ${(e as Error).message}`);
      }
      const samples: RunSample[] = [];
      let copies: number | undefined;
      for (let i = 0; i < runs; i++) {
        t0 = process.hrtime.bigint();
        log(`${path}: run ${i + 1}/${runs} (${BENCH_TEST[path]}: ${rand} random and ${seq} sequential ops per mode)`);
        try {
          const r = await opts.bootProbe(path, benchCmdline(path, size, rand, seq), image.path);
          if (r.tscHz !== undefined) tscSource = "VMM (KVM_GET_TSC_KHZ)";
          const s = sample(path, r, baseline, r.tscHz ?? host.hz);
          errors.push(...s.errors);
          samples.push(s);
          copies ??= r.copiesPerRequest;
          log(`${path}: run ${i + 1}/${runs} done in ${elapsed(t0)}${s.errors.length > 0 ? `, ${s.errors.length} error line(s)` : ""}`);
        } catch (e) {
          errors.push(`run ${i + 1}: ${(e as Error).message}`);
          log(`${path}: run ${i + 1}/${runs} failed after ${elapsed(t0)}: ${(e as Error).message}`);
        }
      }
      figures.push(summarize(path, samples, copies, errors, root));
    }
  } finally {
    image.remove();
  }
  return {
    ...(opts.hosted === true ? { hosted: true } : {}),
    createdAt: new Date().toISOString(),
    host: { tscHz: host.hz, tscSource, imageDir: image.dir.replace(/\/typervisor-compare-.*/, ""), sizeBytes: size, runs },
    paths: figures,
  };
}

/** Turns per-run samples into the report's figures for one path (exported for recorded results). */
export function summarize(path: IoPath, samples: RunSample[], copies: number | undefined, errors: string[], root: string): PathFigures {
  const keys = [...new Set(samples.flatMap((s) => [...s.modes.keys()]))];
  const modes: ModeFigures[] = keys.map((k) => {
    const ms = samples.map((s) => s.modes.get(k)).filter((m) => m !== undefined);
    const first = ms[0]!;
    const hasSamples = ms.every((m) => m.p50 !== null);
    const qd1 = first.qd === 1;
    return {
      mode: first.mode,
      qd: first.qd,
      bs: first.bs,
      iops: spread(ms.map((m) => m.iops)),
      mbps: spread(ms.map((m) => m.mbps)),
      p50us: hasSamples ? spread(ms.map((m) => m.p50!)) : qd1 ? spread(ms.map((m) => m.mean)) : null,
      p99us: hasSamples ? spread(ms.map((m) => m.p99!)) : null,
      latencySource: hasSamples ? "samples" : qd1 ? "mean" : "none",
    };
  });
  const perGiB = (f: (s: RunSample) => number | undefined) => {
    const v = samples.map((s) => {
      const x = f(s);
      return x === undefined ? NaN : x / (s.movedBytes / 2 ** 30);
    });
    return v.some((x) => Number.isFinite(x)) ? spread(v) : null;
  };
  const a = PATH_ANATOMY[path];
  const loc = countPathLines(root, a);
  return {
    path,
    test: BENCH_TEST[path],
    modes,
    exitsPerIo: spread(samples.map((s) => s.exits / s.requests)),
    cpuSecondsPerGiB: {
      vmm: perGiB((s) => s.cpu.vmm) ?? spread([]),
      card: perGiB((s) => s.cpu.card),
      dom0: perGiB((s) => s.cpu.dom0),
      total: perGiB((s) => s.cpu.vmm + (s.cpu.card ?? 0) + (s.cpu.dom0 ?? 0)) ?? spread([]),
    },
    copiesPerRequest: copies ?? a.copiesPerRequest,
    copiesHow: copies !== undefined ? "measured by the VMM (device metrics)" : a.copiesHow,
    privileged: {
      model: a.model,
      processes: a.processes.map((p, i) => ({ process: p.process, privileges: p.privileges, files: loc.perProcess[i]!.files, lines: loc.perProcess[i]!.lines })),
      totalLines: loc.total,
      notes: a.notes,
    },
    errors,
  };
}

export type { RunSample };
