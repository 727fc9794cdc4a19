// `npm run bench:cards` in miniature, so the benchmark cannot rot unnoticed: both hosts start,
// serve every kick with the right block (the benchmark checks each one and fails otherwise), stop,
// and the last line is the JSON the docs quote.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

test("bench:cards runs both card hosts end to end and prints its ratios", () => {
  const script = fileURLToPath(new URL("./card-host.js", import.meta.url));
  // Without TYPERVISOR_BOX: in the box the bench refuses to measure (guard.test.ts checks that);
  // this run only checks that it still works end to end, not its figures.
  const { TYPERVISOR_BOX: _box, ...env } = process.env;
  const r = spawnSync(process.execPath, [script], {
    env: { ...env, BENCH_CARDS_KICKS: "300", BENCH_RUNS: "1" },
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
  const last = r.stdout.trim().split("\n").at(-1)!;
  const out = JSON.parse(last) as Record<string, number>;
  assert.equal(out["kicks"], 300);
  for (const host of ["worker", "process"]) {
    for (const k of ["startMs", "rssMiB", "p50Us", "p99Us", "kicksPerS"]) {
      const v = out[`${host}_${k}`];
      assert.ok(typeof v === "number" && v > 0, `${host}_${k} = ${v}`);
    }
  }
  assert.ok(out["p50Us_ratio_process_vs_worker"]! > 0);
  // Progress on stderr, one line per host per run; stdout is the table and the JSON line only.
  assert.match(r.stderr, /^bench:cards: run 1\/1: worker \(300 kicks\)$/m);
  assert.match(r.stderr, /^bench:cards: run 1\/1: process done in [\d.]+ s: /m);
  assert.ok(r.stdout.split("\n").every((l) => !l.startsWith("bench:cards:")), "no progress on stdout");
});
