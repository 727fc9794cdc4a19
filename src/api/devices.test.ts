// The entropy device (PUT /entropy, --config-file `entropy`) and the NSM device (the server's
// `nsm` option, signing with `chipDir`) over the fake machine (real cards, no /dev/kvm): the
// VmConfig InstanceStart builds, the running cards and their metrics (JSON lines, Prometheus),
// and the fault a missing chip gives at InstanceStart.

import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startApiServer } from "./server.js";
import { apiRequest, faultOf } from "./client.js";
import { configFromFirecrackerJson, entropyConfigFrom, microVmConfigFrom } from "./config.js";
import { prometheusText } from "./metrics.js";
import { fakeFactory, fakeKernel, tempDir } from "./testing.js";
import { chipInit } from "../security/chip.js";
import type { Vm, VmConfig } from "../vmm/vm.js";
import type { VmFactory } from "../sdk/microvm.js";

function recordingFactory(configs: VmConfig[], built: Vm[] = []): VmFactory {
  const inner = fakeFactory(undefined, built);
  return (c) => {
    configs.push(c);
    return inner(c);
  };
}

test("PUT /entropy then InstanceStart: the VM gets a virtio-rng card with the rate limiter; metrics show it", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const configs: VmConfig[] = [];
  const h = await startApiServer({ socketPath: sock, vmFactory: recordingFactory(configs), consoleFd: -1 });
  t.after(() => h.close());
  assert.equal((await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) })).status, 204);
  const body = { rate_limiter: { bandwidth: { size: 4096, refill_time: 100 }, ops: { size: 0, refill_time: 0 } } };
  let r = await apiRequest(sock, "PUT", "/entropy", body);
  assert.equal(r.status, 204, r.text);
  const metricsPath = join(dir, "metrics.json");
  assert.equal((await apiRequest(sock, "PUT", "/metrics", { metrics_path: metricsPath })).status, 204);
  r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 204, r.text);

  // A bucket with size 0 is "no limit" (Firecracker's TokenBucket::new gives None).
  assert.deepEqual(configs[0]!.entropy, { rateLimiter: { bandwidth: { size: 4096, refillTime: 100 }, ops: null } });
  assert.equal(configs[0]!.nsm, undefined);
  const devices = h.vm!.deviceMetrics();
  assert.deepEqual(Object.keys(devices), ["virtio-rng"]);
  assert.deepEqual(devices["virtio-rng"], { requests: 0, bytes: 0, errors: 0, throttled: 0, kicks: 0, interrupts: 0, needsReset: 0, cpuMicros: 0 });
  assert.deepEqual(Object.keys(h.metrics().devices ?? {}), ["virtio-rng"]);

  // GET /vm/config echoes the device as given.
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as Record<string, unknown>;
  assert.deepEqual(cfg["entropy"], body);

  // JSON lines: Firecracker's `entropy` group.
  assert.equal((await apiRequest(sock, "PUT", "/actions", { action_type: "FlushMetrics" })).status, 204);
  const lines = readFileSync(metricsPath, "utf8").trim().split("\n");
  const last = JSON.parse(lines[lines.length - 1]!) as Record<string, Record<string, number>>;
  assert.deepEqual(last["entropy"], {
    entropy_event_count: 0, entropy_bytes: 0, host_rng_fails: 0, entropy_rate_limiter_throttled: 0, queue_event_count: 0, interrupt_count: 0, needs_reset: 0,
  });
  assert.equal(last["nsm"], undefined);
  assert.equal(last["put_api_requests"]!["entropy_count"], 1);

  // Prometheus: per-card families.
  const prom = prometheusText({ ...h.metrics(), devices: { "virtio-rng": { requests: 2, bytes: 64, errors: 0, throttled: 1, kicks: 2, interrupts: 2, needsReset: 0, cpuMicros: 1500 } } });
  assert.match(prom, /^typervisor_device_bytes_total\{device="virtio-rng"\} 64$/m);
  assert.match(prom, /^typervisor_device_throttled_total\{device="virtio-rng"\} 1$/m);
  assert.match(prom, /^typervisor_device_cpu_seconds_total\{device="virtio-rng"\} 0\.0015$/m);

  r = await apiRequest(sock, "PUT", "/entropy", {});
  assert.equal(r.status, 400);
  assert.match(faultOf(r), /not supported after starting/);
});

test("without PUT /entropy the VM has no entropy device", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const configs: VmConfig[] = [];
  const h = await startApiServer({ socketPath: sock, vmFactory: recordingFactory(configs), consoleFd: -1 });
  t.after(() => h.close());
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  assert.equal((await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" })).status, 204);
  assert.equal(configs[0]!.entropy, undefined);
  assert.deepEqual(h.vm!.deviceMetrics(), {});
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as Record<string, unknown>;
  assert.equal("entropy" in cfg, false);
});

test("--config-file `entropy` maps onto the VM's entropy device", async (t) => {
  const dir = tempDir();
  const kernel = fakeKernel(dir);
  const r = configFromFirecrackerJson({ "boot-source": { kernel_image_path: kernel }, entropy: { rate_limiter: { ops: { size: 10, one_time_burst: 2, refill_time: 1000 } } } });
  assert.deepEqual(r.entropy, { rate_limiter: { ops: { size: 10, one_time_burst: 2, refill_time: 1000 } } });
  assert.deepEqual(microVmConfigFrom(r).entropy, { rateLimiter: { bandwidth: null, ops: { size: 10, oneTimeBurst: 2, refillTime: 1000 } } });
  assert.deepEqual(entropyConfigFrom({}), {});
  assert.equal(configFromFirecrackerJson({ "boot-source": { kernel_image_path: kernel }, entropy: null }).entropy, undefined);

  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(), consoleFd: -1, resources: r, startOnConfig: true });
  t.after(() => h.close());
  assert.equal(h.state, "Running");
  assert.ok("virtio-rng" in h.vm!.deviceMetrics());
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as Record<string, unknown>;
  assert.deepEqual(cfg["entropy"], r.entropy);
});

test("server option nsm: the guest gets a virtio-nsm card signing with chipDir (and virtio-rng beside it)", async (t) => {
  const dir = tempDir();
  const chipDir = join(dir, "chip");
  chipInit(chipDir);
  const sock = join(dir, "api.sock");
  const configs: VmConfig[] = [];
  const h = await startApiServer({ socketPath: sock, vmFactory: recordingFactory(configs), consoleFd: -1, chipDir, nsm: { moduleId: "i-0123" } });
  t.after(() => h.close());
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  await apiRequest(sock, "PUT", "/entropy", {});
  const r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 204, r.text);
  assert.deepEqual(configs[0]!.nsm, { chipDir, moduleId: "i-0123" });
  assert.deepEqual(configs[0]!.entropy, {});
  assert.deepEqual(Object.keys(h.vm!.deviceMetrics()).sort(), ["virtio-nsm", "virtio-rng"]);
  // The spec has no NSM resource: GET /vm/config does not show one.
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as Record<string, unknown>;
  assert.equal("nsm" in cfg, false);
  assert.deepEqual(Object.keys(h.metrics().devices ?? {}).sort(), ["virtio-nsm", "virtio-rng"]);
});

test("server option nsm: true without a chip identity: InstanceStart is a 400 naming the chip, and nothing started", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const built: Vm[] = [];
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(undefined, built), consoleFd: -1, chipDir: join(dir, "nochip"), nsm: true });
  t.after(() => h.close());
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  const r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 400);
  assert.match(faultOf(r), /^InstanceStart: nsm: no chip identity at .*nochip: directory does not exist \(run chip init\)$/);
  assert.equal(h.state, "Not started");
  assert.equal(built.length, 0);
  // Once the chip exists the same server starts.
  chipInit(join(dir, "nochip"));
  assert.equal((await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" })).status, 204);
  assert.ok("virtio-nsm" in h.vm!.deviceMetrics());
});

test("server option nsm with --config-file: a missing chip rejects startApiServer with the fault", async () => {
  const dir = tempDir();
  const resources = configFromFirecrackerJson({ "boot-source": { kernel_image_path: fakeKernel(dir) } });
  await assert.rejects(
    startApiServer({ socketPath: join(dir, "api.sock"), vmFactory: fakeFactory(), consoleFd: -1, resources, startOnConfig: true, chipDir: join(dir, "none"), nsm: true }),
    /InstanceStart: nsm: no chip identity at/,
  );
});

test("PUT /network-interfaces then InstanceStart: the VM gets a virtio-net card on the TAP; GET /vm/config, metrics and PATCH tx_rate_limiter", async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("a TAP device needs root (CAP_NET_ADMIN): run the tests as root");
    return;
  }
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const configs: VmConfig[] = [];
  const h = await startApiServer({ socketPath: sock, vmFactory: recordingFactory(configs), consoleFd: -1 });
  t.after(() => h.close());
  const tap = `tva${process.pid.toString(36)}`;
  assert.equal((await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) })).status, 204);
  const eth0 = {
    iface_id: "eth0", host_dev_name: tap, guest_mac: "06:00:c0:00:02:02",
    tx_rate_limiter: { ops: { size: 1000, refill_time: 1000 } }, rx_rate_limiter: { bandwidth: { size: 1 << 20, refill_time: 100 } },
  };
  let r = await apiRequest(sock, "PUT", "/network-interfaces/eth0", eth0);
  assert.equal(r.status, 204, r.text);
  r = await apiRequest(sock, "PUT", "/network-interfaces/eth1", { iface_id: "eth1", host_dev_name: tap });
  assert.equal(r.status, 400);
  assert.match(faultOf(r), /host_dev_name ".*" is already used by "eth0"/);
  r = await apiRequest(sock, "PUT", "/network-interfaces/eth1", { iface_id: "eth2", host_dev_name: "x" });
  assert.match(faultOf(r), /iface_id in the path \("eth1"\) does not match the one in the body \("eth2"\)/);
  r = await apiRequest(sock, "PUT", "/network-interfaces/eth1", { iface_id: "eth1", host_dev_name: "x", mtu: 9000 });
  assert.match(faultOf(r), /mtu: VIRTIO_NET_F_MTU is not offered/);
  assert.deepEqual(((await apiRequest(sock, "GET", "/vm/config")).body as Record<string, unknown>)["network-interfaces"], [eth0]);

  r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 204, r.text);
  assert.deepEqual(configs[0]!.net, [{
    id: "eth0", tap, mac: "06:00:c0:00:02:02",
    txRateLimiter: { bandwidth: null, ops: { size: 1000, refillTime: 1000 } }, rxRateLimiter: { bandwidth: { size: 1 << 20, refillTime: 100 }, ops: null },
  }]);
  assert.ok("virtio-net-eth0" in h.vm!.deviceMetrics(), "the net card runs");
  assert.ok(readFileSync(`/sys/class/net/${tap}/tun_flags`, "utf8").length > 0, "the card opened the TAP");
  assert.deepEqual(Object.keys(h.metrics().groups ?? {}), ["net_eth0"]);

  r = await apiRequest(sock, "PATCH", "/network-interfaces/eth0", { iface_id: "eth0", tx_rate_limiter: { bandwidth: { size: 1 << 20, refill_time: 100 } } });
  assert.equal(r.status, 204, r.text);
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as Record<string, Array<Record<string, unknown>>>;
  assert.deepEqual(cfg["network-interfaces"]![0]!["tx_rate_limiter"], { bandwidth: { size: 1 << 20, refill_time: 100 }, ops: { size: 1000, refill_time: 1000 } });
  r = await apiRequest(sock, "PATCH", "/network-interfaces/eth0", { iface_id: "eth0", rx_rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } });
  assert.equal(r.status, 204, r.text);
  const after = (await apiRequest(sock, "GET", "/vm/config")).body as Record<string, Array<Record<string, unknown>>>;
  assert.equal(after["network-interfaces"]![0]!["rx_rate_limiter"], undefined, "a bucket of size 0 removes the receive limit");
  r = await apiRequest(sock, "PATCH", "/network-interfaces/eth9", { iface_id: "eth9", tx_rate_limiter: {} });
  assert.match(faultOf(r), /network interface "eth9" not found: its interfaces are "eth0"/);
});

test("PUT /vsock then InstanceStart: the card listens on uds_path; GET /vm/config echoes it; a bad CID or a second InstanceStart's refusals name the field", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const configs: VmConfig[] = [];
  const h = await startApiServer({ socketPath: sock, vmFactory: recordingFactory(configs), consoleFd: -1 });
  t.after(() => h.close());
  assert.equal((await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) })).status, 204);
  let r = await apiRequest(sock, "PUT", "/vsock", { guest_cid: 2, uds_path: join(dir, "v.sock") });
  assert.equal(r.status, 400);
  assert.match(faultOf(r), /vsock\.guest_cid must be at least 3|guest_cid/);
  r = await apiRequest(sock, "PUT", "/vsock", { guest_cid: 0xffffffff, uds_path: join(dir, "v.sock") });
  assert.equal(r.status, 400);
  assert.match(faultOf(r), /^vsock: .*guest_cid|^vsock: .*CID/);
  const body = { guest_cid: 3, uds_path: join(dir, "v.sock") };
  r = await apiRequest(sock, "PUT", "/vsock", body);
  assert.equal(r.status, 204, r.text);
  assert.deepEqual(((await apiRequest(sock, "GET", "/vm/config")).body as Record<string, unknown>)["vsock"], body);
  r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 204, r.text);
  assert.deepEqual(configs[0]!.vsock, { guestCid: 3, udsPath: body.uds_path });
  assert.ok(existsSync(body.uds_path), "the vsock card listens on uds_path");
  assert.ok("virtio-vsock" in h.vm!.deviceMetrics());
  r = await apiRequest(sock, "PUT", "/vsock", body);
  assert.match(faultOf(r), /not supported after starting the microVM/);
});
