// What `npm pack` ships (package.json "files"): the CLI, the built library with its workers, the
// probe guest's sources and Makefile — and no test file or test helper (the fakes, the spec
// validator, the box), which would import devDependencies a user does not have.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

test("npm pack ships bin/, dist/ and the guest sources, and no test file or test helper", { timeout: 120_000 }, (t) => {
  // --ignore-scripts: the list is of what is built already (dist/ from this run's build), no rebuild.
  const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT, encoding: "utf8", timeout: 110_000 });
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === "ENOENT") return t.skip("npm is not on PATH: install Node.js with npm to check the package's file list");
  assert.equal(r.status, 0, r.stderr);
  const [pack] = JSON.parse(r.stdout.slice(r.stdout.indexOf("["))) as Array<{ files: Array<{ path: string }> }>;
  const files = pack!.files.map((f) => f.path);
  for (const need of ["package.json", "README.md", "bin/typervisor.js", "dist/index.js", "dist/index.d.ts", "dist/cli/main.js", "dist/vmm/vcpu-worker.js", "dist/cards/card-worker.js", "dist/dom0/backend-main.js", "guest/Makefile", "guest/src/main.c"]) {
    assert.ok(files.includes(need), `${need} is shipped`);
  }
  const helpers = files.filter((p) => /\.test\.(js|d\.ts|js\.map)$/.test(p) || /(^|\/)testing(\.|\/)/.test(p) || /^dist\/api\/spec-validator\./.test(p) || p.startsWith("dist/box/"));
  assert.deepEqual(helpers, [], "no test file or test helper is shipped");
  assert.deepEqual(files.filter((p) => p.startsWith("src/") || p.startsWith("vendor/") || p.startsWith("guest/build/")), [], "no TypeScript source, vendored test data or guest build output");
});
