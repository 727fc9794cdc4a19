// GET /typervisor/attestation (Typervisor's extension, not in Firecracker's spec) and the
// fetchAttestation client, over the fake machine: the document verifies against the chip root,
// carries the nonce and user data asked for, PCR4 is the VM's identity; every refusal is a 400
// with a fault message (before start, no chip identity, bad hex, too long, unknown parameter).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { startApiServer } from "./server.js";
import { apiRequest, faultOf, fetchAttestation } from "./client.js";
import { fakeFactory, fakeImage, fakeKernel, tempDir } from "./testing.js";
import { chipInit } from "../security/chip.js";
import { verifyAttestation } from "../security/attestation.js";

const sha384 = (...parts: Uint8Array[]) => {
  const h = createHash("sha384");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};

test("GET /typervisor/attestation: a CBOR document that verifies against the chip root, with nonce, user data and PCR4 = the VM's id", async (t) => {
  const dir = tempDir();
  const chipDir = join(dir, "chip");
  const { chip } = chipInit(chipDir);
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(), consoleFd: -1, id: "vm_attest_1", chipDir });
  t.after(() => h.close());
  const path = "/typervisor/attestation";

  let r = await apiRequest(sock, "GET", `${path}?nonce=00ff`);
  assert.equal(r.status, 400);
  assert.match(faultOf(r), /not supported before starting/);

  await apiRequest(sock, "PUT", "/drives/rootfs", { drive_id: "rootfs", path_on_host: fakeImage(dir), is_root_device: true });
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir), boot_args: "console=ttyS0" });
  assert.equal((await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" })).status, 204);

  const nonce = new Uint8Array(Buffer.from("a1b2c3d4e5f6", "hex"));
  const userData = new Uint8Array(Buffer.from("hello"));
  const doc = await fetchAttestation(sock, { nonce, userData });
  const v = verifyAttestation(doc, { root: chip.root.der, nonce, maxAgeSeconds: 60 });
  assert.ok(v.ok, JSON.stringify(v));
  assert.equal(v.document.module_id, "vm_attest_1");
  assert.deepEqual(v.document.user_data, userData);
  const pcr4 = sha384(new Uint8Array(48), sha384(Buffer.from("vm_attest_1", "utf8")));
  assert.deepEqual(v.document.pcrs.get(4), pcr4);
  // PCR0..15 are locked at boot and reported; PCR1 covers the kernel and the command line the
  // guest got, root= arguments included.
  assert.deepEqual([...v.document.pcrs.keys()], Array.from({ length: 16 }, (_, i) => i));
  assert.deepEqual(v.document.pcrs.get(1), h.vm!.pcrs.get(1));

  // The raw answer: 200, application/cbor.
  const raw = await new Promise<{ status: number; type: string }>((resolve, reject) => {
    import("node:http").then(({ request }) => {
      request({ socketPath: sock, path, method: "GET" }, (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode ?? 0, type: String(res.headers["content-type"]) }));
      }).on("error", reject).end();
    }, reject);
  });
  assert.deepEqual(raw, { status: 200, type: "application/cbor" });

  const bad: Array<[string, RegExp]> = [
    ["?nonce=abc", /nonce must be hex digits in pairs/],
    ["?nonce=zz", /nonce must be hex digits in pairs/],
    [`?user_data=${"00".repeat(513)}`, /user_data is 513 bytes; at most 512/],
    [`?nonce=${"00".repeat(513)}`, /nonce is 513 bytes; at most 512/],
    ["?nonce=00&nonce=01", /"nonce" given more than once/],
    ["?pcr=4", /unknown query parameter "pcr"/],
    ["?public_key=", /public_key must not be empty/],
  ];
  for (const [q, re] of bad) {
    r = await apiRequest(sock, "GET", `${path}${q}`);
    assert.equal(r.status, 400, q);
    assert.match(faultOf(r), re, q);
    assert.equal(r.headers["content-type"], "application/json");
  }
  // Only GET; the route counts in metrics under its own name.
  r = await apiRequest(sock, "PUT", path, { nonce: "00" });
  assert.match(faultOf(r), /^Invalid request method and\/or path: PUT \/typervisor\/attestation/);
  assert.ok((h.metrics().api["GET /typervisor/attestation"]?.count ?? 0) >= 8);
});

test("GET /typervisor/attestation without a chip identity: 400 saying so; fetchAttestation rejects with that message", async (t) => {
  const dir = tempDir();
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(), consoleFd: -1, chipDir: join(dir, "no-chip") });
  t.after(() => h.close());
  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) });
  await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  const r = await apiRequest(sock, "GET", "/typervisor/attestation");
  assert.equal(r.status, 400);
  assert.match(faultOf(r), /no security chip identity at .*no-chip: run "typervisor chip init"/);
  await assert.rejects(fetchAttestation(sock, { nonce: new Uint8Array([1]) }), /attestation from .*api\.sock: .*run "typervisor chip init"/);
});
