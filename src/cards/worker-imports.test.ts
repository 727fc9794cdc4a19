// Each card runs in a worker of its own (an isolate: what it imports it compiles and keeps). A
// card's worker loads the card runtime's worker side and its own kind's model, not the other kinds
// (card.ts imports the kinds only when a card starts) and, but for the NSM, nothing of the security
// chip.

import { test } from "node:test";
import assert from "node:assert/strict";
import { modulesLoadedBy } from "../testing/modules.js";

const KINDS = ["blk", "rng", "nsm", "net", "vsock"];

for (const [kind, model] of [["rng", "rng/kind.js"], ["blk", "blk/kind.js"], ["nsm", "nsm/model.js"]] as const) {
  test(`a ${kind} card's worker loads its own model and no other kind${kind === "nsm" ? "" : ", nor the security chip or any npm package"}`, (t) => {
    const ours = modulesLoadedBy(["dist/cards/card-worker.js", `dist/devices/virtio/${model}`]).filter((m) => !m.startsWith("node:"));
    assert.ok(ours.includes("dist/cards/card-worker.js") && ours.includes(`dist/devices/virtio/${model}`), ours.join(", "));
    const others = KINDS.filter((k) => k !== kind).join("|");
    for (const m of ours) {
      assert.ok(!new RegExp(`^dist/devices/virtio/(kinds\\.js|(${others})/)`).test(m), `${m} belongs to another kind`);
      assert.ok(!/^(dist\/(vmm|sdk|api|cli|dom0)\/|node_modules\/@peculiar\/)/.test(m), `${m} is not needed by a card`);
      if (kind !== "nsm") assert.ok(!/^(dist\/security\/|node_modules\/)/.test(m), `${m}: only the NSM card needs the security chip or an npm package`);
    }
    t.diagnostic(`${ours.length} of our modules`);
  });
}
