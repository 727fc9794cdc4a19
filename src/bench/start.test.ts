// bench:start (start.ts, start-report.ts) without a VM: the order of the boots, the table and the
// JSON line from given samples (medians, ratios, the cost of a further vCPU, --memory-only), and
// the entry: a bad BENCH_RUNS is refused. guard.test.ts checks its --help, its plain box refusal,
// an unknown argument and --memory-only getting it past the box, as for every bench that takes it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { caseKey, runOrder, startCases, startReport, type StartSample } from "./start-report.js";
import { BOX_ENV, EXIT_CANNOT_MEASURE } from "./guard.js";

const script = fileURLToPath(new URL("./start.js", import.meta.url));

function hostEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env[BOX_ENV];
  delete env["BENCH_MEMORY_ONLY"];
  return env;
}

test("startCases: typervisor and qemu at each vCPU count; runOrder reverses every other run so neither side always goes first", () => {
  const cases = startCases([1, 2]);
  assert.deepEqual(cases.map(caseKey), ["typervisor:1", "qemu:1", "typervisor:2", "qemu:2"]);
  assert.deepEqual(runOrder(cases, 0).map(caseKey), ["typervisor:1", "qemu:1", "typervisor:2", "qemu:2"]);
  assert.deepEqual(runOrder(cases, 1).map(caseKey), ["qemu:2", "typervisor:2", "qemu:1", "typervisor:1"]);
  assert.deepEqual(runOrder(cases, 2), cases);
  assert.deepEqual(cases.map(caseKey), ["typervisor:1", "qemu:1", "typervisor:2", "qemu:2"], "runOrder leaves its input alone");
});

const s = (firstByteMs: number, exitMs: number, maxRssMiB: number): StartSample => ({ firstByteMs, exitMs, maxRssKiB: maxRssMiB * 1024 });

function samples(): Map<string, StartSample[]> {
  return new Map([
    ["typervisor:1", [s(300, 400, 90), s(200, 310, 80), s(250, 350, 85)]],
    ["qemu:1", [s(100, 200, 30), s(80, 150, 34), s(90, 180, 32)]],
    ["typervisor:2", [s(260, 380, 110), s(240, 360, 100), s(250, 370, 105)]],
    ["qemu:2", [s(95, 190, 33), s(85, 170, 31), s(90, 185, 32)]],
  ]);
}

const input = { runs: 3, memMiB: 128, cmdline: "probe.run=demo", rssSource: "GNU time %M", memoryOnly: false, vcpuCounts: [1, 2], vcpuThreads: "dedicated" as const };

test("startReport: medians with min–max per side and vCPU count, typervisor/qemu ratios of the medians, and the RSS each further vCPU adds", () => {
  const { table, json } = startReport({ ...input, samples: samples() });
  const lines = table.trimEnd().split("\n");
  assert.match(lines[0]!, /^the probe demo \(probe\.run=demo, 128 MiB; typervisor with dedicated vCPU threads\), one process per boot; median of 3 runs \(min–max\), times from spawn\(\)$/);
  assert.match(table, /^1 vCPU: first console byte, ms +250\.0 \(200\.0–300\.0\) +90\.0 \(80\.0–100\.0\) +2\.78$/m);
  assert.match(table, /^1 vCPU: exit, ms +350\.0 \(310\.0–400\.0\) +180\.0 \(150\.0–200\.0\) +1\.94$/m);
  assert.match(table, /^1 vCPU: max RSS, MiB +85\.0 \(80\.0–90\.0\) +32\.0 \(30\.0–34\.0\) +2\.66$/m);
  assert.match(table, /^2 vCPUs: max RSS, MiB +105\.0 \(100\.0–110\.0\) +32\.0 \(31\.0–33\.0\) +3\.28$/m);
  // (105 − 85) / 1 = 20 MiB against (32 − 32) = 0: no ratio of a zero.
  assert.match(table, /^each further vCPU \(1→2\): max RSS, MiB +20\.00 +0\.00 +—$/m);
  // Nor of a few KiB, the spread of max RSS (GNU time's resolution is 4 KiB): 20 MiB over 4 KiB is no figure.
  const nearZero = samples();
  nearZero.set("qemu:2", nearZero.get("qemu:2")!.map((s) => ({ ...s, maxRssKiB: s.maxRssKiB + 4 })));
  assert.match(startReport({ ...input, samples: nearZero }).table, /^each further vCPU \(1→2\): max RSS, MiB +20\.00 +0\.00 +—$/m);
  assert.equal(lines.at(-1), "max RSS: GNU time %M");
  assert.equal(json["bench"], "start");
  assert.equal(json["memory_only"], false);
  assert.equal(json["vcpu_threads"], "dedicated");
  assert.deepEqual((json["typervisor"] as Record<string, unknown>)["vcpus_1"], {
    first_byte_ms: { median: 250, min: 200, max: 300 },
    exit_ms: { median: 350, min: 310, max: 400 },
    max_rss_mib: { median: 85, min: 80, max: 90 },
  });
  assert.deepEqual((json["ratio_typervisor_vs_qemu"] as Record<string, unknown>)["vcpus_1"], { first_byte_ms: 2.778, exit_ms: 1.944, max_rss_mib: 2.656 });
  assert.deepEqual(json["rss_per_further_vcpu_mib"], { typervisor: 20, qemu: 0, ratio: null });
  assert.doesNotThrow(() => JSON.parse(JSON.stringify(json)));
});

test("startReport --memory-only: only the max RSS rows and keys; no time is printed or put in the JSON line", () => {
  const { table, json } = startReport({ ...input, memoryOnly: true, samples: samples() });
  assert.doesNotMatch(table, /first console byte|exit, ms/);
  assert.match(table, /memory only \(--memory-only: no times\)/);
  assert.match(table, /^1 vCPU: max RSS, MiB /m);
  assert.match(table, /^each further vCPU/m);
  assert.equal(json["memory_only"], true);
  assert.deepEqual(Object.keys((json["qemu"] as Record<string, Record<string, unknown>>)["vcpus_2"]!), ["max_rss_mib"]);
  assert.deepEqual((json["ratio_typervisor_vs_qemu"] as Record<string, unknown>)["vcpus_2"], { max_rss_mib: 3.281 });
  assert.doesNotMatch(JSON.stringify(json), /_ms/);
});

test("startReport with typervisor alone (no QEMU, memory only): its column, no ratio, its RSS per further vCPU", () => {
  const m = samples();
  for (const k of [...m.keys()]) if (k.startsWith("qemu:")) m.delete(k);
  const { table, json } = startReport({ ...input, memoryOnly: true, samples: m, sides: ["typervisor"] });
  assert.match(table, /no QEMU here: typervisor alone/);
  assert.doesNotMatch(table, /qemu/);
  assert.match(table, /^each further vCPU \(1→2\): max RSS, MiB +20\.00$/m);
  assert.equal(json["qemu"], undefined);
  assert.equal(json["ratio_typervisor_vs_qemu"], undefined);
  assert.deepEqual(json["rss_per_further_vcpu_mib"], { typervisor: 20 });
  assert.deepEqual(startCases([1, 2], ["typervisor"]), [{ side: "typervisor", vcpus: 1 }, { side: "typervisor", vcpus: 2 }]);
});

test("startReport with the Node.js floor: the floor's median and range, what a worker and the optimizing compiler add to it, and typervisor at the fewest vCPUs over it", () => {
  const floor = { bare: [45 * 1024, 44 * 1024, 46 * 1024], worker: [55 * 1024, 54.5 * 1024, 56 * 1024], jit: [49.5 * 1024, 49 * 1024, 50 * 1024], firstByteMs: [41, 40, 45] };
  const { table, json } = startReport({ ...input, memoryOnly: true, samples: samples(), floor });
  assert.match(table, /^Node\.js \+ koffi, no VM \(the floor\): max RSS, MiB +45\.0 \(44\.0–46\.0\)\s*$/m);
  assert.match(table, /^one idle worker thread on that floor, MiB +10\.00\s*$/m);
  assert.match(table, /^V8's optimizing compiler used once on that floor, MiB +4\.50\s*$/m);
  // 85 (typervisor's median at 1 vCPU) − 45.
  assert.match(table, /^typervisor at 1 vCPU over the floor, MiB +40\.00\s*$/m);
  // Memory only: the floor's time is not printed.
  assert.doesNotMatch(table, /first stdout byte/);
  assert.deepEqual(json["node_floor"], { max_rss_mib: { median: 45, min: 44, max: 46 }, worker_thread_mib: 10, first_optimizing_compile_mib: 4.5, typervisor_vcpus_1_over_floor_mib: 40 });
  const timed = startReport({ ...input, samples: samples(), floor });
  assert.match(timed.table, /^Node\.js \+ koffi, no VM \(the floor\): first stdout byte, ms +41\.0 \(40\.0–45\.0\)\s*$/m);
  assert.deepEqual((timed.json["node_floor"] as Record<string, unknown>)["first_byte_ms"], { median: 41, min: 40, max: 45 });
  assert.throws(() => startReport({ ...input, samples: samples(), floor: { bare: [], worker: [], jit: [], firstByteMs: [] } }), /no samples of the Node\.js floor/);
  assert.throws(() => startReport({ ...input, samples: samples(), floor: { ...floor, jit: [] } }), /no samples of the Node\.js floor/);
  assert.equal(startReport({ ...input, samples: samples() }).json["node_floor"], undefined);
});

test("startReport names a case with no samples instead of printing a figure for it", () => {
  const m = samples();
  m.set("qemu:2", []);
  assert.throws(() => startReport({ ...input, samples: m }), /no samples for qemu at 2 vCPUs/);
});

test("bench:start inside the box without --memory-only refuses and says that --memory-only would run; BENCH_MEMORY_ONLY=0 is not it", () => {
  const r = spawnSync(process.execPath, [script], { env: { ...hostEnv(), TYPERVISOR_BOX: "1", BENCH_MEMORY_ONLY: "0", BENCH_RUNS: "0" }, encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, EXIT_CANNOT_MEASURE);
  assert.match(r.stderr, /^bench:start measures VM start times; inside the box \(QEMU TCG\) its figures mean nothing — run it on a host with KVM \(--memory-only prints its memory figures alone: those are real in the box\)\n$/);
});

test("bench:start refuses a BENCH_VCPU_THREADS that is not a kind of vCPU thread, before it measures anything", () => {
  const r = spawnSync(process.execPath, [script], { env: { ...hostEnv(), BENCH_VCPU_THREADS: "shared" }, encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, EXIT_CANNOT_MEASURE);
  assert.equal(r.stderr, `bench:start: BENCH_VCPU_THREADS must be dedicated, pooled or main, got "shared"\n`);
  assert.equal(r.stdout, "");
});

test("bench:start refuses a BENCH_RUNS that is not a whole number, before it measures anything", () => {
  for (const v of ["abc", "2.5", "-1", "1001"]) {
    const r = spawnSync(process.execPath, [script], { env: { ...hostEnv(), BENCH_RUNS: v }, encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, EXIT_CANNOT_MEASURE, v);
    assert.equal(r.stderr, `bench:start: BENCH_RUNS must be a whole number from 1 to 1000, got "${v}"\n`);
    assert.equal(r.stdout, "");
  }
});
