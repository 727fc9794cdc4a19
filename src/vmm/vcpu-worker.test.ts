// A vCPU worker is an isolate of its own, one per vCPU: what it imports it compiles and keeps, per
// vCPU. It loads what the exit loop needs (KVM handles, the buses, the legacy devices, the
// virtio-mmio register file) and nothing of the card runtime, the device models, the security
// chip or the emulated disk and dom0 doorbell (those are imported by the workers of a VM that has
// them, vcpu-thread.ts).

import { test } from "node:test";
import assert from "node:assert/strict";
import { modulesLoadedBy } from "../testing/modules.js";

test("the vCPU worker loads the exit loop's modules only: no npm package, card runtime, device model or security chip", (t) => {
  const loaded = modulesLoadedBy(["dist/vmm/vcpu-worker.js"]);
  const ours = loaded.filter((m) => !m.startsWith("node:"));
  assert.ok(ours.includes("dist/vmm/exit-loop.js") && ours.includes("dist/cards/notify.js"), ours.join(", "));
  for (const m of ours) {
    assert.ok(!m.startsWith("node_modules/"), `no npm package is imported (${m})`);
    assert.ok(
      !/^dist\/(security|dom0|api|sdk|cli|cards\/(?!notify\.js)|devices\/(ata|virtio\/(?!(mmio|queue|spec)\.js))|arch\/x86_64\/(?!layout\.js))/.test(m),
      `${m} is not part of the exit loop`,
    );
  }
  t.diagnostic(`${ours.length} of our modules: ${ours.join(" ")}`);
});
