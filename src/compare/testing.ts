// Recorded results for testing the report generator. SYNTHETIC: these numbers were made up to
// exercise the code (shapes and orders of magnitude chosen to look like the three paths); they
// are not measurements and must never be quoted as such.
import { warmupRequests, type BootProbe, type BootResult, type IoPath } from "./run.js";

export const SYNTHETIC_LABEL = "invented numbers for testing the report generator (src/compare/testing.ts); no VM ran";

const TSC_HZ = 2e9;

/** A BootProbe that returns invented guest output in the probe's format, deterministic per (path, run). */
export function syntheticBootProbe(): { bootProbe: BootProbe; calls: Array<{ path: IoPath; cmdline: string; image: string }> } {
  const calls: Array<{ path: IoPath; cmdline: string; image: string }> = [];
  const runs = new Map<IoPath, number>();
  const bootProbe: BootProbe = async (path, cmdline, image) => {
    calls.push({ path, cmdline, image });
    if (cmdline === "probe.run=boot") return { lines: "PROBE start entry=linux64 version=1\nPROBE done status=0\n", hostCpuSeconds: { vmm: 0.01 }, exits: 500, tscHz: TSC_HZ };
    const k = (runs.get(path) ?? 0) + 1;
    runs.set(path, k);
    const jitter = 1 + 0.05 * k;
    // invented per-op microseconds for 4 KiB QD1, and exits per op
    const us = { emulated: 55_000, dom0: 60, card: 35 }[path] * jitter;
    const test = { emulated: "ata-bench", dom0: "xenblk-bench", card: "blk-bench" }[path];
    const n = Number(/probe\.blk\.bench\.n=(\d+)/.exec(cmdline)![1]);
    const sn = Number(/probe\.blk\.seq\.n=(\d+)/.exec(cmdline)![1]);
    const cyc = (u: number) => Math.round((u * TSC_HZ) / 1e6);
    const lat = ` lat_p50=${cyc(us)} lat_p99=${cyc(us * 1.8)} lat_max=${cyc(us * 3)}`;
    const modes: Array<[string, number, number, number]> = [
      ["randread", 1, 4096, n],
      ["randwrite", 1, 4096, n],
      ...(path === "emulated" ? [] : ([["randread", 32, 4096, n], ["randwrite", 32, 4096, n]] as Array<[string, number, number, number]>)),
      ["seqread", 1, path === "emulated" ? 131072 : 1048576, sn],
      ["seqwrite", 1, path === "emulated" ? 131072 : 1048576, sn],
    ];
    const lines = modes.map(([m, qd, bs, ops]) => {
      const per = (us * (bs / 4096) ** (path === "emulated" ? 1 : 0.5)) / (qd === 32 ? 6 : 1);
      return `PROBE ${test} mode=${m} qd=${qd} bs=${bs} ops=${ops} bytes=${ops * bs} tsc=${cyc(per * ops)} errors=0 ok=1${qd === 1 && !m.startsWith("seq") ? lat : ""}`;
    });
    // The untimed warm-up (that many reads, then as many writes) counts in the run's exits and CPU time, as in a real run.
    const warmup = warmupRequests(Number(/probe\.blk\.warmup=(\d+)/.exec(cmdline)?.[1] ?? 0));
    const bytes = modes.reduce((s, [, , bs, ops]) => s + bs * ops, 0) + 4096 * warmup;
    const gib = bytes / 2 ** 30;
    const exitsPerOp = { emulated: 2100, dom0: 3, card: 2 }[path];
    const ops = modes.reduce((s, [, , , o]) => s + o, 0) + warmup;
    const r: BootResult = {
      lines: `PROBE start entry=linux64 version=1\n${lines.join("\n")}\nPROBE done status=0\n`,
      hostCpuSeconds: path === "dom0" ? { vmm: 0.4 * gib * jitter, dom0: 1.1 * gib * jitter } : path === "card" ? { vmm: 0.2 * gib, card: 0.5 * gib * jitter } : { vmm: 40 * gib * jitter },
      exits: 500 + exitsPerOp * ops,
      tscHz: TSC_HZ,
    };
    return r;
  };
  return { bootProbe, calls };
}
