// The benchmarks' entry checks (guard.ts): inside the box (TYPERVISOR_BOX=1) each one refuses in one
// line on stderr with exit 2 before doing any work; --help says what it measures and that it needs a
// real host; an argument it does not take is refused; one that takes --memory-only gets past the box
// with it. None of this needs KVM.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { BOX_ENV, EXIT_CANNOT_MEASURE, boxRefusal, entryDecision, envInt, inBox, type BenchEntry } from "./guard.js";

const script = (name: string) => fileURLToPath(new URL(`./${name}.js`, import.meta.url));

/** The environment of this test without the box variable (these tests may themselves run in the box). */
function hostEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env[BOX_ENV];
  return env;
}

function runBench(name: string, args: string[], env: NodeJS.ProcessEnv) {
  return spawnSync(process.execPath, [script(name), ...args], { env, encoding: "utf8", timeout: 30_000 });
}

const BENCHES = [
  { file: "exits", name: "bench:exits", line: "bench:exits measures KVM exit rates; inside the box (QEMU TCG) its figures mean nothing — run it on a host with KVM" },
  { file: "blk", name: "bench:blk", line: "bench:blk measures block I/O rates through KVM; inside the box (QEMU TCG) its figures mean nothing — run it on a host with KVM" },
  {
    file: "card-host",
    name: "bench:cards",
    line: "bench:cards measures worker-thread vs child-process card hosting; inside the box (QEMU TCG) its figures mean nothing — run it on a real machine, not an emulator (it needs no KVM)",
  },
  {
    file: "card-cost",
    name: "bench:card-cost",
    line: "bench:card-cost measures the block card's cost per request (hosted); inside the box (QEMU TCG) its figures mean nothing — run it on a real machine, not an emulator (it needs no KVM)",
  },
  {
    file: "start",
    name: "bench:start",
    // A bad setting it reads after the box check: how a test sees --memory-only get it past the box.
    memoryOnly: { env: { BENCH_RUNS: "0" }, error: 'bench:start: BENCH_RUNS must be a whole number from 1 to 1000, got "0"' },
    line: "bench:start measures VM start times; inside the box (QEMU TCG) its figures mean nothing — run it on a host with KVM (--memory-only prints its memory figures alone: those are real in the box)",
  },
  {
    file: "density",
    name: "bench:density",
    memoryOnly: { env: { BENCH_VMS: "0" }, error: 'bench:density: BENCH_VMS must be a whole number from 1 to 10000, got "0"' },
    line: "bench:density measures microVM start rates and memory per microVM; inside the box (QEMU TCG) its figures mean nothing — run it on a host with KVM (--memory-only prints its memory figures alone: those are real in the box)",
  },
] as const;

test("inBox and boxRefusal read TYPERVISOR_BOX: set to 1 is the box; unset, empty or 0 is not", () => {
  assert.equal(inBox({ TYPERVISOR_BOX: "1" }), true);
  for (const env of [{}, { TYPERVISOR_BOX: "" }, { TYPERVISOR_BOX: "0" }]) {
    assert.equal(inBox(env), false, JSON.stringify(env));
    assert.equal(boxRefusal("bench:x", "things", undefined, env), null);
  }
  assert.equal(
    boxRefusal("bench:x", "things", undefined, { TYPERVISOR_BOX: "1" }),
    "bench:x measures things; inside the box (QEMU TCG) its figures mean nothing — run it on a host with KVM",
  );
  assert.equal(boxRefusal("bench:x", "things", "a real machine", { TYPERVISOR_BOX: "1" }), "bench:x measures things; inside the box (QEMU TCG) its figures mean nothing — run it on a real machine");
});

for (const b of BENCHES) {
  test(`${b.name} inside the box: one line on stderr, exit 2, nothing on stdout, nothing measured`, () => {
    // A tiny workload, so that a bench which did not refuse would still end (and fail here) quickly.
    const r = runBench(b.file, [], { ...hostEnv(), TYPERVISOR_BOX: "1", BENCH_RUNS: "1", BENCH_CARDS_KICKS: "10", BENCH_EXITS_N: "10", BENCH_BLK_MIB: "1", BENCH_OPS: "10", BENCH_VMS: "1" });
    assert.equal(r.status, EXIT_CANNOT_MEASURE, r.stderr);
    assert.equal(r.stderr, `${b.line}\n`);
    assert.equal(r.stdout, "");
  });

  test(`${b.name} --help says what it measures and that it needs a real host; exit 0, even in the box`, () => {
    for (const env of [hostEnv(), { ...hostEnv(), TYPERVISOR_BOX: "1" }]) {
      const r = runBench(b.file, ["--help"], env);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, "");
      assert.ok(r.stdout.startsWith(`npm run ${b.name} — `), r.stdout);
      assert.match(r.stdout, /^Measures /m);
      assert.match(r.stdout, /real host/);
      assert.match(r.stdout, /[Ii]nside the box \(QEMU TCG, TYPERVISOR_BOX=1\) it refuses/);
      assert.match(r.stdout, /^Exit status: /m);
    }
    if (b.file !== "card-host" && b.file !== "card-cost") assert.match(runBench(b.file, ["-h"], hostEnv()).stdout, /Needs KVM on a real host: \/dev\/kvm/);
  });

  test(`${b.name} refuses an argument it does not take: one line, exit 2`, () => {
    const r = runBench(b.file, ["--runs", "3"], { ...hostEnv(), TYPERVISOR_BOX: "1" });
    assert.equal(r.status, 2);
    assert.equal(r.stderr, `${b.name}: unknown argument "--runs" (settings come from the environment; see --help)\n`);
    assert.equal(r.stdout, "");
  });

  if ("memoryOnly" in b) {
    test(`${b.name} --memory-only inside the box gets past the box (here: a bad setting, exit 2), as BENCH_MEMORY_ONLY does`, () => {
      for (const [args, extra] of [[["--memory-only"], {}], [[], { BENCH_MEMORY_ONLY: "1" }], [[], { BENCH_MEMORY_ONLY: "yes" }]] as const) {
        const r = runBench(b.file, [...args], { ...hostEnv(), ...extra, ...b.memoryOnly.env, TYPERVISOR_BOX: "1" });
        assert.equal(r.status, EXIT_CANNOT_MEASURE, r.stderr);
        assert.equal(r.stderr, `${b.memoryOnly.error}\n`);
        assert.equal(r.stdout, "");
      }
    });
  }
}

const plain: BenchEntry = { name: "bench:x", what: "things", help: "npm run bench:x — x" };
const withMemory: BenchEntry = { ...plain, memoryOnly: true };

test("entryDecision: --help or -h wins over everything, its text ends in one newline", () => {
  for (const argv of [["--help"], ["--bogus", "-h"], ["--memory-only", "--help"]]) {
    assert.deepEqual(entryDecision(withMemory, argv, { TYPERVISOR_BOX: "1" }), { action: "help", text: "npm run bench:x — x\n" });
  }
});

test("entryDecision: --memory-only is an unknown argument to a bench that does not take it, in the box or not", () => {
  for (const env of [{}, { TYPERVISOR_BOX: "1" }]) {
    assert.deepEqual(entryDecision(plain, ["--memory-only"], env), {
      action: "refuse",
      line: 'bench:x: unknown argument "--memory-only" (settings come from the environment; see --help)',
    });
  }
  assert.deepEqual(entryDecision(withMemory, ["--memory-only", "--runs"], {}), {
    action: "refuse",
    line: 'bench:x: unknown argument "--runs" (settings come from the environment; see --help)',
  });
});

test("entryDecision: in the box a memoryOnly bench refuses without --memory-only (saying it would run with it), runs with the flag or BENCH_MEMORY_ONLY", () => {
  const box = { TYPERVISOR_BOX: "1" };
  assert.deepEqual(entryDecision(withMemory, [], box), {
    action: "refuse",
    line: "bench:x measures things; inside the box (QEMU TCG) its figures mean nothing — run it on a host with KVM (--memory-only prints its memory figures alone: those are real in the box)",
  });
  assert.deepEqual(entryDecision(withMemory, ["--memory-only"], box), { action: "run", memoryOnly: true });
  assert.deepEqual(entryDecision(withMemory, [], { ...box, BENCH_MEMORY_ONLY: "1" }), { action: "run", memoryOnly: true });
  for (const v of ["", "0"]) assert.equal(entryDecision(withMemory, [], { ...box, BENCH_MEMORY_ONLY: v }).action, "refuse", JSON.stringify(v));
  // BENCH_MEMORY_ONLY means nothing to a bench that does not take it: the box still refuses it.
  assert.equal(entryDecision(plain, [], { ...box, BENCH_MEMORY_ONLY: "1" }).action, "refuse");
});

test("entryDecision outside the box: runs, with memoryOnly only when asked and taken", () => {
  assert.deepEqual(entryDecision(plain, [], {}), { action: "run", memoryOnly: false });
  assert.deepEqual(entryDecision(plain, [], { BENCH_MEMORY_ONLY: "1" }), { action: "run", memoryOnly: false });
  assert.deepEqual(entryDecision(withMemory, [], {}), { action: "run", memoryOnly: false });
  assert.deepEqual(entryDecision(withMemory, ["--memory-only"], {}), { action: "run", memoryOnly: true });
});

test("envInt: the default when unset or empty; a whole number in range; else the sentence naming the variable", () => {
  assert.equal(envInt("BENCH_N", 5, 1, 100, {}), 5);
  assert.equal(envInt("BENCH_N", 5, 1, 100, { BENCH_N: "" }), 5);
  assert.equal(envInt("BENCH_N", 5, 1, 100, { BENCH_N: "7" }), 7);
  assert.equal(envInt("BENCH_N", 5, 1, 100, { BENCH_N: "100" }), 100);
  for (const v of ["0", "101", "2.5", "-3", "1e2", "x", " "]) {
    assert.equal(envInt("BENCH_N", 5, 1, 100, { BENCH_N: v }), `BENCH_N must be a whole number from 1 to 100, got "${v}"`, JSON.stringify(v));
  }
});
