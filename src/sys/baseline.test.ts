// The C baseline of bench:exits: it compiles against this host's <linux/kvm.h> with -Wall -Werror,
// and its binding carries a failed KVM_RUN's errno back (no /dev/kvm needed: an invalid descriptor
// fails the ioctl before the kvm_run pointer is ever touched). Its run on a real vCPU is in
// src/vmm/vm.test.ts, with the other KVM integration tests.
import { test } from "node:test";
import assert from "node:assert/strict";
import { C_LOOP_RUN_FAILED, loadCExitLoop } from "./baseline.js";
import { errnoValue } from "./errors.js";

test("the C exit loop compiles and reports a KVM_RUN that failed (EBADF) as run-failed with the errno", () => {
  const loop = loadCExitLoop();
  const r = loop(-1, 0n, -1);
  assert.deepEqual(r, { end: C_LOOP_RUN_FAILED, pioExits: 0, mmioExits: 0, interrupted: 0, detail: errnoValue("EBADF") });
});
