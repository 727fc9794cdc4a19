// The benchmarks' entry checks (guard.ts): inside the box (TYPERVISOR_BOX=1) each one refuses in one
// line on stderr with exit 2 before doing any work; --help says what it measures and that it needs a
// real host; an argument it does not take is refused. None of this needs KVM.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { BOX_ENV, EXIT_CANNOT_MEASURE, boxRefusal, inBox } from "./guard.js";

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
    const r = runBench(b.file, [], { ...hostEnv(), TYPERVISOR_BOX: "1", BENCH_RUNS: "1", BENCH_CARDS_KICKS: "10", BENCH_EXITS_N: "10", BENCH_BLK_MIB: "1", BENCH_OPS: "10" });
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
}
