// npm run bench:blk — the probe's blk-bench (4 KiB random read/write at QD1 and QD32, 1 MiB
// sequential read/write) on one image on tmpfs, under Typervisor (virtio-blk card) and under QEMU
// (-M microvm,acpi=off -device virtio-blk-device), same probe binary, in one run (DESIGN.md §4).
// Prints progress on stderr, a table, then one JSON object as the last line on stdout. Refuses to
// run inside the box (guard.ts); --help says what it measures.

import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Vm } from "../vmm/vm.js";
import { describeExit } from "../vmm/exit-report.js";
import { probePath } from "../probe/path.js";
import { findQemu, qemuArgs } from "../probe/qemu.js";
import { parseProbeLines, type ProbeLine } from "../probe/probe-lines.js";
import { benchEntry, elapsed } from "./guard.js";

const HELP = `npm run bench:blk — block I/O through Typervisor's virtio-blk card against QEMU's virtio-blk

Measures the probe guest's blk-bench — 4 KiB random read and write at QD1 and QD32, 1 MiB sequential
read and write — on one raw image on tmpfs, under Typervisor (the card: a worker thread fed by
ioeventfd, interrupting by irqfd) and under QEMU (-M microvm -device virtio-blk-device -accel kvm),
same probe binary, one after the other in this run: IOPS, MB/s, host CPU seconds per GiB moved and
exits per I/O, and their ratios (docs/benchmarks.md).

Needs KVM on a real host: /dev/kvm, qemu-system-x86_64, and the built probe guest (npm run build).
Inside the box (QEMU TCG, TYPERVISOR_BOX=1) it refuses: figures there mean nothing.

Environment: BENCH_BLK_MIB (image size, default 256), BENCH_BLK_OPS (random ops per run, 20000),
BENCH_BLK_SEQ (sequential ops per run, 128), BENCH_BLK_WARMUP (untimed 4 KiB reads first, 2000).
Output: progress on stderr; a table, then one JSON object as the last line, on stdout.
Exit status: 0 measured; 1 a run failed; 2 cannot measure here (no /dev/kvm, no QEMU, the box).
`;

const progress = benchEntry({ name: "bench:blk", what: "block I/O rates through KVM", help: HELP });

const IMAGE_MIB = Number(process.env["BENCH_BLK_MIB"] ?? 256);
const RAND_OPS = Number(process.env["BENCH_BLK_OPS"] ?? 20_000);
const SEQ_OPS = Number(process.env["BENCH_BLK_SEQ"] ?? 128);
/** Untimed 4 KiB reads before the runs (the probe's probe.blk.warmup): counted in CPU per GiB and exits per I/O. */
const WARMUP = Number(process.env["BENCH_BLK_WARMUP"] ?? 2000);
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
  return run.lines.filter((l) => l.name === "blk-bench").reduce((s, l) => s + Number(l.fields["bytes"] ?? 0), WARMUP * 4096);
}

/** Requests of the whole boot, the warm-up's included (what its exits are divided by). */
function opsDone(run: Run): number {
  return run.lines.filter((l) => l.name === "blk-bench").reduce((s, l) => s + Number(l.fields["ops"] ?? 0), WARMUP);
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
  const dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "typervisor-bench-"));
  try {
    const image = join(dir, "disk.img");
    writeFileSync(image, "");
    truncateSync(image, IMAGE_MIB * 1024 * 1024);
    const hz = tscHz();
    const work = `${RAND_OPS} ops × 4 random runs, ${SEQ_OPS} ops × 2 sequential runs, ${WARMUP} warm-up reads`;
    progress(`a ${IMAGE_MIB} MiB image on ${dir}; two boots of blk-bench (${work}): typervisor, then qemu`);
    let t0 = process.hrtime.bigint();
    progress("boot 1/2: typervisor (virtio-blk card)");
    const ours = await typervisor(image, dir);
    progress(`boot 1/2: typervisor done in ${elapsed(t0)}`);
    t0 = process.hrtime.bigint();
    progress("boot 2/2: qemu (virtio-blk-device)");
    const peer = await qemu(image);
    progress(`boot 2/2: qemu done in ${elapsed(t0)}`);
    const a = rows(ours, hz);
    const b = rows(peer, hz);
    if (a.length !== 6 || b.length !== 6) throw new Error(`blk-bench did not report six ok runs (typervisor ${a.length}, qemu ${b.length})`);
    const find = (r: Row[], mode: string, qd: number) => r.find((x) => x.mode === mode && x.qd === qd)!;
    const gib = (run: Run) => bytesMoved(run) / 2 ** 30;
    const table = a.map((x) => {
      const y = find(b, x.mode, x.qd);
      return `${x.mode.padEnd(10)} qd=${String(x.qd).padEnd(3)} ${x.iops.toFixed(0).padStart(9)} ${y.iops.toFixed(0).padStart(9)} ${(x.iops / y.iops).toFixed(3).padStart(7)} ${x.mbps.toFixed(1).padStart(9)} ${y.mbps.toFixed(1).padStart(9)}`;
    });
    const cpuOurs = ours.cpuSeconds / gib(ours);
    const cpuPeer = peer.cpuSeconds / gib(peer);
    process.stdout.write(
      `blk-bench on a ${IMAGE_MIB} MiB image on tmpfs (TSC ${(hz / 1e6).toFixed(0)} MHz)\n` +
        `run             typervisor IOPS  qemu IOPS   ratio  typervisor MB/s  qemu MB/s\n${table.join("\n")}\n` +
        `host CPU s per GiB moved: typervisor ${cpuOurs.toFixed(3)}, qemu ${cpuPeer.toFixed(3)} (ratio ${(cpuOurs / cpuPeer).toFixed(3)}, lower is better)\n`,
    );
    const result = {
      bench: "blk",
      image_mib: IMAGE_MIB,
      typervisor: Object.fromEntries(a.map((x) => [`${x.mode}_qd${x.qd}`, { iops: Math.round(x.iops), mbps: Number(x.mbps.toFixed(1)) }])),
      qemu: Object.fromEntries(b.map((x) => [`${x.mode}_qd${x.qd}`, { iops: Math.round(x.iops), mbps: Number(x.mbps.toFixed(1)) }])),
      iops_ratio_vs_qemu: Number((find(a, "randread", 32).iops / find(b, "randread", 32).iops).toFixed(3)),
      seq_read_mbps_ratio_vs_qemu: Number((find(a, "seqread", 1).mbps / find(b, "seqread", 1).mbps).toFixed(3)),
      cpu_per_gib_typervisor: Number(cpuOurs.toFixed(4)),
      cpu_per_gib_qemu: Number(cpuPeer.toFixed(4)),
      cpu_per_gib_ratio_vs_qemu: Number((cpuOurs / cpuPeer).toFixed(3)),
      // Every exit of the run (boot and the report lines included) over the I/O operations.
      exits_per_io: {
        typervisor: ours.exits === null ? null : Number((ours.exits / opsDone(ours)).toFixed(3)),
        // QEMU's exits are KVM's to count (debugfs); not read here.
        qemu: peer.exits,
      },
    };
    process.stdout.write(JSON.stringify(result) + "\n");
    return 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
