// npm run bench:start — start time and memory of one microVM process: `typervisor run` (the probe
// demo) against QEMU (-M microvm -accel kvm) booting the same probe with the same command line and
// memory, in one run, alternating, BENCH_RUNS times, at 1 and 2 vCPUs. Per boot: wall time from
// spawn() to the first byte on the process's stdout (the guest's "PROBE start" line: our serial
// console is stdout on both sides), wall time to its exit, and its maximum resident set size as the
// kernel counts it (wait4's ru_maxrss, read through GNU time's %M). Prints progress on stderr, a
// table, then one JSON object as the last line on stdout. Refuses to run inside the box unless
// --memory-only (guard.ts); --help says what it measures.

import { VCPU_THREAD_KINDS, type VcpuThreadKind } from "../vmm/vm.js";
import { spawn } from "node:child_process";
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { packageRoot, probePath } from "../probe/path.js";
import { findQemu, qemuArgs } from "../probe/qemu.js";
import { parseProbeLines } from "../probe/probe-lines.js";
import { EXIT_CANNOT_MEASURE, benchEntryOptions, envInt, inBox } from "./guard.js";
import { parseGnuTimeMaxRss } from "./stats.js";
import { START_SIDES, caseKey, runOrder, startCases, startReport, type StartCase, type StartSample, type StartSide } from "./start-report.js";

const HELP = `npm run bench:start — start time and memory of a microVM process, Typervisor against QEMU

Measures three figures of the probe guest's demo (probe.run=demo, 128 MiB), one process per boot:
the wall time from spawn() to the first byte the process writes on stdout (the guest's first
console line, "PROBE start ..."), the wall time until the process exits, and its maximum resident
set size. Typervisor: \`node bin/typervisor.js run\`; QEMU: qemu-system-x86_64 -M microvm,acpi=off
-accel kvm with the same probe, memory and command line. Both at 1 and 2 vCPUs (QEMU -smp 2), in
one run, the order alternating from run to run; medians with min–max, the ratios typervisor/qemu,
and the max RSS each further vCPU adds. Each run also measures the floor any VMM on Node.js pays:
node with koffi loaded and nothing else (dist/bench/node-floor.js: its max RSS, and its time to
its first byte on stdout), the same with one idle worker thread, and the same with one small
function compiled by V8's optimizing compiler (TurboFan), as any long enough run compiles its hot
loop; the table gives that floor, what the worker thread and the optimizing compiler's first use
add, and typervisor over the floor.
Max RSS is the kernel's ru_maxrss of the process (wait4), read through GNU time
(/usr/bin/time -f %M); both sides run under it, so its fork and exec are in both times.

Needs KVM on a real host: /dev/kvm, qemu-system-x86_64, /usr/bin/time (Debian package time) and
the built probe guest (npm run build). Inside the box (QEMU TCG, TYPERVISOR_BOX=1) it refuses:
times there mean nothing. --memory-only (or BENCH_MEMORY_ONLY=1) prints the max RSS figures
alone, and runs in the box as well: resident memory is real there. Where there is no QEMU (the
box carries none), --memory-only measures Typervisor alone.

Environment: BENCH_RUNS (runs of each of the four boots, default 5), BENCH_VCPU_THREADS
(typervisor's --vcpu-threads: dedicated, the default, pooled, or main — one vCPU only, so its
runs boot 1 vCPU and print no further-vCPU row).
Output: progress on stderr; a table, then one JSON object as the last line, on stdout.
Exit status: 0 measured; 1 a run failed; 2 cannot measure here (no /dev/kvm, no QEMU, no
/usr/bin/time, the box without --memory-only, a bad setting).
`;

const NAME = "bench:start";
const { progress, memoryOnly } = benchEntryOptions({ name: NAME, what: "VM start times", help: HELP, memoryOnly: true });

const GNU_TIME = "/usr/bin/time";
const MEM_MIB = 128;
const CMDLINE = "probe.run=demo";
/** The vCPU counts booted: 1 and 2 (what a further vCPU costs); "main" runs one vCPU only. */
const vcpuCounts = (threads: VcpuThreadKind): readonly number[] => (threads === "main" ? [1] : [1, 2]);
/** A boot that takes longer than this has hung (the box translates every instruction: more there). */
const BOOT_TIMEOUT_MS = inBox() ? 600_000 : 60_000;
const RSS_SOURCE = "the kernel's ru_maxrss (wait4) of each process, through GNU time -f %M";

function cannot(why: string): number {
  process.stderr.write(`${NAME}: ${why}\n`);
  return EXIT_CANNOT_MEASURE;
}

/** The argument vector of one boot (without the GNU time prefix) and the exit status that means the demo passed. */
function command(c: StartCase, qemu: string): { argv: string[]; okStatus: number } {
  if (c.side === "typervisor") {
    const bin = join(packageRoot(), "bin", "typervisor.js");
    return { argv: [process.execPath, bin, "run", "--vcpus", String(c.vcpus), "--vcpu-threads", vcpuThreads, "--mem", String(MEM_MIB), "--cmdline", CMDLINE], okStatus: 0 };
  }
  // isa-debug-exit: the probe's status 0 makes QEMU exit (0 << 1) | 1 = 1 (src/probe/qemu.ts).
  return { argv: [qemu, ...qemuArgs({ kernel: probePath(), accel: "kvm", cmdline: CMDLINE, memMiB: MEM_MIB, smp: c.vcpus })], okStatus: 1 };
}

/** A process under GNU time as it ends: its status or signal, its output, and when it exited and first wrote to stdout. */
interface Timed {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** The last lines of its stderr, joined by " | ", and "(killed after N s)" if the limit killed it. */
  stderrTail: string;
  firstByte: bigint | undefined;
  exitAt: bigint;
}

/**
 * Runs `argv` under GNU time (%M into `timeFile`) in a process group of its own: past
 * BOOT_TIMEOUT_MS the whole group is killed (GNU time alone would leave the command running,
 * holding its stdout open, and the bench waiting on it for good).
 */
async function runTimed(argv: readonly string[], timeFile: string): Promise<Timed> {
  rmSync(timeFile, { force: true });
  const child = spawn(GNU_TIME, ["-f", "%M", "-o", timeFile, ...argv], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let firstByte: bigint | undefined;
  let exitAt = 0n;
  let killed = false;
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on("data", (b: Buffer) => {
    firstByte ??= process.hrtime.bigint();
    out.push(b);
  });
  child.stderr.on("data", (b: Buffer) => err.push(b));
  child.once("exit", () => (exitAt = process.hrtime.bigint()));
  const timer = setTimeout(() => {
    killed = true;
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // The group is gone already.
    }
  }, BOOT_TIMEOUT_MS);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve([code, signal]));
  }).finally(() => clearTimeout(timer));
  const tail = Buffer.concat(err).toString("utf8").trim().split("\n").slice(-3).join(" | ");
  return { code, signal, stdout: Buffer.concat(out).toString("utf8"), stderrTail: killed ? `${tail} (killed after ${BOOT_TIMEOUT_MS / 1000} s)` : tail, firstByte, exitAt };
}

/** One boot under GNU time: the times from spawn(), the max RSS, and a check that the demo passed. */
async function boot(c: StartCase, qemu: string, dir: string): Promise<StartSample> {
  const { argv, okStatus } = command(c, qemu);
  const timeFile = join(dir, "maxrss.txt");
  const t0 = process.hrtime.bigint();
  const { code, signal, stdout, stderrTail: tail, firstByte, exitAt } = await runTimed(argv, timeFile);
  const who = `${c.side} at ${c.vcpus} vCPU(s)`;
  if (code !== okStatus) throw new Error(`${who} ended with ${signal ?? `status ${code}`} (the demo passing is ${okStatus}): ${tail}`);
  if (!stdout.startsWith("PROBE start ")) throw new Error(`${who}: the first console output is not the probe's start line: ${JSON.stringify(stdout.slice(0, 80))}`);
  const demo = parseProbeLines(stdout).find((l) => l.name === "demo");
  if (demo === undefined || !("ok" in demo.fields)) throw new Error(`${who}: the demo did not report ok: ${JSON.stringify(stdout.slice(-200))}`);
  return {
    firstByteMs: Number(firstByte! - t0) / 1e6,
    exitMs: Number(exitAt - t0) / 1e6,
    maxRssKiB: parseGnuTimeMaxRss(readFileSync(timeFile, "utf8")),
  };
}

/** The reference process's modes (node-floor.ts): Node.js with koffi alone, with one idle worker thread, with one function optimized by TurboFan. */
type FloorMode = "bare" | "worker" | "jit";
const FLOOR_MODES: readonly FloorMode[] = ["bare", "worker", "jit"];

/** One run of the reference process (node-floor.ts) under GNU time: its max RSS, KiB, and ms from spawn() to its first byte on stdout. */
async function floorRun(mode: FloorMode, dir: string): Promise<{ maxRssKiB: number; firstByteMs: number }> {
  const timeFile = join(dir, "floor.txt");
  const script = join(packageRoot(), "dist", "bench", "node-floor.js");
  // node-floor's mode is its argument (none for bare); jit's natives syntax is node's flag.
  const argv = [process.execPath, ...(mode === "jit" ? ["--allow-natives-syntax"] : []), script, ...(mode === "bare" ? [] : [mode])];
  const t0 = process.hrtime.bigint();
  const r = await runTimed(argv, timeFile);
  if (r.code !== 0 || r.firstByte === undefined) throw new Error(`the Node.js floor (${mode}) ended with ${r.signal ?? `status ${r.code}`}${r.firstByte === undefined ? " and wrote nothing" : ""}: ${r.stderrTail}`);
  return { maxRssKiB: parseGnuTimeMaxRss(readFileSync(timeFile, "utf8")), firstByteMs: Number(r.firstByte - t0) / 1e6 };
}

/** typervisor's `--vcpu-threads` (BENCH_VCPU_THREADS). */
let vcpuThreads: VcpuThreadKind = "dedicated";

async function main(): Promise<number> {
  const runs = envInt("BENCH_RUNS", 5, 1, 1000);
  if (typeof runs === "string") return cannot(runs);
  const threads = process.env.BENCH_VCPU_THREADS ?? "dedicated";
  if (!VCPU_THREAD_KINDS.includes(threads as VcpuThreadKind)) return cannot(`BENCH_VCPU_THREADS must be ${VCPU_THREAD_KINDS.slice(0, -1).join(", ")} or ${VCPU_THREAD_KINDS.at(-1)}, got "${threads}"`);
  vcpuThreads = threads as VcpuThreadKind;
  const VCPU_COUNTS = vcpuCounts(vcpuThreads);
  if (!existsSync("/dev/kvm")) return cannot("needs /dev/kvm, and this host has none: nothing was measured");
  const qemu = findQemu();
  // Memory alone is worth having without the peer (the box carries no QEMU); times are not.
  if (qemu === null && !memoryOnly) return cannot("needs qemu-system-x86_64 (Debian package qemu-system-x86) as the peer");
  try {
    accessSync(GNU_TIME, constants.X_OK);
  } catch {
    return cannot(`needs GNU time at ${GNU_TIME} (Debian package time) to read each process's maximum RSS`);
  }
  probePath(); // throws "probe guest not built" before anything runs
  const sides: readonly StartSide[] = qemu === null ? ["typervisor"] : START_SIDES;
  const cases = startCases(VCPU_COUNTS, sides);
  const samples = new Map<string, StartSample[]>(cases.map((c) => [caseKey(c), []]));
  const floor = { bare: [] as number[], worker: [] as number[], jit: [] as number[], firstByteMs: [] as number[] };
  const dir = mkdtempSync(join(tmpdir(), "typervisor-bench-start-"));
  try {
    progress(`${runs} runs of ${cases.length} boots (${sides.join(" and ")} at ${VCPU_COUNTS.join(" and ")} vCPUs), ${CMDLINE}, ${MEM_MIB} MiB${memoryOnly ? ", memory only" : ""}`);
    for (let i = 0; i < runs; i++) {
      const line: string[] = [];
      for (const c of runOrder(cases, i)) {
        const s = await boot(c, qemu ?? "", dir);
        samples.get(caseKey(c))!.push(s);
        line.push(memoryOnly ? `${c.side}/${c.vcpus} ${(s.maxRssKiB / 1024).toFixed(1)} MiB` : `${c.side}/${c.vcpus} ${s.firstByteMs.toFixed(0)}/${s.exitMs.toFixed(0)} ms ${(s.maxRssKiB / 1024).toFixed(1)} MiB`);
      }
      for (const mode of FLOOR_MODES) {
        const f = await floorRun(mode, dir);
        floor[mode].push(f.maxRssKiB);
        if (mode === "bare") floor.firstByteMs.push(f.firstByteMs);
      }
      line.push(`floor ${(floor.bare.at(-1)! / 1024).toFixed(1)} MiB${memoryOnly ? "" : ` ${floor.firstByteMs.at(-1)!.toFixed(0)} ms`}, with a worker ${(floor.worker.at(-1)! / 1024).toFixed(1)} MiB, with TurboFan used ${(floor.jit.at(-1)! / 1024).toFixed(1)} MiB`);
      progress(`run ${i + 1}/${runs}: ${line.join(", ")}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const { table, json } = startReport({ runs, memMiB: MEM_MIB, cmdline: CMDLINE, rssSource: RSS_SOURCE, memoryOnly, samples, vcpuCounts: VCPU_COUNTS, vcpuThreads, sides, floor });
  process.stdout.write(table);
  process.stdout.write(JSON.stringify({ ...json, host_kvm: existsSync("/sys/module/kvm_pvm") ? "pvm" : "kvm", box: inBox() }) + "\n");
  return 0;
}

process.exitCode = await main().catch((e: unknown) => {
  process.stderr.write(`${NAME}: ${(e as Error).message}\n`);
  return 1;
});
