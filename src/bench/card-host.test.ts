// `npm run bench:cards` in miniature, so the benchmark cannot rot unnoticed: both hosts start,
// serve every kick with the right block (the benchmark checks each one and fails otherwise), stop,
// and the last line is the JSON the docs quote.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

test("bench:cards runs both card hosts end to end and prints its ratios", () => {
  const script = fileURLToPath(new URL("./card-host.js", import.meta.url));
  const r = spawnSync(process.execPath, [script], {
    env: { ...process.env, BENCH_CARDS_KICKS: "300", BENCH_RUNS: "1" },
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
});
