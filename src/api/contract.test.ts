// Contract tests: every implemented endpoint's request and response bodies checked against the
// Firecracker spec file's own definitions (ajv over the YAML), on a server whose VM is a fake
// machine (no /dev/kvm). Plus: our validators never accept what the spec (with unknown fields
// closed) rejects, over random bodies (fast-check); README.md lists every operation of the spec.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { SpecValidator, specPath } from "./spec-validator.js";
import { startApiServer, type ApiServerHandle } from "./server.js";
import { apiRequest, type ApiResponse } from "./client.js";
import { fakeFactory, fakeImage, fakeKernel, tempDir } from "./testing.js";
import * as schema from "./schema.js";

// The spec is vendored (vendor/firecracker/firecracker-api.yaml): a missing file fails here, never skips.
const spec = new SpecValidator(specPath());

let dir: string;
let sock: string;
let server: ApiServerHandle;

before(async () => {
  dir = tempDir();
  sock = join(dir, "api.sock");
  server = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(), consoleFd: -1 });
});
after(async () => {
  await server?.close();
});

/** Sends the request; checks the request body and the answer against the spec; returns the answer. */
async function call(method: string, specPathName: string, urlPath: string, body?: unknown, expectBodyValid: boolean | "partial" = true): Promise<ApiResponse> {
  const m = method.toLowerCase();
  const def = spec.bodyDefinition(specPathName, m);
  // The spec gives PATCH /machine-config the full MachineConfiguration (both sizes required)
  // while describing a partial update, which is what Firecracker implements: such bodies are
  // checked by the test's own assertions instead.
  if (body !== undefined && def !== undefined && typeof body === "object" && expectBodyValid !== "partial") {
    const errs = spec.errors(def, body, true);
    assert.equal(errs.length === 0, expectBodyValid, `request body vs ${def}: ${errs.join("; ")}`);
  }
  const r = await apiRequest(sock, method, urlPath, body);
  const respDef = spec.responseDefinition(specPathName, m, r.status);
  if (r.status === 204) {
    assert.equal(r.text, "", "204 has no body");
  } else {
    assert.ok(respDef, `the spec declares a schema for ${method} ${specPathName} ${r.status}`);
    assert.deepEqual(spec.errors(respDef!, r.body), [], `response ${r.status} ${r.text} vs ${respDef}`);
  }
  if (r.status >= 400) {
    assert.equal(typeof (r.body as { fault_message?: unknown }).fault_message, "string", r.text);
    assert.equal(r.headers["content-type"], "application/json");
  }
  return r;
}

const fault = (r: ApiResponse) => (r.body as { fault_message: string }).fault_message;

test("pre-boot: each configuration endpoint's bodies and answers match the spec", async () => {
  let r = await call("GET", "/", "/");
  assert.equal(r.status, 200);
  assert.deepEqual((r.body as { state: string; app_name: string }).state, "Not started");
  assert.equal((r.body as { app_name: string }).app_name, "Typervisor");

  r = await call("GET", "/version", "/version");
  assert.equal(r.status, 200);

  r = await call("GET", "/machine-config", "/machine-config");
  assert.deepEqual([r.status, (r.body as { vcpu_count: number }).vcpu_count, (r.body as { mem_size_mib: number }).mem_size_mib], [200, 1, 128]);

  assert.equal((await call("PUT", "/machine-config", "/machine-config", { vcpu_count: 2, mem_size_mib: 256, smt: false })).status, 204);
  assert.equal((await call("PATCH", "/machine-config", "/machine-config", { mem_size_mib: 192 }, "partial")).status, 204);
  r = await call("GET", "/machine-config", "/machine-config");
  assert.deepEqual([(r.body as { vcpu_count: number }).vcpu_count, (r.body as { mem_size_mib: number }).mem_size_mib], [2, 192]);

  assert.equal((await call("PUT", "/boot-source", "/boot-source", { kernel_image_path: fakeKernel(dir), boot_args: "console=ttyS0 reboot=k panic=1" })).status, 204);
  assert.equal((await call("PUT", "/logger", "/logger", { log_path: join(dir, "log"), level: "Debug", show_level: true, show_log_origin: true })).status, 204);
  assert.equal((await call("PUT", "/metrics", "/metrics", { metrics_path: join(dir, "metrics"), emit_id: true, properties: { team: "vmm" } })).status, 204);
  assert.equal((await call("PUT", "/serial", "/serial", { serial_out_path: join(dir, "serial") })).status, 204);

  // Drives: stored after the spec check and an edge check of the image.
  const rootImg = fakeImage(dir, "rootfs.ext4");
  const dataImg = fakeImage(dir, "data.img");
  r = await call("PUT", "/drives/{drive_id}", "/drives/data", { drive_id: "data", path_on_host: dataImg, is_root_device: false, is_read_only: true, cache_type: "Writeback" });
  assert.equal(r.status, 204, r.text);
  r = await call("PUT", "/drives/{drive_id}", "/drives/rootfs", {
    drive_id: "rootfs", path_on_host: rootImg, is_root_device: true, is_read_only: false, io_engine: "Sync",
    rate_limiter: { bandwidth: { size: 1 << 20, refill_time: 100 }, ops: { size: 1000, one_time_burst: 100, refill_time: 1000 } },
  });
  assert.equal(r.status, 204, r.text);
  r = await call("PUT", "/drives/{drive_id}", "/drives/rootfs", { drive_id: "rootfs", path_on_host: join(dir, "missing.ext4"), is_root_device: true });
  assert.equal(r.status, 400);
  assert.match(fault(r), /drive "rootfs": path_on_host: virtio-blk image .*missing\.ext4 does not exist/);
  r = await call("PUT", "/drives/{drive_id}", "/drives/other", { drive_id: "other", path_on_host: dataImg, is_root_device: true, is_read_only: true });
  assert.match(fault(r), /is_root_device: a root block device already exists \("rootfs"\)/);
  r = await call("PUT", "/drives/{drive_id}", "/drives/vhost", { drive_id: "vhost", socket: "/tmp/vhost.sock", is_root_device: false });
  assert.match(fault(r), /socket: vhost-user-block drives are not supported/);
  r = await call("PUT", "/drives/{drive_id}", "/drives/aio", { drive_id: "aio", path_on_host: dataImg, is_root_device: false, is_read_only: true, io_engine: "Async" });
  assert.match(fault(r), /io_engine "Async" \(io_uring\) is not supported/);

  // Entropy (virtio-rng): stored pre-boot; a second PUT replaces the first, as Firecracker's.
  assert.equal((await call("PUT", "/entropy", "/entropy", {})).status, 204);
  r = await call("PUT", "/entropy", "/entropy", { rate_limiter: { bandwidth: { size: 1000, refill_time: 100 }, ops: { size: 10, one_time_burst: 5, refill_time: 1000 } } });
  assert.equal(r.status, 204, r.text);

  r = await call("GET", "/vm/config", "/vm/config");
  assert.equal(r.status, 200);
  assert.equal((r.body as Record<string, { kernel_image_path: string }>)["boot-source"]!.kernel_image_path, join(dir, "vmlinux"));
  // The root device comes first (it will be /dev/vda), defaults filled as Firecracker's GET /vm/config.
  const drives = (r.body as { drives: Array<Record<string, unknown>> }).drives;
  assert.deepEqual(drives.map((d) => d["drive_id"]), ["rootfs", "data"]);
  assert.deepEqual(drives[1], { drive_id: "data", is_root_device: false, cache_type: "Writeback", is_read_only: true, path_on_host: dataImg, io_engine: "Sync" });
  assert.equal(drives[0]!["cache_type"], "Unsafe");
  assert.deepEqual((r.body as Record<string, unknown>)["entropy"], { rate_limiter: { bandwidth: { size: 1000, refill_time: 100 }, ops: { size: 10, one_time_burst: 5, refill_time: 1000 } } });

  // Post-boot-only operations before boot.
  r = await call("PATCH", "/vm", "/vm", { state: "Paused" });
  assert.equal(r.status, 400);
  assert.match(fault(r), /not supported before starting/);
  r = await call("PATCH", "/drives/{drive_id}", "/drives/rootfs", { drive_id: "rootfs", path_on_host: "/tmp/y" });
  assert.match(fault(r), /not supported before starting/);
  r = await call("PUT", "/actions", "/actions", { action_type: "SendCtrlAltDel" });
  assert.match(fault(r), /not supported before starting/);
});

test("boot and after: actions, pause/resume, pre-boot-only refusals; answers match the spec", async () => {
  assert.equal((await call("PUT", "/actions", "/actions", { action_type: "FlushMetrics" })).status, 204);
  assert.equal((await call("PUT", "/actions", "/actions", { action_type: "InstanceStart" })).status, 204);
  let r = await call("GET", "/", "/");
  assert.equal((r.body as { state: string }).state, "Running");
  assert.equal((await call("PATCH", "/vm", "/vm", { state: "Paused" })).status, 204);
  r = await call("GET", "/", "/");
  assert.equal((r.body as { state: string }).state, "Paused");
  assert.equal((await call("PATCH", "/vm", "/vm", { state: "Resumed" })).status, 204);
  assert.equal(((await call("GET", "/", "/")).body as { state: string }).state, "Running");
  // InstanceStart built the entropy device: its card runs and is counted.
  assert.ok("virtio-rng" in server.vm!.deviceMetrics(), JSON.stringify(Object.keys(server.vm!.deviceMetrics())));
  assert.deepEqual(server.microvm!.config.entropy, { rateLimiter: { bandwidth: { size: 1000, refillTime: 100 }, ops: { size: 10, oneTimeBurst: 5, refillTime: 1000 } } });
  assert.equal(server.metrics().devices?.["virtio-rng"]?.needsReset, 0);

  r = await call("PUT", "/boot-source", "/boot-source", { kernel_image_path: "/other" });
  assert.equal(r.status, 400);
  assert.match(fault(r), /not supported after starting/);
  for (const [p, body] of [
    ["/machine-config", { vcpu_count: 1, mem_size_mib: 128 }],
    ["/serial", { serial_out_path: "/tmp/s" }],
    ["/entropy", {}],
  ] as const) {
    r = await call("PUT", p, p, body);
    assert.match(fault(r), /not supported after starting/, p);
  }
  r = await call("PUT", "/actions", "/actions", { action_type: "InstanceStart" });
  assert.match(fault(r), /not supported after starting/);
  // Ctrl+Alt+Del reaches the running guest's keyboard (the i8042 buffers the scan codes).
  r = await call("PUT", "/actions", "/actions", { action_type: "SendCtrlAltDel" });
  assert.equal(r.status, 204);
  // PATCH /drives: rate limiters change on the running card; the backing file cannot.
  assert.equal((await call("PATCH", "/drives/{drive_id}", "/drives/rootfs", { drive_id: "rootfs", rate_limiter: { ops: { size: 10, refill_time: 1000 } } })).status, 204);
  assert.equal((await call("PATCH", "/drives/{drive_id}", "/drives/data", { drive_id: "data", rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } })).status, 204);
  r = await call("GET", "/vm/config", "/vm/config");
  const after = (r.body as { drives: Array<{ drive_id: string; rate_limiter?: unknown }> }).drives;
  assert.deepEqual(after[0]!.rate_limiter, { bandwidth: { size: 1 << 20, refill_time: 100 }, ops: { size: 10, refill_time: 1000 } });
  assert.equal(after[1]!.rate_limiter, undefined);
  r = await call("PATCH", "/drives/{drive_id}", "/drives/rootfs", { drive_id: "rootfs", path_on_host: "/nonexistent/y.ext4" });
  assert.equal(r.status, 400);
  assert.match(fault(r), /drive "rootfs": path_on_host: virtio-blk image \/nonexistent\/y\.ext4 does not exist/);
  assert.equal((await call("PATCH", "/drives/{drive_id}", "/drives/rootfs", { drive_id: "rootfs", path_on_host: fakeImage(dir, "rootfs2.ext4") })).status, 204);
  r = await call("PATCH", "/drives/{drive_id}", "/drives/nope", { drive_id: "nope", rate_limiter: {} });
  assert.match(fault(r), /drive "nope" not found: its drives are "rootfs", "data"/);
  r = await call("PUT", "/drives/{drive_id}", "/drives/late", { drive_id: "late", path_on_host: "/tmp/x", is_root_device: false });
  assert.match(fault(r), /not supported after starting/);
  assert.equal((await call("PUT", "/actions", "/actions", { action_type: "FlushMetrics" })).status, 204);
  r = await call("PUT", "/metrics", "/metrics", { metrics_path: join(dir, "metrics2") });
  assert.match(fault(r), /already initialized/);
  r = await call("GET", "/vm/config", "/vm/config");
  assert.equal(r.status, 200);
});

test("bad bodies: unknown fields, wrong types, missing fields, bad enums, malformed JSON are 400 naming the field", async () => {
  const cases: Array<[string, string, string, unknown, RegExp]> = [
    ["PUT", "/machine-config", "/machine-config", { vcpu_count: 1, mem_size_mib: 128, bogus: 1 }, /unknown field "bogus"/],
    ["PUT", "/machine-config", "/machine-config", { vcpu_count: "2", mem_size_mib: 128 }, /vcpu_count must be an integer/],
    ["PUT", "/machine-config", "/machine-config", { vcpu_count: 33, mem_size_mib: 128 }, /vcpu_count must be from 1 to 32/],
    ["PUT", "/machine-config", "/machine-config", { vcpu_count: 1.5, mem_size_mib: 128 }, /vcpu_count must be an integer/],
    ["PUT", "/machine-config", "/machine-config", { mem_size_mib: 128 }, /missing required field "vcpu_count"/],
    ["PUT", "/machine-config", "/machine-config", { vcpu_count: 1, mem_size_mib: 128, huge_pages: "1G" }, /huge_pages must be one of/],
    ["PUT", "/boot-source", "/boot-source", { boot_args: "x" }, /missing required field "kernel_image_path"/],
    ["PUT", "/boot-source", "/boot-source", { kernel_image_path: 7 }, /kernel_image_path must be a string/],
    ["PUT", "/boot-source", "/boot-source", [1, 2], /must be a JSON object/],
    ["PUT", "/actions", "/actions", { action_type: "Reboot" }, /action_type must be one of "FlushMetrics", "InstanceStart", "SendCtrlAltDel"/],
    ["PUT", "/actions", "/actions", {}, /missing required field "action_type"/],
    ["PATCH", "/vm", "/vm", { state: "Stopped" }, /state must be one of "Paused", "Resumed"/],
    ["PUT", "/logger", "/logger", { level: "Loud" }, /level must be one of/],
    ["PUT", "/metrics", "/metrics", { metrics_path: "/x", properties: { a: 1 } }, /properties\.a must be a string/],
    ["PUT", "/serial", "/serial", { serial_out_path: "/x", rate_limiter: { size: -1, refill_time: 1 } }, /size must be from 0/],
    ["PUT", "/drives/{drive_id}", "/drives/root", { drive_id: "root", is_root_device: "yes" }, /is_root_device must be a boolean/],
    ["PUT", "/drives/{drive_id}", "/drives/root", { drive_id: "root", is_root_device: true, cache_type: "None" }, /cache_type must be one of/],
    ["PUT", "/entropy", "/entropy", { rate_limiter: { ops: { size: 1 } } }, /missing required field "refill_time"/],
    ["PUT", "/entropy", "/entropy", { rate_limiter: { bandwidth: { size: -1, refill_time: 100 } } }, /entropy\.rate_limiter\.bandwidth\.size must be from 0/],
    ["PUT", "/entropy", "/entropy", { rate_limiter: { ops: { size: 10, refill_time: 1.5 } } }, /entropy\.rate_limiter\.ops\.refill_time must be an integer/],
    ["PUT", "/entropy", "/entropy", { rate_limiter: { ops: { size: 10, refill_time: 100, one_time_burst: "5" } } }, /one_time_burst must be an integer/],
    ["PUT", "/entropy", "/entropy", { rate_limiter: { iops: { size: 10, refill_time: 100 } } }, /entropy\.rate_limiter: unknown field "iops"/],
    ["PUT", "/entropy", "/entropy", { rate_limiter: { bandwidth: { size: 10, refill_time: 100, jitter: 1 } } }, /bandwidth: unknown field "jitter"/],
    ["PUT", "/entropy", "/entropy", { rate_limiter: 5 }, /entropy\.rate_limiter must be a JSON object, got number 5/],
    ["PUT", "/entropy", "/entropy", { rng: "/dev/urandom" }, /entropy: unknown field "rng", expected one of: rate_limiter/],
    ["PUT", "/entropy", "/entropy", [], /entropy must be a JSON object, got an array/],
  ];
  for (const [method, specP, url, body, re] of cases) {
    const r = await call(method, specP, url, body, false);
    assert.equal(r.status, 400, `${method} ${url} ${JSON.stringify(body)}`);
    assert.match(fault(r), re, `${method} ${url} ${JSON.stringify(body)}`);
  }
  for (const raw of ["{", "{'a':1}", "nul", "\u0000", "{\"action_type\": \"InstanceStart\",}"]) {
    const r = await apiRequest(sock, "PUT", "/actions", raw);
    assert.equal(r.status, 400);
    assert.match(fault(r), /malformed JSON body/);
  }
  const r = await apiRequest(sock, "PUT", "/drives/a", { drive_id: "b", is_root_device: false });
  assert.match(fault(r), /does not match/);
  const r2 = await apiRequest(sock, "PUT", "/drives/..%2Fetc", { drive_id: "../etc", is_root_device: false });
  assert.match(fault(r2), /alphanumeric characters and underscores/);
});

test("unknown paths and methods answer 400 'Invalid request method and/or path', as Firecracker", async () => {
  for (const [m, p] of [["GET", "/nope"], ["PUT", "/vm"], ["DELETE", "/"], ["POST", "/actions"], ["GET", "/actions"], ["GET", "/drives/x/y"]] as const) {
    const r = await apiRequest(sock, m, p, m === "GET" || m === "DELETE" ? undefined : { a: 1 });
    assert.equal(r.status, 400, `${m} ${p}`);
    assert.deepEqual(spec.errors("Error", r.body), []);
    assert.match(fault(r), new RegExp(`^Invalid request method and/or path: ${m} `), `${m} ${p}`);
  }
  // Spec paths without a device here say so.
  const r = await apiRequest(sock, "PUT", "/balloon", { amount_mib: 64, deflate_on_oom: false });
  assert.equal(r.status, 400);
  assert.match(fault(r), /the balloon device is not supported/);
});

test("our validators never accept a body the spec (unknown fields closed) rejects — random bodies", () => {
  const pairs: Array<[string, (v: unknown, w: string) => unknown]> = [
    ["BootSource", schema.bootSource],
    ["MachineConfiguration", schema.machineConfig],
    ["Drive", schema.drive],
    ["PartialDrive", schema.partialDrive],
    ["Logger", schema.logger],
    ["Metrics", schema.metrics],
    ["EntropyDevice", schema.entropy],
    ["SerialDevice", schema.serial],
    ["InstanceActionInfo", schema.instanceAction],
    ["Vm", schema.vmState],
    ["TokenBucket", schema.tokenBucket],
  ];
  const keys = ["kernel_image_path", "boot_args", "vcpu_count", "mem_size_mib", "smt", "drive_id", "is_root_device", "cache_type", "level", "log_path",
    "metrics_path", "properties", "rate_limiter", "serial_out_path", "action_type", "state", "size", "refill_time", "one_time_burst", "bandwidth", "ops", "extra"];
  const leaf = fc.oneof(
    fc.constantFrom("Info", "info", "Paused", "InstanceStart", "Unsafe", "None", "2M", "x"),
    fc.integer({ min: -5, max: 40 }),
    fc.double({ noNaN: true }),
    fc.boolean(),
    fc.constant(null),
  );
  const value = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: "small" }, leaf, fc.dictionary(fc.constantFrom(...keys), tie("v"), { maxKeys: 3 })),
  })).v;
  const body = fc.dictionary(fc.constantFrom(...keys), value, { maxKeys: 5 });
  for (const [def, check] of pairs) {
    fc.assert(
      fc.property(body, (b) => {
        let ours = true;
        try {
          check(b, def);
        } catch (e) {
          if (!(e instanceof schema.FaultError)) throw e;
          ours = false;
        }
        // Logger.level is case-insensitive per the spec's own description; its enum lists one spelling.
        if (!ours) return;
        const specBody = def === "Logger" && typeof b["level"] === "string" ? { ...b, level: schema.oneOf(schema.LOG_LEVELS, true)(b["level"], "") } : b;
        assert.deepEqual(spec.errors(def, specBody, true), [], `${def} accepted ${JSON.stringify(b)}`);
      }),
      { numRuns: 300 },
    );
  }
});

test("README.md lists every operation of the spec", () => {
  const readme = readFileSync(fileURLToPath(new URL("../../src/api/README.md", import.meta.url)), "utf8");
  const missing = spec.operations().filter((op) => !readme.includes(`\`${op}\``));
  assert.deepEqual(missing, []);
});
