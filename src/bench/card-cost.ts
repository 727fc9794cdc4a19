// npm run bench:card-cost (BENCH_BASELINE=DIR) — the block card's cost per request, hosted: the
// probe's virtio-blk driver (guest/src/virtio.c as a host library, src/probe/hosted.ts) against a
// blk card on an image in /dev/shm, no VM and no KVM. Per run: the driver's time per 4 KiB request
// at QD1 and QD32, read and write (from its TSC), the card thread's CPU time per request (polling
// included) and the kicks it took. With BENCH_BASELINE=DIR, the same runs of another checkout (built,
// with `npm ci`) alternate with this one's in the same process, and the table gives the ratios —
// the before/after of a change to the card, measured side by side. Each run also measures the
// kernel's floor under the card on the same image from C (src/bench/c-read-floor.c): a pread(2)
// per 4 KiB read, and io_uring in batches of 32.

import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { benchEntry } from "./guard.js";
import type { runHostedProbe as RunHostedProbe } from "../probe/hosted.js";

const HELP = `npm run bench:card-cost — the block card's cost per request, hosted

Measures the card's per-request cost: the probe's virtio-blk driver runs as a host library against a
blk card (no VM) on a 64 MiB image in /dev/shm, 4 KiB random read and write at QD1 and QD32. Per run:
µs per request as the driver sees it, the card thread's CPU µs per request (polling included), kicks
per request. Beside it, from C on the same image (guest/build/c-read-floor, built by npm run build):
a pread(2) per 4 KiB read — the floor under the card's own read — and io_uring reads in batches of
32, with whether the kernel handed them to its worker threads (it does for tmpfs).

Needs no /dev/kvm, but it needs a real host: inside the box (QEMU TCG, TYPERVISOR_BOX=1) it refuses,
as every instruction timed there is translated.

Environment: BENCH_RUNS (runs per checkout, default 5), BENCH_OPS (requests per mode, default 20000),
BENCH_BASELINE=DIR: a second checkout (after npm ci there) measured in the same process, runs
alternating; the table then gives baseline/this ratios (above 1: this checkout is cheaper).
Output: progress on stderr; a table, then one JSON object as the last line, on stdout.
Exit status: 0 measured; 1 a run failed; 2 cannot measure here (the box).
`;

const progress = benchEntry({ name: "bench:card-cost", what: "the block card's cost per request (hosted)", runOn: "a real machine, not an emulator (it needs no KVM)", help: HELP });

const RUNS = Number(process.env["BENCH_RUNS"] ?? 5);
const OPS = Number(process.env["BENCH_OPS"] ?? 20_000);
const IMAGE_BYTES = 64 << 20;
const MODES = ["randread1", "randwrite1", "randread32", "randwrite32"] as const;
type Row = Record<(typeof MODES)[number] | "cardCpuUs" | "kicksPerReq", number>;

/** The C floor (src/bench/c-read-floor.c), as it prints it. */
interface Floor {
  preadNs: number;
  uringBatch32Ns: number | null;
  uringError?: number;
  threadsAfterUring: number;
  getppidNs: number;
}
const FLOOR_PROGRAM = resolve(import.meta.dirname, "../../guest/build/c-read-floor");

function measureFloor(image: string): Floor {
  return JSON.parse(execFileSync(FLOOR_PROGRAM, [image, "320000"], { encoding: "utf8" })) as Floor;
}

const baseline = process.env["BENCH_BASELINE"] ? resolve(process.env["BENCH_BASELINE"]) : undefined;

/** TSC cycles per µs, as the compare report reads it (constant TSC assumed). */
async function tscPerUs(): Promise<number> {
  const { hostTscHz } = await import("../compare/run.js");
  return hostTscHz().hz / 1e6;
}

async function load(root: string): Promise<typeof RunHostedProbe> {
  return ((await import(pathToFileURL(join(root, "dist/probe/hosted.js")).href)) as { runHostedProbe: typeof RunHostedProbe }).runHostedProbe;
}

async function measure(run: typeof RunHostedProbe, image: string, perUs: number): Promise<Row> {
  const r = await run("blk-bench", { devices: [{ kind: "blk", config: { path: image, id: "bench" } }] }, `probe.blk.bytes=${IMAGE_BYTES} probe.blk.bench.n=${OPS} probe.blk.seq.n=4 probe.blk.warmup=256`);
  try {
    if (r.status !== 0) throw new Error(`the probe's blk-bench ended with status ${r.status}`);
    const m = r.cards[0]!.metrics();
    const row = { cardCpuUs: m.cpuMicros / m.requests, kicksPerReq: m.kicks / m.requests } as Row;
    for (const l of r.lines) {
      if (l.name !== "blk-bench" || l.fields["bs"] !== "4096") continue;
      row[`${l.fields["mode"]}${l.fields["qd"]}` as (typeof MODES)[number]] = Number(l.fields["tsc"]) / perUs / Number(l.fields["ops"]);
    }
    for (const k of MODES) if (row[k] === undefined) throw new Error(`blk-bench printed no ${k} line`);
    return row;
  } finally {
    await r.close();
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

const dir = mkdtempSync(join("/dev/shm", "tv-card-cost-"));
try {
  const image = join(dir, "disk.img");
  writeFileSync(image, Buffer.alloc(IMAGE_BYTES, 0x5a));
  const perUs = await tscPerUs();
  if (!existsSync(FLOOR_PROGRAM)) throw new Error(`${FLOOR_PROGRAM} is missing: run "npm run build:guest" (it compiles src/bench/c-read-floor.c)`);
  const floors: Floor[] = [];
  const sides: Array<{ name: string; run: typeof RunHostedProbe; rows: Row[] }> = [{ name: "this", run: await load(resolve(import.meta.dirname, "../..")), rows: [] }];
  if (baseline !== undefined) sides.unshift({ name: "baseline", run: await load(baseline), rows: [] });
  for (let i = 0; i < RUNS; i++) {
    for (const s of i % 2 === 0 ? sides : [...sides].reverse()) {
      progress(`run ${i + 1}/${RUNS}: ${s.name} (${OPS} requests per mode)`);
      s.rows.push(await measure(s.run, image, perUs));
    }
    progress(`run ${i + 1}/${RUNS}: the C floor (pread, io_uring)`);
    floors.push(measureFloor(image));
  }
  const keys = [...MODES, "cardCpuUs", "kicksPerReq"] as const;
  const label: Record<(typeof keys)[number], string> = {
    randread1: "4K rand read QD1, µs/request", randwrite1: "4K rand write QD1, µs/request",
    randread32: "4K rand read QD32, µs/request", randwrite32: "4K rand write QD32, µs/request",
    cardCpuUs: "card thread CPU, µs/request", kicksPerReq: "kicks per request",
  };
  const med = (s: (typeof sides)[number], k: (typeof keys)[number]): number => median(s.rows.map((r) => r[k]));
  const out: Record<string, unknown> = { runs: RUNS, opsPerMode: OPS };
  const header = ["", ...sides.map((s) => (s.name === "this" ? "this checkout" : `baseline ${baseline}`)), ...(baseline ? ["baseline/this"] : [])];
  const lines = [header];
  for (const k of keys) {
    const vals = sides.map((s) => med(s, k));
    const row = [label[k], ...vals.map((v) => (k === "kicksPerReq" ? v.toFixed(4) : v.toFixed(2)))];
    out[k] = Object.fromEntries(sides.map((s, i) => [s.name, vals[i]]));
    if (baseline !== undefined && vals[1]! > 0) {
      row.push((vals[0]! / vals[1]!).toFixed(2));
      (out[k] as Record<string, number>)["ratio_baseline_vs_this"] = vals[0]! / vals[1]!;
    }
    lines.push(row);
  }
  const widths = header.map((_, c) => Math.max(...lines.map((l) => (l[c] ?? "").length)));
  for (const l of lines) process.stdout.write(l.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ") + "\n");
  process.stdout.write(`median of ${RUNS} runs; hosted (no VM): the probe's driver and the card in one process, image in /dev/shm\n`);
  const floorMed = (k: "preadNs" | "getppidNs"): number => median(floors.map((f) => f[k])) / 1000;
  const uring = floors.map((f) => f.uringBatch32Ns).filter((v): v is number => v !== null);
  const punted = floors.some((f) => f.threadsAfterUring > 1);
  process.stdout.write(`the kernel under the card, from C on the same image (median of ${RUNS}): pread 4 KiB ${floorMed("preadNs").toFixed(2)} µs/read, ` +
    (uring.length === floors.length
      ? `io_uring in batches of 32 ${(median(uring) / 1000).toFixed(2)} µs/read${punted ? " (handed to io_uring's worker threads: this file system cannot read without blocking)" : ""}, `
      : `io_uring unavailable (errno ${floors.find((f) => f.uringBatch32Ns === null)?.uringError}), `) +
    `getppid ${floorMed("getppidNs").toFixed(2)} µs\n`);
  out["floor"] = {
    preadUs: floorMed("preadNs"),
    uringBatch32Us: uring.length === floors.length ? median(uring) / 1000 : null,
    uringPunted: punted,
    getppidUs: floorMed("getppidNs"),
  };
  process.stdout.write(JSON.stringify(out) + "\n");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
