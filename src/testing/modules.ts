// For tests that guard what a process or a thread loads: the ES modules a fresh `node` resolves
// while it loads the given entries (a module-resolution hook lists each one), file: URLs relative
// to the repository (dist/...), node: builtins as they are. What an entry does once loaded (a
// worker entry throws outside a worker) does not matter: every static import is resolved first.
// CommonJS `require` (koffi; the lazily loaded ASN.1 libraries) goes past the hook.

import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const HOOK = `export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  process.stderr.write("LOADED " + r.url + "\\n");
  return r;
}
`;

/** The modules loading `entries` (paths relative to the repository, e.g. "dist/vmm/vcpu-worker.js") resolves, each once. */
export function modulesLoadedBy(entries: readonly string[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), "tv-modules-"));
  try {
    const hook = join(dir, "hook.mjs");
    writeFileSync(hook, HOOK);
    const register = `data:text/javascript,import { register } from "node:module"; register(${JSON.stringify(pathToFileURL(hook).href)});`;
    const urls = entries.map((e) => pathToFileURL(join(ROOT, e)).href);
    const script = `for (const u of ${JSON.stringify(urls)}) { try { await import(u); } catch {} }`;
    const r = spawnSync(process.execPath, ["--import", register, "--input-type=module", "-e", script], { encoding: "utf8" });
    const root = pathToFileURL(ROOT).href;
    const loaded = r.stderr
      .split("\n")
      .filter((l) => l.startsWith("LOADED "))
      .map((l) => l.slice("LOADED ".length).replace(root, ""));
    return [...new Set(loaded)];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
