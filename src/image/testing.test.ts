// BootWatch (testing.ts): when a booting kernel's silence counts as a stall.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { BootWatch } from "./testing.js";

test("BootWatch: silence counts only between the kernel's first byte and init, and only past the limit", () => {
  const w = new BootWatch(1000);
  assert.equal(w.stalled(1_000_000), false, "nothing printed yet: the VMM may still be starting");
  w.output("[    0.000000] Linux version 6.1.0\n", 0);
  assert.equal(w.stalled(1000), false, "at the limit, not past it");
  assert.equal(w.stalled(1001), true);
  w.output("[    3.1] pnp: PnP ACPI init\n", 1500);
  assert.equal(w.stalled(2400), false, "output restarts the clock");
  assert.equal(w.stalled(2501), true);
  // The init line, split over two chunks: from then on a quiet guest is a guest at work.
  w.output("[    6.1] Run /in", 3000);
  w.output("it as init process\n", 3001);
  assert.equal(w.stalled(100_000), false);
  w.output("typervisor: typervisor up\n", 100_001);
  assert.equal(w.stalled(200_000), false);
});

test("stallGuard: in the box it stops a guest silent mid-boot and says so; natively it never acts", () => {
  const program = `
    import { stallGuard } from ${JSON.stringify(new URL("./testing.js", import.meta.url).href)};
    let killed = 0;
    const g = stallGuard(() => killed++, 200);
    g.output("[    0.000000] Linux version 6.1.0");
    setTimeout(() => {
      g.stop();
      console.log(JSON.stringify({ killed, line: g.stalled() ?? null }));
    }, 1000);`;
  const run = (env: NodeJS.ProcessEnv): { killed: number; line: string | null } => {
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", program], { encoding: "utf8", env, timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { killed: number; line: string | null };
  };
  const inBox = run({ ...process.env, TYPERVISOR_BOX: "1" });
  assert.equal(inBox.killed, 1);
  assert.match(inBox.line ?? "", /^the guest stalled under nested TCG: its console was silent for 0\.2 s while the kernel booted; stopped$/);
  const env = { ...process.env };
  delete env["TYPERVISOR_BOX"];
  assert.deepEqual(run(env), { killed: 0, line: null });
});
