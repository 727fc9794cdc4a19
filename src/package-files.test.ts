// What `npm pack` ships (package.json "files"): the CLI, the built library with its workers, the
// built probe guest (and its hosted drivers, for `typervisor compare --hosted`) with the sources
// and Makefile to rebuild them — and no test file, no test helper (the fakes, the spec validator,
// the box), which would import devDependencies a user does not have, and no object file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** The relative module specifiers a compiled file loads: static and dynamic imports, re-exports, worker URLs. */
function relativeImports(source: string): string[] {
  const out = new Set<string>();
  const patterns = [
    /^\s*(?:import|export)\s[^;]*?\bfrom\s*["'](\.{1,2}\/[^"']+)["']/gm,
    /^\s*import\s*["'](\.{1,2}\/[^"']+)["']/gm,
    /\bimport\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g,
    /\bnew URL\(\s*["'](\.{1,2}\/[^"']+\.js)["']\s*,\s*import\.meta\.url\s*\)/g,
  ];
  for (const re of patterns) for (const m of source.matchAll(re)) out.add(m[1]!);
  return [...out];
}

test("relativeImports finds static, side-effect and dynamic imports, re-exports and worker URLs, and nothing in a bare specifier", () => {
  const src = [
    `import { a } from "./a.js";`,
    `import {\n  b,\n  c,\n} from "../b/c.js";`,
    `export * from "./d.js";`,
    `export { e } from './e.js';`,
    `import "./side.js";`,
    `const m = await import("./lazy.js");`,
    `new Worker(new URL("./worker.js", import.meta.url));`,
    `import koffi from "koffi";`,
    `const elf = new URL("../../guest/build/probe.elf", import.meta.url);`,
  ].join("\n");
  assert.deepEqual(relativeImports(src).sort(), ["../b/c.js", "./a.js", "./d.js", "./e.js", "./lazy.js", "./side.js", "./worker.js"]);
});

test("npm pack ships bin/, dist/, the built probe guest and its sources, and no test file, test helper or object file", { timeout: 120_000 }, (t) => {
  // --ignore-scripts: the list is of what is built already (dist/ and guest/build/ from this run's build), no rebuild.
  const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT, encoding: "utf8", timeout: 110_000 });
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === "ENOENT") return t.skip("npm is not on PATH: install Node.js with npm to check the package's file list");
  assert.equal(r.status, 0, r.stderr);
  const [pack] = JSON.parse(r.stdout.slice(r.stdout.indexOf("["))) as Array<{ files: Array<{ path: string }> }>;
  const files = pack!.files.map((f) => f.path);
  for (const need of [
    "package.json", "README.md", "bin/typervisor.js", "dist/index.js", "dist/index.d.ts", "dist/sdk/errors.js", "dist/cli/main.js",
    "dist/vmm/vcpu-worker.js", "dist/cards/card-worker.js", "dist/dom0/backend-main.js",
    "guest/Makefile", "guest/README.md", "guest/src/main.c", "guest/build/probe.elf", "guest/build/probe-hosted.so",
  ]) {
    assert.ok(files.includes(need), `${need} is shipped`);
  }
  const helpers = files.filter((p) => /\.test\.(js|d\.ts|js\.map)$/.test(p) || /(^|\/)testing(\.|\/)/.test(p) || /^dist\/api\/spec-validator\./.test(p) || p.startsWith("dist/box/"));
  assert.deepEqual(helpers, [], "no test file or test helper is shipped");
  assert.deepEqual(files.filter((p) => p.startsWith("src/") || p.startsWith("vendor/") || p.startsWith(".cache/")), [], "no TypeScript source, vendored test data or cache");
  // Of the guest's build output, what users run: the probe, and the drivers `compare --hosted` loads.
  // Not the objects and linker script, nor the test-only shim and the benchmark's C loop.
  assert.deepEqual(files.filter((p) => p.startsWith("guest/build/")).sort(), ["guest/build/probe-hosted.so", "guest/build/probe.elf"]);
  assert.deepEqual(files.filter((p) => /\.(o|a|ld)$/.test(p)), [], "no object file, archive or generated linker script");

  // Everything a shipped module loads by a relative path is shipped too (a test helper a shipped
  // module imports would fail only where the package is installed).
  const shipped = new Set(files);
  const missing: string[] = [];
  for (const f of files.filter((p) => p.endsWith(".js"))) {
    for (const spec of relativeImports(readFileSync(join(ROOT, f), "utf8"))) {
      const target = normalize(join(dirname(f), spec));
      if (!shipped.has(target)) missing.push(`${f} -> ${spec}`);
    }
  }
  assert.deepEqual(missing, [], "every relative import of a shipped module is shipped");
});
