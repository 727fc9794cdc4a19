// ps / pause / resume / stop against a real API server (over the fake machine: no KVM needed)
// registered in a temporary runtime directory, as `typervisor --api-sock` registers itself.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { startApiServer, registerRunningVm, apiRequest } from "../api/index.js";
import { fakeFactory, fakeKernel, tempDir } from "../api/testing.js";
import { psCommand, vmStateCommand, stopCommand, attestVmCommand } from "./instances.js";
import { readFileSync } from "node:fs";
import { chipInit, chipLoad } from "../security/chip.js";
import { verifyAttestation } from "../security/attestation.js";
import { UsageError } from "./args.js";

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) } }, out, err };
}

test("ps lists a running VM with its state; pause and resume go through its API socket", { timeout: 30_000 }, async (t) => {
  const dir = tempDir();
  const runtime = join(dir, "run");
  const socketPath = join(dir, "vm1.sock");
  const server = await startApiServer({ socketPath, vmFactory: fakeFactory(), id: "vm1", consoleFd: -1 });
  t.after(() => server.close());
  const unregister = registerRunningVm(runtime, { id: "vm1", pid: process.pid, socket: socketPath, vcpus: 1, memMiB: 128, startedAt: Date.now() - 65_000 });
  t.after(unregister);
  await apiRequest(socketPath, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  assert.equal((await apiRequest(socketPath, "PUT", "/actions", { action_type: "InstanceStart" })).status, 204);

  const a = io();
  assert.equal(await psCommand(["--runtime-dir", runtime], a.io), 0);
  const table = a.out.join("");
  assert.match(table, /^ID\s+PID\s+STATE\s+VCPUS\s+MEM\s+UPTIME\s+SOCKET\n/);
  assert.match(table, new RegExp(`vm1\\s+${process.pid}\\s+Running\\s+1\\s+128M\\s+1m0[45]s\\s+`));

  // On a terminal the state is coloured (the column still lines up); NO_COLOR, TERM=dumb or a pipe: plain.
  const tty = io();
  const ttyIo = { ...tty.io, stdout: { ...tty.io.stdout, isTTY: true } };
  await psCommand(["--runtime-dir", runtime], ttyIo, Date.now(), {});
  assert.match(tty.out.join(""), new RegExp(`vm1\\s+${process.pid}\\s+\x1b\\[32mRunning\x1b\\[0m\\s+1\\s+128M`));
  for (const env of [{ NO_COLOR: "1" }, { TERM: "dumb" }]) {
    const plain = io();
    await psCommand(["--runtime-dir", runtime], { ...plain.io, stdout: { ...plain.io.stdout, isTTY: true } }, Date.now(), env);
    assert.doesNotMatch(plain.out.join(""), /\x1b/, JSON.stringify(env));
  }
  assert.doesNotMatch(table, /\x1b/, "not a terminal: no colour");

  const p = io();
  assert.equal(await vmStateCommand("pause", ["vm1", "--runtime-dir", runtime], p.io), 0);
  assert.equal(p.out.join(""), "paused vm1\n");
  const j = io();
  await psCommand(["--runtime-dir", runtime, "--json"], j.io);
  assert.equal((JSON.parse(j.out.join("")) as Array<{ state: string }>)[0]!.state, "Paused");
  const r = io();
  assert.equal(await vmStateCommand("resume", ["vm1", "--runtime-dir", runtime, "--json"], r.io), 0);
  assert.deepEqual(JSON.parse(r.out.join("")), { id: "vm1", state: "Running" });
});

test("pause of a VM that has not started is refused by its API: exit 1 and the API's reason", { timeout: 30_000 }, async (t) => {
  const dir = tempDir();
  const runtime = join(dir, "run");
  const socketPath = join(dir, "vm3.sock");
  const server = await startApiServer({ socketPath, vmFactory: fakeFactory(), id: "vm3", consoleFd: -1 });
  t.after(() => server.close());
  t.after(registerRunningVm(runtime, { id: "vm3", pid: process.pid, socket: socketPath, vcpus: 1, memMiB: 64, startedAt: Date.now() }));
  const p = io();
  assert.equal(await vmStateCommand("pause", ["vm3", "--runtime-dir", runtime], p.io), 1);
  assert.match(p.err.join(""), /^typervisor pause: vm3: .+\n$/);
});

test("stop signals the VMM process and waits until it is gone", { timeout: 30_000 }, async (t) => {
  const dir = tempDir();
  const runtime = join(dir, "run");
  // A stand-in VMM process: it ends on SIGTERM as the real one does.
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  t.after(() => child.kill("SIGKILL"));
  await new Promise((r) => child.once("spawn", r));
  registerRunningVm(runtime, { id: "vm2", pid: child.pid!, socket: join(dir, "none.sock"), vcpus: 2, memMiB: 64, startedAt: Date.now() });
  const s = io();
  assert.equal(await stopCommand(["vm2", "--runtime-dir", runtime], s.io), 0);
  assert.equal(s.out.join(""), "stopped vm2\n");
  const ps = io();
  await psCommand(["--runtime-dir", runtime, "--json"], ps.io);
  assert.deepEqual(JSON.parse(ps.out.join("")), [], "the record of a process that is gone is pruned");
});

test("an unknown VM id or a missing id is a usage error", async () => {
  const runtime = join(tempDir(), "run");
  await assert.rejects(vmStateCommand("pause", ["nope", "--runtime-dir", runtime], io().io), (e: unknown) => e instanceof UsageError && /no running VM "nope"/.test(e.message));
  await assert.rejects(stopCommand(["--runtime-dir", runtime], io().io), /say which VM/);
  await assert.rejects(psCommand(["extra"], io().io), /unexpected argument "extra"/);
});

test("attest --vm fetches a document from the running VM that verifies against the chip root with the nonce", { timeout: 30_000 }, async (t) => {
  const dir = tempDir();
  const runtime = join(dir, "run");
  const chipDir = join(dir, "chip");
  chipInit(chipDir);
  const socketPath = join(dir, "vm4.sock");
  const server = await startApiServer({ socketPath, vmFactory: fakeFactory(), id: "vm4", consoleFd: -1, chipDir });
  t.after(() => server.close());
  t.after(registerRunningVm(runtime, { id: "vm4", pid: process.pid, socket: socketPath, vcpus: 1, memMiB: 64, startedAt: Date.now() }));
  await apiRequest(socketPath, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  assert.equal((await apiRequest(socketPath, "PUT", "/actions", { action_type: "InstanceStart" })).status, 204);

  const out = join(dir, "doc.cbor");
  const a = io();
  assert.equal(await attestVmCommand(["--vm", "vm4", "--nonce", "00c0ffee", "--out", out, "--runtime-dir", runtime], a.io), 0, a.err.join(""));
  const doc = new Uint8Array(readFileSync(out));
  const chip = chipLoad(chipDir);
  const r = verifyAttestation(doc, { root: chip.root.der, nonce: Uint8Array.from([0x00, 0xc0, 0xff, 0xee]) });
  assert.equal(r.ok, true, JSON.stringify(r));
  const wrong = verifyAttestation(doc, { root: chip.root.der, nonce: Uint8Array.from([1]) });
  assert.equal(wrong.ok, false);

  await assert.rejects(attestVmCommand(["--vm", "vm4", "--nonce", "xyz", "--runtime-dir", runtime], io().io), /--nonce must be hex/);
  await assert.rejects(attestVmCommand(["--nonce", "00"], io().io), /needs --vm ID/);
});
