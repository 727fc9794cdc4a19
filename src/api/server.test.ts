// The API server's own behaviour over the fake machine: console to PUT /serial's file, JSON logs,
// metrics lines and FlushMetrics, Prometheus text, the VM's exit, --config-file, the socket file,
// and the runtime registry.

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { startApiServer } from "./server.js";
import { apiRequest } from "./client.js";
import { configFromFirecrackerJson, parseFirecrackerConfigFile } from "./config.js";
import { FaultError } from "./schema.js";
import { startPrometheusServer, parseHostPort } from "./metrics.js";
import { registerRunningVm, listRunningVms, findRunningVm, defaultRuntimeDir } from "./registry.js";
import { BLOCK, RESET, fakeFactory, fakeKernel, tempDir, text } from "./testing.js";
import type { VmExit } from "../vmm/vm.js";

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("getting-started sequence over the fake machine: serial file, logs, metrics, guest reset ends the VM", async () => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory([[...text("PROBE hello\n"), BLOCK], [BLOCK]]), consoleFd: -1, metricsIntervalMs: 50 });
  const put = (p: string, b: unknown) => apiRequest(sock, "PUT", p, b);
  assert.equal((await put("/logger", { log_path: join(dir, "fc.log"), level: "info", show_log_origin: true })).status, 204);
  assert.equal((await put("/metrics", { metrics_path: join(dir, "metrics.json"), emit_id: true })).status, 204);
  assert.equal((await put("/boot-source", { kernel_image_path: fakeKernel(dir), boot_args: "probe.run=demo" })).status, 204);
  assert.equal((await put("/machine-config", { vcpu_count: 2, mem_size_mib: 64 })).status, 204);
  assert.equal((await put("/serial", { serial_out_path: join(dir, "serial.out") })).status, 204);
  const started = new Promise((r) => h.once("start", r));
  assert.equal((await put("/actions", { action_type: "InstanceStart" })).status, 204);
  await started;
  assert.equal(h.vm?.exitCounters().length, 2);
  await until(() => existsSync(join(dir, "serial.out")) && readFileSync(join(dir, "serial.out"), "utf8") === "PROBE hello\n");
  assert.equal((await put("/actions", { action_type: "FlushMetrics" })).status, 204);
  await until(() => readFileSync(join(dir, "metrics.json"), "utf8").split("\n").length > 2);
  const lines = readFileSync(join(dir, "metrics.json"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const last = lines.at(-1);
  assert.equal(last.id, "anonymous-instance");
  assert.equal(last.put_api_requests.boot_source_count, 1);
  assert.equal(last.put_api_requests.actions_count >= 1, true);
  assert.equal(last.vcpu.exit_io_out, 12);
  assert.equal(last.vcpus.length, 2);
  assert.ok(last.api_latencies_us["PUT /boot-source"].count === 1);
  const exitP = new Promise<VmExit>((r) => h.once("exit", r));
  await h.close();
  assert.deepEqual(await exitP, { kind: "stopped", by: "api server closed" });
  assert.equal(existsSync(sock), false, "socket file removed");
  const log = readFileSync(join(dir, "fc.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(log.some((l) => l.msg === "microVM started" && l.level === "Info" && l.origin === "vmm"), JSON.stringify(log));
  assert.ok(log.some((l) => l.msg === "microVM stopped"));
  assert.ok(log.every((l) => l.level !== "Debug"), "level filter");
});

test("a guest reset ends the VM: exit event, GET / says how, post-boot actions refused", async () => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory([[...text("bye"), RESET]]), consoleFd: -1 });
  const exitP = new Promise<VmExit>((r) => h.once("exit", r));
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.deepEqual(await exitP, { kind: "reset" });
  const info = (await apiRequest(sock, "GET", "/")).body as Record<string, unknown>;
  assert.deepEqual(info["typervisor_exit"], { kind: "reset" });
  const r = await apiRequest(sock, "PATCH", "/vm", { state: "Paused" });
  assert.match((r.body as { fault_message: string }).fault_message, /the microVM has stopped \(reset\)/);
  await h.close();
});

test("InstanceStart refuses a missing boot source and an unreadable kernel, naming them", async () => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(), consoleFd: -1 });
  let r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.match((r.body as { fault_message: string }).fault_message, /without a boot source: PUT \/boot-source first/);
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: join(dir, "missing") });
  r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 400);
  assert.match((r.body as { fault_message: string }).fault_message, /cannot read the kernel image ".*missing": ENOENT/);
  assert.equal(((await apiRequest(sock, "GET", "/")).body as { state: string }).state, "Not started");
  r = await apiRequest(sock, "PUT", "/machine-config", { vcpu_count: 16, mem_size_mib: 128 });
  assert.match((r.body as { fault_message: string }).fault_message, /vcpu_count must be from 1 to 8 in this Typervisor build, got 16/);
  r = await apiRequest(sock, "PUT", "/logger", { log_path: "/nonexistent-dir/x.log" });
  assert.match((r.body as { fault_message: string }).fault_message, /logger\.log_path .* cannot be opened for writing: ENOENT/);
  await h.close();
});

test("the socket: a stale file is replaced, a live one refused", async () => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  // A stale socket: bound, then the listener went away without unlinking.
  const stale = createServer();
  await new Promise<void>((r) => stale.listen(sock, r));
  const other = await startApiServer({ socketPath: join(dir, "other.sock"), consoleFd: -1 });
  await assert.rejects(startApiServer({ socketPath: sock, consoleFd: -1 }), /is in use by another process/);
  await new Promise<void>((r) => stale.close(() => r()));
  writeFileSync(join(dir, "plain"), "x");
  await assert.rejects(startApiServer({ socketPath: join(dir, "plain"), consoleFd: -1 }), /exists and is not a socket/);
  await other.close();
  // A socket file left by a process that died (made by a child killed with SIGKILL).
  const child = spawn(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(join(dir, "dead.sock"))}, () => console.log("up"))`]);
  await new Promise((r) => child.stdout.once("data", r));
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
  assert.ok(existsSync(join(dir, "dead.sock")));
  const h = await startApiServer({ socketPath: join(dir, "dead.sock"), consoleFd: -1 });
  assert.equal((await apiRequest(join(dir, "dead.sock"), "GET", "/")).status, 200);
  await h.close();
});

test("--config-file: Firecracker's format maps to our resources with field-level errors, and boots at once", async () => {
  const dir = tempDir();
  const kernel = fakeKernel(dir);
  const r = configFromFirecrackerJson({
    "boot-source": { kernel_image_path: kernel, boot_args: "console=ttyS0" },
    "machine-config": { vcpu_count: 2, mem_size_mib: 256 },
    drives: [],
    "network-interfaces": [],
    logger: { level: "warning" },
  });
  assert.deepEqual(r.machine, { vcpu_count: 2, mem_size_mib: 256, smt: false, track_dirty_pages: false, huge_pages: "None" });
  assert.equal(r.logger?.level, "Warning");
  const bad: Array<[unknown, RegExp]> = [
    [{}, /missing required section "boot-source"/],
    [{ "boot-source": { kernel_image_path: kernel }, bogus: 1 }, /unknown section "bogus"/],
    [{ "boot-source": { kernel_image_path: kernel, kernel_args: "" } }, /boot-source: unknown field "kernel_args"/],
    [{ "boot-source": { kernel_image_path: kernel }, "machine-config": { vcpu_count: 0, mem_size_mib: 128 } }, /machine-config\.vcpu_count must be from 1 to 32, got 0/],
    [{ "boot-source": { kernel_image_path: kernel }, drives: [{ drive_id: "rootfs", is_root_device: true, path_on_host: "/r" }] }, /drives\[0\] "rootfs": path_on_host: virtio-blk image \/r does not exist/],
    [{ "boot-source": { kernel_image_path: kernel }, drives: [{ drive_id: "rootfs" }] }, /drives\[0\]: missing required field "is_root_device"/],
    [{ "boot-source": { kernel_image_path: kernel }, "network-interfaces": [{ iface_id: "eth0" }] }, /network-interfaces\[0\]: missing required field "host_dev_name"/],
    [{ "boot-source": { kernel_image_path: kernel }, "network-interfaces": [{ iface_id: "eth0", host_dev_name: "tap0", mtu: 9000 }] }, /network-interfaces\[0\] "eth0": mtu: VIRTIO_NET_F_MTU is not offered/],
    [
      { "boot-source": { kernel_image_path: kernel }, "network-interfaces": [{ iface_id: "a", host_dev_name: "tap0" }, { iface_id: "b", host_dev_name: "tap0" }] },
      /network-interfaces\[1\] "b": host_dev_name "tap0" is already used by "a"/,
    ],
    [{ "boot-source": { kernel_image_path: kernel }, "network-interfaces": [{ iface_id: "a", host_dev_name: "tap0", guest_mac: "01:00:00:00:00:01" }] }, /network-interfaces\[0\] "a": .*multicast|group/],
    [{ "boot-source": { kernel_image_path: kernel }, entropy: { rate_limiter: { ops: { size: 1 } } } }, /entropy\.rate_limiter\.ops: missing required field "refill_time"/],
    [{ "boot-source": { kernel_image_path: kernel }, entropy: { bogus: 1 } }, /entropy: unknown field "bogus"/],
    [[], /top level must be a JSON object/],
  ];
  for (const [obj, re] of bad) assert.throws(() => configFromFirecrackerJson(obj), (e: unknown) => e instanceof FaultError && re.test(e.message), JSON.stringify(obj));
  assert.throws(() => parseFirecrackerConfigFile("{", "vm.json"), /vm\.json: malformed JSON/);

  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(), consoleFd: -1, resources: r, startOnConfig: true });
  assert.equal(h.state, "Running");
  assert.equal(h.vm?.exitCounters().length, 2);
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as Record<string, unknown>;
  assert.deepEqual(cfg["boot-source"], { kernel_image_path: kernel, boot_args: "console=ttyS0" });
  await h.close();
});

test("Prometheus text on 127.0.0.1:0: exits per vCPU and API counts", async () => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory([[...text("abc"), BLOCK]]), consoleFd: -1 });
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  await until(() => (h.vm?.exitCounters()[0]?.IO_OUT ?? 0) === 3);
  const p = await startPrometheusServer("127.0.0.1", 0, () => h.metrics());
  assert.ok(p.port > 0);
  const res = await fetch(`http://127.0.0.1:${p.port}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const body = await res.text();
  assert.match(body, /^typervisor_vcpu_exits_total\{vcpu="0",reason="IO_OUT"\} 3$/m);
  assert.match(body, /^typervisor_api_requests_total\{route="PUT \/boot-source"\} 1$/m);
  assert.match(body, /^# TYPE typervisor_api_request_duration_seconds summary$/m);
  assert.equal((await fetch(`http://127.0.0.1:${p.port}/other`)).status, 404);
  await p.close();
  await h.close();
  assert.deepEqual(parseHostPort("127.0.0.1:9100"), { host: "127.0.0.1", port: 9100 });
  assert.deepEqual(parseHostPort("[::1]:0"), { host: "::1", port: 0 });
  assert.throws(() => parseHostPort("9100"), /HOST:PORT/);
});

test("registry: register, list, prune dead pids and junk, unregister", async () => {
  const dir = join(tempDir(), "run");
  const now = Date.now();
  const done = registerRunningVm(dir, { id: "vm1", pid: process.pid, socket: "/tmp/a.sock", vcpus: 1, memMiB: 128, startedAt: now });
  // A process that has exited: its record is pruned.
  const child = spawn(process.execPath, ["-e", ""]);
  await new Promise((r) => child.once("exit", r));
  registerRunningVm(dir, { id: "dead", pid: child.pid!, socket: "/tmp/b.sock", vcpus: 2, memMiB: 256, startedAt: now - 1 });
  writeFileSync(join(dir, "junk.json"), "{not json");
  const list = listRunningVms(dir);
  assert.deepEqual(list.map((v) => v.id), ["vm1"]);
  assert.equal(existsSync(join(dir, "dead.json")), false);
  assert.equal(existsSync(join(dir, "junk.json")), false);
  assert.equal(findRunningVm(dir, "vm1")?.socket, "/tmp/a.sock");
  assert.throws(() => registerRunningVm(dir, { id: "../x", pid: 1, socket: "", vcpus: 1, memMiB: 1, startedAt: 0 }), /VM id must be/);
  done();
  assert.deepEqual(listRunningVms(dir), []);
  assert.deepEqual(listRunningVms(join(dir, "nope")), []);
  assert.equal(defaultRuntimeDir({ XDG_RUNTIME_DIR: "/run/user/1000" }), process.getuid?.() === 0 ? "/run/typervisor" : "/run/user/1000/typervisor");
});

test("GET / and PATCH /vm follow the VM's own state, whoever paused or resumed it", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory([[BLOCK]]), consoleFd: -1 });
  t.after(() => h.close());
  const state = async () => ((await apiRequest(sock, "GET", "/")).body as { state: string }).state;
  const patch = (s: string) => apiRequest(sock, "PATCH", "/vm", { state: s });
  assert.equal((await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) })).status, 204);
  assert.equal((await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" })).status, 204);
  assert.equal(await state(), "Running");
  // Paused through the SDK, not the API: the API says so, and answers Paused with 204 (Firecracker's).
  await h.microvm!.pause();
  assert.equal(await state(), "Paused");
  assert.equal(h.state, "Paused");
  assert.equal((await patch("Paused")).status, 204);
  assert.equal(h.vm!.state, "paused");
  assert.equal((await patch("Resumed")).status, 204);
  assert.equal(h.vm!.state, "running");
  assert.equal(await state(), "Running");
  // Paused under the SDK, on the Vm itself.
  await h.vm!.pause();
  assert.equal(await state(), "Paused");
  h.vm!.resume();
  assert.equal(await state(), "Running");
  assert.equal((await patch("Resumed")).status, 204);
  const exitP = new Promise<VmExit>((r) => h.once("exit", r));
  h.vm!.stop("test");
  const exit = await exitP;
  assert.deepEqual(h.exit, exit);
  assert.deepEqual(((await apiRequest(sock, "GET", "/")).body as Record<string, unknown>)["typervisor_exit"], exit);
  assert.match(((await patch("Paused")).body as { fault_message: string }).fault_message, /the microVM has stopped \(stopped by test\)/);
});
