// npm run bench:exits — exit-handling rate of Typervisor's TypeScript vCPU path against a C loop
// running the same guest on the same VM with the same KVM calls (src/bench/c-exit-loop.c: the VM
// and vCPU are built by the same TypeScript builder, only the KVM_RUN loop differs), and against
// QEMU on the same probe binary, in one run (DESIGN.md §4). The probe's `exits` test does N port
// writes (or N MMIO writes) from ring 3, each one a full exit to the VMM; the rate is taken from
// the difference between a run of N and a run of 2N, so boot and teardown cancel out.
// Prints progress on stderr, a table, then one JSON object as the last line on stdout. Refuses to
// run inside the box (guard.ts); --help says what it measures.

import { existsSync, readFileSync } from "node:fs";
import { VCPU_THREAD_KINDS, Vm, type VcpuThreadKind } from "../vmm/vm.js";
import { describeExit } from "../vmm/exit-report.js";
import { probePath } from "../probe/path.js";
import { findQemu, runProbeInQemu } from "../probe/qemu.js";
import { buildKvmMachine } from "../vmm/builder.js";
import type { KvmVcpuBackend } from "../vmm/vcpu-worker.js";
import { loadCExitLoop, type CExitLoop } from "../sys/baseline.js";
import { benchEntry, elapsed } from "./guard.js";

const HELP = `npm run bench:exits — the exit-handling rate of Typervisor's TypeScript vCPU loop

Measures guest exits handled per second. The probe guest does N one-byte port writes (pio) and then
N 4-byte MMIO writes (mmio) from ring 3, each one a full exit to the VMM; the rate is N over the
difference between a run of 2N and a run of N, so boot and teardown cancel out. The same guest runs
under Typervisor, under a C KVM_RUN loop on the same VM (src/bench/c-exit-loop.c) and under QEMU
(-accel kvm), one after the other in this run; the result is the ratios (docs/benchmarks.md).

Needs KVM on a real host: /dev/kvm, qemu-system-x86_64, gcc, and the built probe guest
(npm run build). Inside the box (QEMU TCG, TYPERVISOR_BOX=1) it refuses: figures there mean nothing.

Environment: BENCH_EXITS_N (writes per short run, default 200000), BENCH_RUNS (default 3),
BENCH_VCPU_THREADS (where Typervisor's vCPU runs: dedicated, the default, pooled or main).
Output: progress on stderr; a table, then one JSON object as the last line, on stdout.
Exit status: 0 measured; 1 a run failed; 2 cannot measure here (no /dev/kvm, no QEMU, the box).
`;

const progress = benchEntry({ name: "bench:exits", what: "KVM exit rates", help: HELP });

const N = Number(process.env["BENCH_EXITS_N"] ?? 200_000);
const THREADS = process.env["BENCH_VCPU_THREADS"] ?? "dedicated";
const RUNS = Number(process.env["BENCH_RUNS"] ?? 3);
type Kind = "pio" | "mmio";

async function typervisorSeconds(kind: Kind, n: number): Promise<number> {
  const vm = Vm.create({
    kernel: { name: "probe.elf", bytes: new Uint8Array(readFileSync(probePath())) },
    cmdline: `probe.run=exits probe.exits.kind=${kind} probe.exits.n=${n}`,
    vcpus: 1,
    memMiB: 64,
    consoleFd: -1,
    vcpuThreads: THREADS as VcpuThreadKind,
  });
  try {
    const t0 = process.hrtime.bigint();
    await vm.start();
    const exit = await vm.wait();
    const t1 = process.hrtime.bigint();
    if (exit.kind !== "debug-exit" || exit.status !== 0) throw new Error(`typervisor run ended with ${describeExit(exit)}`);
    return Number(t1 - t0) / 1e9;
  } finally {
    vm.close();
  }
}

let cLoop: CExitLoop | undefined;

/** The same VM as typervisorSeconds builds (same builder, same boot state), run by the C loop on this thread. */
async function cSeconds(kind: Kind, n: number): Promise<number> {
  cLoop ??= loadCExitLoop();
  const machine = buildKvmMachine({
    kernel: { name: "probe.elf", bytes: new Uint8Array(readFileSync(probePath())) },
    cmdline: `probe.run=exits probe.exits.kind=${kind} probe.exits.n=${n}`,
    vcpus: 1,
    memMiB: 64,
  });
  try {
    const v = machine.vcpus[0]!.backend as KvmVcpuBackend;
    const t0 = process.hrtime.bigint();
    const r = cLoop(v.vcpuFd, v.runAddress, -1);
    const t1 = process.hrtime.bigint();
    if (r.end !== 0) throw new Error(`the C loop's run ended with ${JSON.stringify(r)}`);
    if ((kind === "pio" ? r.pioExits : r.mmioExits) < n) throw new Error(`the C loop saw ${JSON.stringify(r)} for ${n} ${kind} writes`);
    return Number(t1 - t0) / 1e9;
  } finally {
    machine.close();
  }
}

async function qemuSeconds(kind: Kind, n: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await runProbeInQemu({ cmdline: `probe.run=exits probe.exits.kind=${kind} probe.exits.n=${n}`, accel: "kvm", memMiB: 64, timeoutMs: 600_000 });
  const t1 = process.hrtime.bigint();
  if (r.exitCode !== 1) throw new Error(`qemu run ended with status ${r.exitCode}: ${r.stderr.slice(0, 200)}`);
  return Number(t1 - t0) / 1e9;
}

async function rate(who: string, run: (kind: Kind, n: number) => Promise<number>, kind: Kind): Promise<{ median: number; min: number; max: number }> {
  const rates: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = process.hrtime.bigint();
    progress(`${kind}: ${who} run ${i + 1}/${RUNS} (${N} and ${2 * N} writes)`);
    const a = await run(kind, N);
    const b = await run(kind, 2 * N);
    rates.push(N / Math.max(b - a, 1e-9));
    progress(`${kind}: ${who} run ${i + 1}/${RUNS} done in ${elapsed(t0)}: ${Math.round(rates.at(-1)!)} exits/s`);
  }
  rates.sort((x, y) => x - y);
  return { median: rates[Math.floor(rates.length / 2)]!, min: rates[0]!, max: rates[rates.length - 1]! };
}

async function main(): Promise<number> {
  if (!VCPU_THREAD_KINDS.includes(THREADS as VcpuThreadKind)) {
    process.stderr.write(`bench:exits: BENCH_VCPU_THREADS must be ${VCPU_THREAD_KINDS.slice(0, -1).join(", ")} or ${VCPU_THREAD_KINDS.at(-1)}, got "${THREADS}"\n`);
    return 2;
  }
  if (!existsSync("/dev/kvm")) {
    process.stderr.write("bench:exits needs /dev/kvm, and this host has none: nothing was measured\n");
    return 2;
  }
  const qemu = findQemu();
  if (qemu === null) {
    process.stderr.write("bench:exits needs qemu-system-x86_64 (Debian package qemu-system-x86) as the peer\n");
    return 2;
  }
  progress(`${RUNS} runs each of typervisor (${THREADS} vCPU thread), the C loop and qemu, pio then mmio; N=${N}`);
  const result: Record<string, unknown> = { bench: "exits", n: N, runs: RUNS, vcpu_threads: THREADS, host_kvm: existsSync("/sys/module/kvm_pvm") ? "pvm" : "kvm" };
  const rows: string[] = [];
  for (const kind of ["pio", "mmio"] as const) {
    const ours = await rate("typervisor", typervisorSeconds, kind);
    const c = await rate("C loop", cSeconds, kind);
    const peer = await rate("qemu", qemuSeconds, kind);
    // Ratio = our exit rate ÷ theirs (issue "Hypervisor core" item 11): 1.0 is parity, below is slower.
    const vsC = ours.median / c.median;
    const vsQemu = ours.median / peer.median;
    result[`${kind}_exits_per_s`] = Math.round(ours.median);
    result[`c_${kind}_exits_per_s`] = Math.round(c.median);
    result[`qemu_${kind}_exits_per_s`] = Math.round(peer.median);
    result[`${kind}_ratio_vs_c`] = Number(vsC.toFixed(3));
    result[`${kind}_ratio_vs_qemu`] = Number(vsQemu.toFixed(3));
    rows.push(`${kind.padEnd(5)} ${fmt(ours)} ${fmt(c)} ${fmt(peer)} ${vsC.toFixed(3).padStart(8)} ${vsQemu.toFixed(3).padStart(8)}`);
  }
  process.stdout.write(
    `exits/s, median of ${RUNS} (min–max), N=${N} vs 2N; typervisor with its vCPU ${THREADS === "main" ? "on the main thread" : THREADS === "pooled" ? "pooled" : "on a thread of its own"}\n` +
      `kind  ${"typervisor".padEnd(30)} ${"C loop".padEnd(30)} ${"qemu".padEnd(30)} vs C     vs qemu\n${rows.join("\n")}\n`,
  );
  process.stdout.write(JSON.stringify(result) + "\n");
  return 0;
}

function fmt(r: { median: number; min: number; max: number }): string {
  return `${Math.round(r.median)} (${Math.round(r.min)}–${Math.round(r.max)})`.padEnd(30);
}

process.exitCode = await main();
