// The API's structured logger: a record is one JSON line, whatever its fields hold.
import { test } from "node:test";
import assert from "node:assert/strict";
import { JsonLogger } from "./logger.js";

test("a crash exit with bigint registers is logged (as hex strings), not thrown: the VMM outlives its guest's crash", () => {
  const lines: string[] = [];
  const log = new JsonLogger((l) => lines.push(l));
  const exit = { kind: "crash", vcpu: 0, reason: "shutdown", detail: "triple fault", state: { regs: { rip: 0xffffffff81000000n, rsp: 0n } } };
  assert.doesNotThrow(() => log.log("Error", "vmm", "microVM stopped", { exit }));
  assert.equal(lines.length, 1);
  assert.ok(lines[0]!.endsWith("\n"));
  const rec = JSON.parse(lines[0]!) as { level: string; msg: string; exit: { reason: string; state: { regs: { rip: string; rsp: string } } } };
  assert.equal(rec.level, "Error");
  assert.equal(rec.msg, "microVM stopped");
  assert.equal(rec.exit.reason, "shutdown");
  assert.deepEqual(rec.exit.state.regs, { rip: "0xffffffff81000000", rsp: "0x0" });
});

test("a field JSON cannot write (a cycle) still gives a line that says so", () => {
  const lines: string[] = [];
  const log = new JsonLogger((l) => lines.push(l));
  const loop: Record<string, unknown> = {};
  loop["self"] = loop;
  assert.doesNotThrow(() => log.log("Warning", "api", "odd", { loop }));
  const rec = JSON.parse(lines[0]!) as { msg: string; unloggable: string };
  assert.equal(rec.msg, "odd");
  assert.match(rec.unloggable, /circular/i);
});
