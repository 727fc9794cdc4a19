// `typervisor --version` and `--help` load only the argument parser: each command's code (KVM,
// the FFI layer, the device models, the crypto, the report charts) is imported when that command
// runs. A module-resolution hook in the spawned process lists every module it loads; a file of the
// CLI's bundle (dist/bundle, src/build/bundle.ts) stands for the modules its source map names.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const HOOK = `export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  process.stderr.write("LOADED " + r.url + "\\n");
  return r;
}
`;

/**
 * The modules a file the hook saw stands for, relative to the repository: a bundle file's sources
 * (src/x.ts as the dist/x.js tsc makes of it, a package's file as it is), any other file itself.
 */
function sourcesOf(rel: string): string[] {
  if (!rel.startsWith("dist/bundle/")) return [rel];
  const map = JSON.parse(readFileSync(join(ROOT, `${rel}.map`), "utf8")) as { sources: string[] };
  return map.sources.map((s) => relative(ROOT, resolve(join(ROOT, "dist/bundle"), s)).replace(/^src\/(.*)\.ts$/, "dist/$1.js"));
}

/** The files `typervisor <args>` loads (file: and node: URLs, relative to the repository for ours), the modules they stand for, and its stdout. */
function loaded(args: string[]): { files: string[]; modules: string[]; stdout: string; ms: number } {
  const dir = mkdtempSync(join(tmpdir(), "tv-startup-"));
  try {
    const hook = join(dir, "hook.mjs");
    writeFileSync(hook, HOOK);
    const register = `data:text/javascript,import { register } from "node:module"; register(${JSON.stringify(pathToFileURL(hook).href)});`;
    const t0 = performance.now();
    const r = spawnSync(process.execPath, ["--import", register, join(ROOT, "bin/typervisor.js"), ...args], { encoding: "utf8" });
    const ms = performance.now() - t0;
    assert.equal(r.status, 0, r.stderr);
    const root = pathToFileURL(ROOT).href;
    const files = r.stderr
      .split("\n")
      .filter((l) => l.startsWith("LOADED "))
      .map((l) => l.slice("LOADED ".length).replace(root, ""));
    const modules = files.flatMap((m) => (m.includes(":") ? [m] : sourcesOf(m)));
    return { files, modules, stdout: r.stdout, ms };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const args of [["--version"], ["--help"], ["help", "compare"]]) {
  test(`typervisor ${args.join(" ")} loads the argument parser and nothing of the VM, the FFI layer or the crypto`, (t) => {
    const { files, modules, stdout, ms } = loaded(args);
    assert.ok(stdout.length > 0);
    const ours = modules.filter((m) => !m.includes(":"));
    for (const m of ours) {
      assert.ok(!/^node_modules\//.test(m), `no dependency is loaded (${m})`);
      assert.ok(!/^dist\/(sys|kvm|vmm\/(?!limits\.js)|devices|cards|memory|security\/(?!chip-dir\.js)|api|sdk|compare\/report)/.test(m), `${m} is not needed to print ${args.join(" ")}`);
    }
    assert.ok(ours.includes("dist/cli/main.js") && ours.includes("dist/cli/args.js"), ours.join(", "));
    assert.ok(files.includes("dist/bundle/cli.js"), `bin/typervisor.js runs the CLI's bundle: ${files.join(", ")}`);
    t.diagnostic(`${ours.length} of our modules loaded; ${ms.toFixed(0)} ms with the hook (a bare run is measured by npm run bench:start)`);
  });
}
