// Firecracker's getting-started sequence (boot-source, machine-config, InstanceStart) over the API
// socket, booting the probe guest on /dev/kvm (in the box where this host has none: src/testing/kvm.ts).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { startApiServer } from "./server.js";
import { apiRequest } from "./client.js";
import { tempDir } from "./testing.js";
import { probePath } from "../probe/path.js";
import { parseProbeLines, findLine } from "../probe/probe-lines.js";
import type { VmExit } from "../vmm/vm.js";
import { kvmTests } from "../testing/kvm.js";

const kvmTest = kvmTests(import.meta.url);


kvmTest("getting started: PUT boot-source, machine-config, serial, InstanceStart boots the probe to a clean exit", { need: "kvm", timeout: 90_000 }, async () => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, consoleFd: -1 });
  try {
    const exitP = new Promise<VmExit>((r) => h.once("exit", r));
    const put = async (p: string, b: unknown) => {
      const r = await apiRequest(sock, "PUT", p, b);
      assert.equal(r.status, 204, `${p}: ${r.text}`);
    };
    await put("/boot-source", { kernel_image_path: probePath(), boot_args: "probe.run=demo" });
    await put("/machine-config", { vcpu_count: 1, mem_size_mib: 128 });
    await put("/serial", { serial_out_path: join(dir, "serial.out") });
    await put("/metrics", { metrics_path: join(dir, "metrics.json") });
    await put("/actions", { action_type: "InstanceStart" });
    const timer = setTimeout(() => h.vm?.stop("test timeout"), 60_000);
    const exit = await exitP;
    clearTimeout(timer);
    const out = readFileSync(join(dir, "serial.out"), "utf8");
    assert.deepEqual(exit, { kind: "debug-exit", status: 0 }, out);
    const lines = parseProbeLines(out);
    assert.ok(findLine(lines, "demo"), out);
    const info = (await apiRequest(sock, "GET", "/")).body as Record<string, unknown>;
    assert.deepEqual(info["typervisor_exit"], exit);
    const m = readFileSync(join(dir, "metrics.json"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(m.at(-1).vcpu.exit_io_out > 0);
  } finally {
    await h.close();
  }
});

kvmTest("pause and resume a real guest over the API", { need: "kvm", timeout: 90_000 }, async () => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, consoleFd: -1 });
  try {
    await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: probePath(), boot_args: "probe.run=demo" });
    const r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
    assert.equal(r.status, 204, r.text);
    const p = await apiRequest(sock, "PATCH", "/vm", { state: "Paused" });
    // The demo may already have finished: then the VM has stopped and says so.
    if (p.status === 204) {
      assert.equal(((await apiRequest(sock, "GET", "/")).body as { state: string }).state, "Paused");
      assert.equal((await apiRequest(sock, "PATCH", "/vm", { state: "Resumed" })).status, 204);
    } else {
      assert.match(p.text, /stopped/);
    }
  } finally {
    await h.close();
  }
});
