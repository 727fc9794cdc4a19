import { test } from "node:test";
import assert from "node:assert/strict";
import { exitStatus } from "./run.js";
import { EXIT_OK, EXIT_GUEST_FAILURE, EXIT_CRASH, EXIT_HOST } from "./main.js";

test("how the VM ended maps to the documented exit status", (t) => {
  const stderr = t.mock.method(process.stderr, "write", () => true);
  assert.equal(exitStatus({ kind: "reset" }), EXIT_OK);
  assert.equal(exitStatus({ kind: "poweroff" }), EXIT_OK);
  assert.equal(exitStatus({ kind: "debug-exit", status: 0 }), EXIT_OK);
  assert.equal(exitStatus({ kind: "debug-exit", status: 1 }), EXIT_GUEST_FAILURE);
  assert.equal(exitStatus({ kind: "stopped", by: "signal SIGINT" }), 130);
  assert.equal(exitStatus({ kind: "stopped", by: "signal SIGTERM" }), 143);
  assert.equal(exitStatus({ kind: "stopped", by: "console escape" }), EXIT_OK);
  assert.equal(exitStatus({ kind: "crash", vcpu: 0, reason: "triple fault", detail: "d" }), EXIT_CRASH);
  assert.equal(exitStatus({ kind: "error", vcpu: 0, message: "KVM_RUN failed: EFAULT" }), EXIT_HOST);
  const written = stderr.mock.calls.map((c) => String(c.arguments[0])).join("");
  assert.match(written, /the guest reported failure \(status 1\)/);
  assert.match(written, /guest crashed on vCPU 0: triple fault/);
  assert.match(written, /vCPU 0 failed: KVM_RUN failed: EFAULT/);
});
