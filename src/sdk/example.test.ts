// examples/sdk-demo.mjs runs end to end: it boots the probe guest, so it needs /dev/kvm.

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { kvmTests } from "../testing/kvm.js";

const kvmTest = kvmTests(import.meta.url);

const example = fileURLToPath(new URL("../../examples/sdk-demo.mjs", import.meta.url));

kvmTest("examples/sdk-demo.mjs boots the probe and exits 0 with the demo's output", { need: "kvm", timeout: 60_000 }, async () => {
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [example], { timeout: 50_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
  assert.equal(code, 0, stderr + stdout);
  assert.match(stdout, /PROBE demo/);
  const last = JSON.parse(stdout.trim().split("\n").at(-1)!);
  assert.deepEqual(last.exit, { kind: "debug-exit", status: 0 });
});

test("examples/sdk-demo.mjs exists and imports only the built package", () => {
  assert.ok(existsSync(example));
});
