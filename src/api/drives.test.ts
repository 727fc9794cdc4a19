// Drives through the API over the fake machine (real cards, no /dev/kvm): PUT /drives checks at
// the edge, Firecracker's ordering and root-device command line, the VmConfig InstanceStart
// builds, PATCH /drives rate limiters reaching the card, per-drive metrics in JSON lines and
// Prometheus text, and `--config-file` drives.

import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startApiServer } from "./server.js";
import { apiRequest, faultOf } from "./client.js";
import { configFromFirecrackerJson, mergeRateLimiter, rootDeviceArgs, tokenBucketFrom } from "./config.js";
import { FaultError } from "./schema.js";
import { prometheusText } from "./metrics.js";
import { fakeFactory, fakeImage, fakeKernel, tempDir } from "./testing.js";
import type { Vm, VmConfig } from "../vmm/vm.js";
import type { VmFactory } from "../sdk/microvm.js";
import type { RateLimiterConfig } from "../cards/index.js";

/** A fake factory that also records the VmConfig each VM was built from. */
function recordingFactory(configs: VmConfig[], built: Vm[]): VmFactory {
  const inner = fakeFactory(undefined, built);
  return (c) => {
    configs.push(c);
    return inner(c);
  };
}

test("PUT /drives: edge checks answer 400 naming the drive, the field and the problem", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(), consoleFd: -1 });
  t.after(() => h.close());
  const img = fakeImage(dir);
  const put = (id: string, body: Record<string, unknown>) => apiRequest(sock, "PUT", `/drives/${id}`, { drive_id: id, ...body });
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ["nopath", { is_root_device: false }, /drive "nopath": missing field "path_on_host"/],
    ["gone", { is_root_device: false, path_on_host: join(dir, "gone.img") }, /drive "gone": path_on_host: virtio-blk image .*gone\.img does not exist \(ENOENT\)/],
    ["adir", { is_root_device: false, path_on_host: dir, is_read_only: true }, /drive "adir": path_on_host: .* is not a regular file or block device/],
    ["tiny", { is_root_device: false, path_on_host: fakeImage(dir, "tiny.img", 100) }, /is 100 bytes, smaller than one 512-byte sector/],
    ["a23456789012345678901", { is_root_device: false, path_on_host: img }, /drive_id must be at most 20 bytes/],
    ["root", { is_root_device: true, path_on_host: img, partuuid: "x init=/bin/sh" }, /partuuid must be a partition UUID/],
    ["root", { is_root_device: true, path_on_host: img, socket: "/s" }, /socket: vhost-user-block drives are not supported/],
    ["root", { is_root_device: true, path_on_host: img, io_engine: "Async" }, /io_engine "Async"/],
    ["root", { is_root_device: true, path_on_host: img, rate_limiter: { ops: { size: 1 } } }, /drive\.rate_limiter\.ops: missing required field "refill_time"/],
  ];
  for (const [id, body, re] of cases) {
    const r = await put(id, body);
    assert.equal(r.status, 400, `${id} ${JSON.stringify(body)}`);
    assert.match(faultOf(r), re, `${id} ${JSON.stringify(body)}`);
  }
  // An image the process cannot open for writing, without is_read_only.
  let unwritable: string | undefined;
  if (process.getuid?.() !== 0) {
    unwritable = fakeImage(dir, "ro.img");
    chmodSync(unwritable, 0o444);
  } else if (existsSync("/sys/kernel/notes")) {
    unwritable = "/sys/kernel/notes"; // root may write any file mode; sysfs refuses O_RDWR here
  }
  if (unwritable !== undefined) {
    const r = await put("ro", { is_root_device: false, path_on_host: unwritable });
    assert.match(faultOf(r), /path_on_host: virtio-blk image .* cannot be opened for writing \(mark the drive read-only, or fix its permissions\)/);
  }
  // Nothing refused was stored.
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as { drives: unknown[] };
  assert.deepEqual(cfg.drives, []);
  await h.close();
});

test("Firecracker's drive order and command line: root first (/dev/vda), replace by id, root=PARTUUID, ro/rw; InstanceStart passes the drives", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const configs: VmConfig[] = [];
  const built: Vm[] = [];
  const h = await startApiServer({ socketPath: sock, vmFactory: recordingFactory(configs, built), consoleFd: -1, id: "vm_order" });
  t.after(() => h.close());
  const [a, b, root] = [fakeImage(dir, "a.img"), fakeImage(dir, "b.img"), fakeImage(dir, "root.img")];
  const put = (id: string, body: Record<string, unknown>) => apiRequest(sock, "PUT", `/drives/${id}`, { drive_id: id, ...body });
  assert.equal((await put("a", { is_root_device: false, path_on_host: a })).status, 204);
  assert.equal((await put("b", { is_root_device: false, path_on_host: b, is_read_only: true })).status, 204);
  // b becomes the root device: it moves to the front.
  assert.equal((await put("b", { is_root_device: true, path_on_host: b, is_read_only: true, partuuid: "1a2b3c4d-01" })).status, 204);
  let r = await put("rootfs", { is_root_device: true, path_on_host: root });
  assert.match(faultOf(r), /a root block device already exists \("b"\)/);
  // Replacing the root device's own config is allowed.
  assert.equal((await put("b", { is_root_device: true, path_on_host: root, is_read_only: true, partuuid: "1a2b3c4d-01" })).status, 204);
  r = await apiRequest(sock, "GET", "/vm/config");
  assert.deepEqual((r.body as { drives: Array<{ drive_id: string }> }).drives.map((d) => d.drive_id), ["b", "a"]);

  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir), boot_args: "console=ttyS0" });
  assert.equal((await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" })).status, 204);
  const c = configs[0]!;
  assert.equal(c.cmdline, "console=ttyS0 root=PARTUUID=1a2b3c4d-01 ro");
  assert.deepEqual(c.drives, [
    { id: "b", path: root, readOnly: true },
    { id: "a", path: a, readOnly: false },
  ]);
  assert.equal(c.id, "vm_order", "an explicit instance id is the VM's identity");
  assert.deepEqual(Object.keys(h.vm!.driveMetrics()), ["b", "a"], "one card per drive");
  await h.close();

  assert.equal(rootDeviceArgs([{ drive_id: "r", is_root_device: true, path_on_host: "/x" }]), "root=/dev/vda rw");
  assert.equal(rootDeviceArgs([{ drive_id: "r", is_root_device: false, path_on_host: "/x" }]), "");
});

test("PATCH /drives: the rate limiter reaches the drive's card (kept, replaced or removed per bucket, as Firecracker)", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const built: Vm[] = [];
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(undefined, built), consoleFd: -1, metricsIntervalMs: 60_000 });
  t.after(() => h.close());
  const img = fakeImage(dir);
  await apiRequest(sock, "PUT", "/drives/rootfs", {
    drive_id: "rootfs", path_on_host: img, is_root_device: true,
    rate_limiter: { bandwidth: { size: 4096, refill_time: 100 } },
  });
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  await apiRequest(sock, "PUT", "/metrics", { metrics_path: join(dir, "metrics.json") });
  await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  const vm = built[0]!;
  const updates: Array<[string, RateLimiterConfig]> = [];
  const original = vm.updateDriveRateLimiter.bind(vm);
  vm.updateDriveRateLimiter = (id, cfg) => {
    updates.push([id, cfg]);
    original(id, cfg);
  };
  const patch = (body: Record<string, unknown>) => apiRequest(sock, "PATCH", "/drives/rootfs", { drive_id: "rootfs", ...body });
  assert.equal((await patch({ rate_limiter: { ops: { size: 100, one_time_burst: 50, refill_time: 1000 } } })).status, 204);
  assert.equal((await patch({ rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } })).status, 204);
  assert.equal((await patch({})).status, 204, "nothing to change");
  assert.deepEqual(updates, [
    ["rootfs", { bandwidth: { size: 4096, refillTime: 100 }, ops: { size: 100, oneTimeBurst: 50, refillTime: 1000 } }],
    ["rootfs", { bandwidth: null, ops: { size: 100, oneTimeBurst: 50, refillTime: 1000 } }],
  ]);
  // path_on_host: another image under the running drive, the guest told of its capacity; a bad one changes nothing.
  let r = await patch({ path_on_host: join(dir, "gone.img") });
  assert.match(faultOf(r), /^drive "rootfs": path_on_host: virtio-blk image .*gone\.img does not exist \(ENOENT\)$/);
  const bigger = fakeImage(dir, "bigger.img", 256 * 1024);
  r = await patch({ path_on_host: bigger });
  assert.equal(r.status, 204, JSON.stringify(r.body));
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as { drives: Array<{ drive_id: string; path_on_host: string }> };
  assert.equal(cfg.drives.find((d) => d.drive_id === "rootfs")?.path_on_host, bigger, "GET /vm/config shows the new image");
  r = await apiRequest(sock, "PATCH", "/drives/rootfs", { drive_id: "other", rate_limiter: {} });
  assert.match(faultOf(r), /does not match/);

  // Per-drive metrics: JSON lines (Firecracker's block group and block_<id>) and Prometheus text.
  await apiRequest(sock, "PUT", "/actions", { action_type: "FlushMetrics" });
  const line = JSON.parse(readFileSync(join(dir, "metrics.json"), "utf8").trim().split("\n").at(-1)!);
  // (Each limiter update wakes the card through its notify eventfd, which it counts as a kick.)
  const zero = { request_count: 0, bytes: 0, execute_fails: 0, rate_limiter_throttled_events: 0, interrupt_count: 0, needs_reset: 0 };
  assert.deepEqual({ ...line.block_rootfs, queue_event_count: undefined }, { ...zero, queue_event_count: undefined });
  assert.deepEqual(line.block, line.block_rootfs, "block sums the drives");
  assert.deepEqual(Object.keys(h.metrics().drives), ["rootfs"]);
  assert.equal(h.metrics().drives["rootfs"]!.requests, 0);
  const prom = prometheusText({ ...h.metrics(), drives: { rootfs: { requests: 3, bytes: 12288, errors: 1, throttled: 2, kicks: 3, interrupts: 3, needsReset: 0, cpuMicros: 0 } } });
  assert.match(prom, /^# TYPE typervisor_drive_requests_total counter$/m);
  assert.match(prom, /^typervisor_drive_requests_total\{drive="rootfs"\} 3$/m);
  assert.match(prom, /^typervisor_drive_bytes_total\{drive="rootfs"\} 12288$/m);
  assert.match(prom, /^typervisor_drive_errors_total\{drive="rootfs"\} 1$/m);
  assert.match(prom, /^typervisor_drive_throttled_total\{drive="rootfs"\} 2$/m);
  await h.close();

  // The bucket mapping on its own.
  assert.equal(tokenBucketFrom({ size: 0, refill_time: 10 }), null);
  assert.deepEqual(tokenBucketFrom({ size: 5, refill_time: 10, one_time_burst: 0 }), { size: 5, refillTime: 10 });
  assert.deepEqual(mergeRateLimiter(undefined, { ops: { size: 0, refill_time: 0 } }), {});
});

test("--config-file drives: mapped in Firecracker's order, checked at the edge with drives[i] in the message, and booted", async (t) => {
  const dir = tempDir();
  const kernel = fakeKernel(dir);
  const [data, root] = [fakeImage(dir, "data.img"), fakeImage(dir, "root.img")];
  const r = configFromFirecrackerJson({
    "boot-source": { kernel_image_path: kernel, boot_args: "console=ttyS0" },
    drives: [
      { drive_id: "data", path_on_host: data, is_root_device: false, is_read_only: false },
      { drive_id: "rootfs", path_on_host: root, is_root_device: true, is_read_only: false },
    ],
  });
  assert.deepEqual(r.drives?.map((d) => d.drive_id), ["rootfs", "data"]);
  const bad: Array<[unknown[], RegExp]> = [
    [[{ drive_id: "rootfs", is_root_device: true, path_on_host: join(dir, "nope") }], /drives\[0\] "rootfs": path_on_host: virtio-blk image .* does not exist/],
    [[{ drive_id: "rootfs" }], /drives\[0\]: missing required field "is_root_device"/],
    [[{ drive_id: "r1", is_root_device: true, path_on_host: root }, { drive_id: "r2", is_root_device: true, path_on_host: data }], /drives\[1\] "r2": is_root_device: a root block device already exists \("r1"\)/],
    [[{ drive_id: "bad-id", is_root_device: false, path_on_host: data }], /alphanumeric characters and underscores/],
  ];
  for (const [drives, re] of bad) {
    assert.throws(() => configFromFirecrackerJson({ "boot-source": { kernel_image_path: kernel }, drives }), (e: unknown) => e instanceof FaultError && re.test(e.message), JSON.stringify(drives));
  }
  const configs: VmConfig[] = [];
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: recordingFactory(configs, []), consoleFd: -1, resources: r, startOnConfig: true });
  t.after(() => h.close());
  assert.equal(h.state, "Running");
  assert.equal(configs[0]!.cmdline, "console=ttyS0 root=/dev/vda rw");
  assert.deepEqual(configs[0]!.drives?.map((d) => d.id), ["rootfs", "data"]);
  const cfg = (await apiRequest(sock, "GET", "/vm/config")).body as { drives: Array<{ drive_id: string }> };
  assert.deepEqual(cfg.drives.map((d) => d.drive_id), ["rootfs", "data"]);
  await h.close();
});
