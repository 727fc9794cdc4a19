// npm run bench:blk — the probe's blk-bench (4 KiB random read/write at QD1 and QD32, 1 MiB
// sequential read/write) on fresh images on tmpfs, under Typervisor (virtio-blk card) and under QEMU
// (-M microvm,acpi=off -device virtio-blk-device), same probe binary, in one run (DESIGN.md §4).
// Prints progress on stderr, a table, then one JSON object as the last line on stdout. Refuses to
// run inside the box (guard.ts); --help says what it measures.

import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Vm } from "../vmm/vm.js";
import { describeExit } from "../vmm/exit-report.js";
import { probePath } from "../probe/path.js";
import { findQemu, qemuArgs } from "../probe/qemu.js";
import { parseProbeLines, type ProbeLine } from "../probe/probe-lines.js";
import { makeImage, warmupRequests } from "../compare/run.js";
import { benchEntry, elapsed } from "./guard.js";
import { fmtRange, fmtRatio, ratio, round, summarize } from "./stats.js";

const HELP = `npm run bench:blk — block I/O through Typervisor's virtio-blk card against QEMU's virtio-blk

Measures the probe guest's blk-bench — 4 KiB random read and write at QD1 and QD32, 1 MiB sequential
read and write — on one raw image on tmpfs, under Typervisor (the card: a worker thread fed by
ioeventfd, interrupting by irqfd) and under QEMU (-M microvm -device virtio-blk-device -accel kvm),
same probe binary, in this run: IOPS, MB/s, host CPU seconds per GiB moved and exits per I/O, and
their ratios (docs/benchmarks.md). Each run boots each VMM once, on a fresh image written full of
data first (no holes), the two in alternating order; the table gives medians with min–max.

Needs KVM on a real host: /dev/kvm, qemu-system-x86_64, and the built probe guest (npm run build).
Inside the box (QEMU TCG, TYPERVISOR_BOX=1) it refuses: figures there mean nothing.

Environment: BENCH_BLK_MIB (image size, default 256), BENCH_BLK_OPS (random ops per run, 20000),
BENCH_BLK_SEQ (sequential ops per run, 128), BENCH_BLK_WARMUP (untimed 4 KiB reads, then as many writes, first: 2000 each),
BENCH_RUNS (runs, default 3).
Output: progress on stderr; a table, then one JSON object as the last line, on stdout.
Exit status: 0 measured; 1 a run failed; 2 cannot measure here (no /dev/kvm, no QEMU, the box).
`;

const progress = benchEntry({ name: "bench:blk", what: "block I/O rates through KVM", help: HELP });

const IMAGE_MIB = Number(process.env["BENCH_BLK_MIB"] ?? 256);
const RAND_OPS = Number(process.env["BENCH_BLK_OPS"] ?? 20_000);
const SEQ_OPS = Number(process.env["BENCH_BLK_SEQ"] ?? 128);
/** Untimed 4 KiB reads, then as many writes, before the runs (the probe's probe.blk.warmup): counted in CPU per GiB and exits per I/O. */
const WARMUP = Number(process.env["BENCH_BLK_WARMUP"] ?? 2000);
/** Runs, each one boot of each VMM on a fresh image, the order alternating: medians are reported. */
const RUNS = Number(process.env["BENCH_RUNS"] ?? 3);
const CMDLINE = `probe.run=blk-bench probe.blk.bytes=${IMAGE_MIB}M probe.blk.bench.n=${RAND_OPS} probe.blk.seq.n=${SEQ_OPS} probe.blk.warmup=${WARMUP}`;

interface Run {
  lines: ProbeLine[];
  /** Host CPU seconds of the VMM (and, for Typervisor, its cards: same process). */
  cpuSeconds: number;
  /** Guest exits to userspace, when they can be counted. */
  exits: number | null;
}

/** The host TSC rate: the guest's TSC runs at it under KVM. Only absolute figures depend on it; ratios do not. */
function tscHz(): number {
  const m = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync("/proc/cpuinfo", "utf8"));
  return m ? Number(m[1]) * 1e6 : 1e9;
}

async function typervisor(image: string, dir: string): Promise<Run> {
  const consolePath = join(dir, "typervisor-console.log");
  const fd = openSync(consolePath, "w");
  const vm = Vm.create({
    kernel: { name: "probe.elf", bytes: new Uint8Array(readFileSync(probePath())) },
    cmdline: CMDLINE,
    vcpus: 1,
    memMiB: 256,
    consoleFd: fd,
    drives: [{ id: "bench", path: image }],
  });
  try {
    const cpu0 = process.cpuUsage();
    await vm.start();
    const exit = await vm.wait();
    const cpu = process.cpuUsage(cpu0);
    if (exit.kind !== "debug-exit" || exit.status !== 0) throw new Error(`typervisor run ended with ${describeExit(exit)}`);
    const c = vm.exitCounters()[0]!;
    return {
      lines: parseProbeLines(readFileSync(consolePath, "utf8")),
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      exits: c.IO_IN + c.IO_OUT + c.MMIO_READ + c.MMIO_WRITE + c.OTHER,
    };
  } finally {
    vm.close();
    closeSync(fd);
  }
}

async function qemu(image: string): Promise<Run> {
  const args = [
    ...qemuArgs({ kernel: probePath(), accel: "kvm", cmdline: CMDLINE, memMiB: 256 }),
    "-global", "virtio-mmio.force-legacy=false",
    "-drive", `if=none,id=d0,file=${image},format=raw,cache=none,aio=threads`,
    "-device", "virtio-blk-device,drive=d0",
  ];
  // `times` after QEMU exits prints the shell's children's user and system CPU time.
  const child = spawn("sh", ["-c", '"$0" "$@"; rc=$?; times >&2; exit $rc', findQemu()!, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((r) => child.once("exit", r));
  if (code !== 1) throw new Error(`qemu ended with status ${code}: ${err.slice(-300)}`);
  const times = err.trim().split("\n").at(-1) ?? "";
  const m = /(\d+)m([\d.]+)s\s+(\d+)m([\d.]+)s/.exec(times);
  const cpuSeconds = m ? Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]) : NaN;
  return { lines: parseProbeLines(out), cpuSeconds, exits: null };
}

interface Row {
  mode: string;
  qd: number;
  iops: number;
  mbps: number;
}

function rows(run: Run, hz: number): Row[] {
  return run.lines
    .filter((l) => l.name === "blk-bench" && l.fields["ok"] === "1")
    .map((l) => {
      const seconds = Number(l.fields["tsc"]) / hz;
      return {
        mode: l.fields["mode"]!,
        qd: Number(l.fields["qd"]),
        iops: Number(l.fields["ops"]) / seconds,
        mbps: Number(l.fields["bytes"]) / seconds / 1e6,
      };
    });
}

/** Payload bytes of the whole boot, the warm-up's included (what its CPU time is divided by). */
function bytesMoved(run: Run): number {
  return run.lines.filter((l) => l.name === "blk-bench").reduce((s, l) => s + Number(l.fields["bytes"] ?? 0), warmupRequests(WARMUP) * 4096);
}

/** Requests of the whole boot, the warm-up's included (what its exits are divided by). */
function opsDone(run: Run): number {
  return run.lines.filter((l) => l.name === "blk-bench").reduce((s, l) => s + Number(l.fields["ops"] ?? 0), warmupRequests(WARMUP));
}

type Vmm = "typervisor" | "qemu";
const MODES = [["randread", 1], ["randwrite", 1], ["randread", 32], ["randwrite", 32], ["seqread", 1], ["seqwrite", 1]] as const;
const key = (mode: string, qd: number): string => `${mode}_qd${qd}`;

/** One VMM's figures over the runs: per row IOPS and MB/s, and CPU seconds per GiB. */
interface Series {
  iops: Map<string, number[]>;
  mbps: Map<string, number[]>;
  cpuPerGib: number[];
  exitsPerIo: number[];
}

function record(into: Series, run: Run, hz: number): void {
  const r = rows(run, hz);
  for (const [mode, qd] of MODES) {
    const x = r.find((y) => y.mode === mode && y.qd === qd);
    if (x === undefined) throw new Error(`blk-bench did not report an ok ${mode} run at QD${qd}`);
    const k = key(mode, qd);
    into.iops.set(k, [...(into.iops.get(k) ?? []), x.iops]);
    into.mbps.set(k, [...(into.mbps.get(k) ?? []), x.mbps]);
  }
  into.cpuPerGib.push(run.cpuSeconds / (bytesMoved(run) / 2 ** 30));
  if (run.exits !== null) into.exitsPerIo.push(run.exits / opsDone(run));
}

async function main(): Promise<number> {
  if (!existsSync("/dev/kvm")) {
    process.stderr.write("bench:blk needs /dev/kvm, and this host has none: nothing was measured\n");
    return 2;
  }
  if (findQemu() === null) {
    process.stderr.write("bench:blk needs qemu-system-x86_64 (Debian package qemu-system-x86) as the peer\n");
    return 2;
  }
  if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`BENCH_RUNS must be a positive integer, got ${process.env["BENCH_RUNS"]}`);
  const dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "typervisor-bench-"));
  try {
    const hz = tscHz();
    const work = `${RAND_OPS} ops × 4 random runs, ${SEQ_OPS} ops × 2 sequential runs, ${WARMUP} warm-up reads and ${WARMUP} writes`;
    progress(`${RUNS} runs of two boots of blk-bench (${work}), each on a fresh ${IMAGE_MIB} MiB image on ${dir}, the order alternating`);
    const series: Record<Vmm, Series> = {
      typervisor: { iops: new Map(), mbps: new Map(), cpuPerGib: [], exitsPerIo: [] },
      qemu: { iops: new Map(), mbps: new Map(), cpuPerGib: [], exitsPerIo: [] },
    };
    for (let i = 1; i <= RUNS; i++) {
      const order: Vmm[] = i % 2 === 1 ? ["typervisor", "qemu"] : ["qemu", "typervisor"];
      for (const vmm of order) {
        // A fresh image full of data (no holes) for each boot: none finds pages an earlier one
        // allocated (a sparse image shared by the two boots favoured the second one's writes).
        const image = makeImage(dir, IMAGE_MIB << 20, "BENCH_BLK_MIB");
        try {
          const t0 = process.hrtime.bigint();
          progress(`run ${i}/${RUNS}: ${vmm === "typervisor" ? "typervisor (virtio-blk card)" : "qemu (virtio-blk-device)"}`);
          const run = vmm === "typervisor" ? await typervisor(image.path, dir) : await qemu(image.path);
          record(series[vmm], run, hz);
          progress(`run ${i}/${RUNS}: ${vmm} done in ${elapsed(t0)}`);
        } finally {
          image.remove();
        }
      }
    }
    const a = series.typervisor;
    const b = series.qemu;
    const med = (xs: readonly number[]): number => summarize(xs).median;
    const table = MODES.map(([mode, qd]) => {
      const k = key(mode, qd);
      const x = summarize(a.iops.get(k)!);
      const y = summarize(b.iops.get(k)!);
      return `${mode.padEnd(10)} qd=${String(qd).padEnd(3)} ${fmtRange(x, 0).padStart(26)} ${fmtRange(y, 0).padStart(26)} ${fmtRatio(ratio(x.median, y.median), 3).padStart(7)} ${med(a.mbps.get(k)!).toFixed(1).padStart(9)} ${med(b.mbps.get(k)!).toFixed(1).padStart(9)}`;
    });
    const cpuOurs = summarize(a.cpuPerGib);
    const cpuPeer = summarize(b.cpuPerGib);
    const cpuRatio = ratio(cpuOurs.median, cpuPeer.median);
    process.stdout.write(
      `blk-bench on fresh ${IMAGE_MIB} MiB images on tmpfs (TSC ${(hz / 1e6).toFixed(0)} MHz), median of ${RUNS} (min–max)\n` +
        `run            ${"typervisor IOPS".padStart(26)} ${"qemu IOPS".padStart(26)}   ratio  typervisor MB/s  qemu MB/s\n${table.join("\n")}\n` +
        `host CPU s per GiB moved: typervisor ${fmtRange(cpuOurs, 3)}, qemu ${fmtRange(cpuPeer, 3)} (ratio ${fmtRatio(cpuRatio, 3)}, lower is better)\n`,
    );
    const figures = (s: Series) =>
      Object.fromEntries(MODES.map(([mode, qd]) => [key(mode, qd), { iops: Math.round(med(s.iops.get(key(mode, qd))!)), mbps: round(med(s.mbps.get(key(mode, qd))!), 1) }]));
    const ratioOf = (mode: string, qd: number, what: "iops" | "mbps") => round(ratio(med(a[what].get(key(mode, qd))!), med(b[what].get(key(mode, qd))!)), 3);
    const result = {
      bench: "blk",
      image_mib: IMAGE_MIB,
      runs: RUNS,
      typervisor: figures(a),
      qemu: figures(b),
      // Each row's ratio (IOPS for the 4 KiB rows, MB/s for the sequential ones): above 1, the card is ahead.
      ratios_vs_qemu: Object.fromEntries(MODES.map(([mode, qd]) => [key(mode, qd), ratioOf(mode, qd, mode.startsWith("seq") ? "mbps" : "iops")])),
      iops_ratio_vs_qemu: ratioOf("randread", 32, "iops"),
      seq_read_mbps_ratio_vs_qemu: ratioOf("seqread", 1, "mbps"),
      cpu_per_gib_typervisor: round(cpuOurs.median, 4),
      cpu_per_gib_qemu: round(cpuPeer.median, 4),
      cpu_per_gib_ratio_vs_qemu: round(cpuRatio, 3),
      // Every exit of the run (boot and the report lines included) over the I/O operations.
      exits_per_io: {
        typervisor: a.exitsPerIo.length === 0 ? null : round(med(a.exitsPerIo), 3),
        // QEMU's exits are KVM's to count (debugfs); not read here.
        qemu: null,
      },
    };
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
