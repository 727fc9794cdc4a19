import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { BUNDLE_DIR, keepModuleUrl } from "./bundle.js";

test("keepModuleUrl: a module's import.meta.url becomes its own dist URL as seen from the bundle's folder; other sources are left as they are", () => {
  const src = `const w = new URL("./vcpu-worker.js", import.meta.url);\nconst r = createRequire(import.meta.url);\n`;
  const out = keepModuleUrl(src, "/p/dist/vmm/builder.js", "/p/dist/bundle");
  assert.equal(out, `const w = new URL("./vcpu-worker.js", new URL("../vmm/builder.js", import.meta.url).href);\nconst r = createRequire(new URL("../vmm/builder.js", import.meta.url).href);\n`);
  // What the rewritten expression evaluates to in a bundle file: the module's original URL.
  const inBundle = new URL("file:///p/dist/bundle/chunk-X.js");
  assert.equal(new URL("./vcpu-worker.js", new URL("../vmm/builder.js", inBundle).href).href, "file:///p/dist/vmm/vcpu-worker.js");
  assert.equal(keepModuleUrl("export const a = 1;\n", "/p/dist/a.js", "/p/dist/bundle"), "export const a = 1;\n");
});

test("keepModuleUrl: new URL(\"./x.js\", import.meta.url) naming a module bundled as an entry of its own names that entry's output file", () => {
  const entries = new Map([["/p/dist/vmm/vcpu-worker.js", "vcpu-worker"]]);
  const src = `workerUrl: new URL("./vcpu-worker.js", import.meta.url),\nconst elf = new URL('../../guest/build/probe.elf', import.meta.url);\n`;
  assert.equal(
    keepModuleUrl(src, "/p/dist/vmm/builder.js", "/p/dist/bundle", entries),
    `workerUrl: new URL("./vcpu-worker.js", import.meta.url),\nconst elf = new URL('../../guest/build/probe.elf', new URL("../vmm/builder.js", import.meta.url).href);\n`,
  );
  // The same words from another folder name another module: kept as that module's own URL.
  assert.equal(keepModuleUrl(`new URL("./vcpu-worker.js", import.meta.url)`, "/p/dist/cards/card.js", "/p/dist/bundle", entries), `new URL("./vcpu-worker.js", new URL("../cards/card.js", import.meta.url).href)`);
});

test("keepModuleUrl refuses a module that writes import.meta.url inside a string, naming the file", () => {
  // (Like testing/kvm.ts's marker, spelt otherwise here: that marker makes a file a KVM test file.)
  assert.throws(() => keepModuleUrl(`export const MARK = "tests(import.meta.url)";\n`, "/p/dist/testing/kvm.js", "/p/dist/bundle"), /\/p\/dist\/testing\/kvm\.js: "import\.meta\.url" inside a string/);
  assert.throws(() => keepModuleUrl("const s = `at ${x} import.meta.url`;\n", "/p/dist/b.js", "/p/dist/bundle"), /inside a string/);
  // A quoted string before it on the line, closed: the expression itself, rewritten.
  assert.match(keepModuleUrl(`new URL("../../package.json", import.meta.url)\n`, "/p/dist/cli/main.js", "/p/dist/bundle"), /new URL\("\.\.\/\.\.\/package\.json", new URL\("\.\.\/cli\/main\.js", import\.meta\.url\)\.href\)/);
});

test("the built bundle runs the CLI: bin/typervisor.js --version from dist/bundle/cli.js", () => {
  assert.ok(existsSync(join(BUNDLE_DIR, "cli.js")), "npm run build writes dist/bundle/cli.js");
  const r = spawnSync(process.execPath, [join(BUNDLE_DIR, "..", "..", "bin", "typervisor.js"), "--version"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^typervisor \d+\.\d+\.\d+/);
});
