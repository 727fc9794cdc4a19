// bench:density (density.ts, density-report.ts) without a VM: the figures from given measurements
// (starts per second per core, memory per VM and its parts), the goals at their edges, the table
// and JSON line with and without --memory-only, and the entry: a bad setting is refused.
// guard.test.ts checks its --help, its plain box refusal, an unknown argument and --memory-only
// getting it past the box, as for every bench that takes it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DENSITY_GOALS, densityFigures, densityReport, type DensityInput } from "./density-report.js";
import { BOX_ENV, EXIT_CANNOT_MEASURE } from "./guard.js";

const script = fileURLToPath(new URL("./density.js", import.meta.url));

function hostEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env[BOX_ENV];
  delete env["BENCH_MEMORY_ONLY"];
  return env;
}

const mem = (rssMiB: number, anonMiB: number, fileMiB: number, shmemMiB: number) => ({
  vmRss: rssMiB * 1024, vmHwm: rssMiB * 1024, rssAnon: anonMiB * 1024, rssFile: fileMiB * 1024, rssShmem: shmemMiB * 1024,
});

function measured(over: Partial<DensityInput> = {}): DensityInput {
  return {
    vms: 50, cores: 2, inFlight: 2, memMiB: 128, cmdline: "probe.run=hold", vcpuThreads: "dedicated", memoryOnly: false,
    startSeconds: 5, cpuSeconds: 4, bootMs: [100, 300, 200, 250],
    // 70 MiB before, 470 with all 50 up: 8 MiB each = 6 anon + 1 file + 1 shmem.
    before: mem(70, 60, 9, 1), all: mem(470, 360, 59, 51),
    maxRssKiB: 480 * 1024, stopSeconds: 0.5,
    ...over,
  };
}

test("densityFigures: starts per second per core = VMs / seconds / cores; memory per VM = RSS growth / VMs, and its anon/file/shmem parts", () => {
  const f = densityFigures(measured());
  assert.equal(f.startsPerSecond, 10);
  assert.equal(f.startsPerSecondPerCore, 5);
  assert.equal(f.cpuMsPerStart, 80);
  assert.deepEqual(f.boot, { median: 225, min: 100, max: 300, n: 4 });
  assert.equal(f.mibPerVm, 8);
  assert.equal(f.anonMibPerVm, 6);
  assert.equal(f.fileMibPerVm, 1);
  assert.equal(f.shmemMibPerVm, 1);
});

test("the goals at their edges: 10 starts/s/core and 8 MiB per VM are met, a hair worse is not", () => {
  assert.deepEqual(DENSITY_GOALS, { startsPerSecondPerCore: 10, mibPerVm: 8 });
  const at = densityFigures(measured({ startSeconds: 2.5 }));
  assert.equal(at.startsPerSecondPerCore, 10);
  assert.equal(at.startGoalMet, true);
  assert.equal(at.memoryGoalMet, true);
  const worse = densityFigures(measured({ startSeconds: 2.51, all: mem(470.01, 360, 59, 51) }));
  assert.equal(worse.startGoalMet, false);
  assert.equal(worse.memoryGoalMet, false);
});

test("densityReport: the table and JSON line carry the measured figures and say whether each goal is met", () => {
  const { table, json } = densityReport(measured());
  assert.match(table, /^50 probe VMs \(probe\.run=hold, 128 MiB, 1 vCPU each, dedicated vCPU threads\) from one Node process through the SDK, 2 starts in flight\n/);
  assert.match(table, /^starts per second per core \(2 cores\) +5\.00 +goal ≥ 10 \(Firecracker's design: 5\): NOT met$/m);
  assert.match(table, /^memory per VM, MiB +8\.00 +goal ≤ 8: met$/m);
  assert.match(table, /^ +of which anon \/ file \/ shmem \(guest RAM\) +6\.00 \/ 1\.00 \/ 1\.00$/m);
  assert.match(table, /^boot, create\(\) to "PROBE hold", ms +225 \(100–300\) +median \(min–max\)$/m);
  assert.match(table, /^max RSS of the process \(VmHWM\), MiB +480\.0$/m);
  assert.match(table, /^stop all 50 +0\.50 s$/m);
  assert.deepEqual(json, {
    bench: "density", vms: 50, cores: 2, in_flight: 2, mem_mib: 128, cmdline: "probe.run=hold", vcpu_threads: "dedicated", memory_only: false,
    start_seconds: 5, starts_per_second: 10, starts_per_second_per_core: 5, boot_ms: { median: 225, min: 100, max: 300 },
    cpu_ms_per_start: 80, stop_seconds: 0.5, goal_starts_per_second_per_core: 10, start_goal_met: false,
    rss_before_mib: 70, rss_all_mib: 470, mib_per_vm: 8, mib_per_vm_anon: 6, mib_per_vm_file: 1, mib_per_vm_shmem: 1,
    max_rss_mib: 480, goal_mib_per_vm: 8, memory_goal_met: true,
  });
});

test("densityReport --memory-only: the memory figures alone, no start rate, boot time, CPU or stop time", () => {
  const { table, json } = densityReport(measured({ memoryOnly: true }));
  assert.match(table, /memory only \(--memory-only\)/);
  assert.doesNotMatch(table, /starts per second|boot, create|CPU per start|stop all/);
  assert.match(table, /^memory per VM, MiB +8\.00 +goal ≤ 8: met$/m);
  assert.equal(json["memory_only"], true);
  for (const k of ["start_seconds", "starts_per_second", "starts_per_second_per_core", "boot_ms", "cpu_ms_per_start", "stop_seconds", "start_goal_met"]) {
    assert.equal(k in json, false, k);
  }
  assert.equal(json["mib_per_vm"], 8);
});

test("bench:density refuses a bad BENCH_VCPU_THREADS, and pooled runs a libuv pool too small for them, before it starts any VM", () => {
  const bad = spawnSync(process.execPath, [script], { env: { ...hostEnv(), BENCH_VCPU_THREADS: "dedicated,shared" }, encoding: "utf8", timeout: 30_000 });
  assert.equal(bad.status, EXIT_CANNOT_MEASURE);
  assert.match(bad.stderr, /^bench:density: BENCH_VCPU_THREADS must be a comma-separated list of dedicated, pooled, got "dedicated,shared"\n$/);
  const small = spawnSync(process.execPath, [script], {
    env: { ...hostEnv(), BENCH_VCPU_THREADS: "pooled", BENCH_VMS: "10", UV_THREADPOOL_SIZE: "8" },
    encoding: "utf8",
    timeout: 30_000,
  });
  assert.equal(small.status, EXIT_CANNOT_MEASURE);
  assert.match(small.stderr, /^bench:density: 10 pooled vCPUs need UV_THREADPOOL_SIZE of at least 12 \(it is 8; npm run bench:density sets it from BENCH_VMS\)\n$/);
  assert.equal(small.stdout, "");
});

test("bench:density refuses a bad BENCH_VMS or BENCH_DENSITY_IN_FLIGHT before it starts any VM", () => {
  for (const [k, v] of [["BENCH_VMS", "ten"], ["BENCH_VMS", "10001"], ["BENCH_DENSITY_IN_FLIGHT", "0"]] as const) {
    const r = spawnSync(process.execPath, [script], { env: { ...hostEnv(), [k]: v }, encoding: "utf8", timeout: 30_000 });
    assert.equal(r.status, EXIT_CANNOT_MEASURE, `${k}=${v}`);
    assert.match(r.stderr, new RegExp(`^bench:density: ${k} must be a whole number from 1 to 10000, got "${v}"\\n$`));
    assert.equal(r.stdout, "");
  }
});
