// Signed images through the SDK and the API server (the CLI's `--signature/--trust` with or without
// `--api-sock`): the signature is checked against this boot's PCR0 before anything is built, a
// bad one refuses the boot naming the failed check, a good one puts the certificate into PCR8.
// Over the fake machine (no /dev/kvm needed): what is checked here is the gate and the measurement.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { MicroVM } from "./microvm.js";
import { ImageSignatureError } from "../security/image.js";
import { signImage } from "../security/image.js";
import { bootMeasurements, PCR_IMAGE, PCR_SIGNER } from "../security/pcr.js";
import { chipInit, chipLoad } from "../security/chip.js";
import { startApiServer } from "../api/server.js";
import { apiRequest } from "../api/client.js";
import { fakeFactory, fakeKernel, tempDir } from "../api/testing.js";
import type { Vm } from "../vmm/vm.js";

const sha384 = (b: Uint8Array): Buffer => createHash("sha384").update(b).digest();

/** A signer (the chip's leaf key and certificate) and a signature over `kernel` booted with `cmdline`. */
function signedBoot(dir: string, kernelPath: string, cmdline: string) {
  chipInit(join(dir, "chip"));
  const chip = chipLoad(join(dir, "chip"));
  const pcr0 = bootMeasurements({ kernel: new Uint8Array(readFileSync(kernelPath)), cmdline, vmId: "" }).get(PCR_IMAGE)!;
  const { signature, certificate } = signImage({ pcr0, key: chip.leafKey, cert: chip.leaf.der });
  return { signature, trust: certificate };
}

test("SDK: imageSignature over this boot's PCR0 boots with the certificate in PCR8; another command line is refused before anything is built", async () => {
  const dir = tempDir("typervisor-signed-");
  const kernel = fakeKernel(dir);
  const sig = signedBoot(dir, kernel, "console=ttyS0 signed=1");
  const built: Vm[] = [];

  const vm = MicroVM.create({ kernel, cmdline: "console=ttyS0 signed=1", imageSignature: sig, vmFactory: fakeFactory(undefined, built) });
  // PCR8 = SHA384(48 zero bytes ‖ SHA384(certificate DER)) (DESIGN.md §5).
  const want = sha384(Buffer.concat([Buffer.alloc(48), sha384(sig.trust)]));
  assert.deepEqual(Buffer.from(vm.vm.pcrs.get(PCR_SIGNER)), want);
  await vm.start();
  await vm.stop("test");

  assert.throws(
    () => MicroVM.create({ kernel, cmdline: "console=ttyS0 signed=0", imageSignature: sig, vmFactory: fakeFactory(undefined, built) }),
    (e: unknown) => e instanceof ImageSignatureError && e.check === "pcr0" && /refusing to boot: the image signature does not verify \(pcr0: /.test(e.message),
  );
  const flipped = Uint8Array.from(sig.signature);
  flipped[flipped.length - 5]! ^= 0x01;
  assert.throws(
    () => MicroVM.create({ kernel, cmdline: "console=ttyS0 signed=1", imageSignature: { ...sig, signature: flipped }, vmFactory: fakeFactory(undefined, built) }),
    (e: unknown) => e instanceof ImageSignatureError && e.check === "signature",
  );
  assert.equal(built.length, 1, "a refused boot builds no VM");
  // Without a signature nothing is measured into PCR8.
  const plain = MicroVM.create({ kernel, cmdline: "console=ttyS0 signed=1", vmFactory: fakeFactory() });
  assert.deepEqual(Buffer.from(plain.vm.pcrs.get(PCR_SIGNER)), Buffer.alloc(48));
  await plain.stop("test");
});

test("API server with imageSignature: InstanceStart checks the boot source configured then — refused with a 400 naming the check, then started once it matches", async (t) => {
  const dir = tempDir("typervisor-signed-api-");
  const kernel = fakeKernel(dir);
  const sig = signedBoot(dir, kernel, "console=ttyS0 reboot=k");
  const sock = join(dir, "api.sock");
  const h = await startApiServer({ socketPath: sock, vmFactory: fakeFactory(), consoleFd: -1, imageSignature: sig });
  t.after(() => h.close());

  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: kernel, boot_args: "console=ttyS0 reboot=k init=/bin/sh" });
  let r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 400);
  assert.match((r.body as { fault_message: string }).fault_message, /^InstanceStart: refusing to boot: the image signature does not verify \(pcr0: /);
  assert.equal(((await apiRequest(sock, "GET", "/")).body as { state: string }).state, "Not started");

  await apiRequest(sock, "PUT", "/boot-source", { kernel_image_path: kernel, boot_args: "console=ttyS0 reboot=k" });
  r = await apiRequest(sock, "PUT", "/actions", { action_type: "InstanceStart" });
  assert.equal(r.status, 204, JSON.stringify(r.body));
  assert.equal(((await apiRequest(sock, "GET", "/")).body as { state: string }).state, "Running");
  assert.notDeepEqual(Buffer.from(h.vm!.pcrs.get(PCR_SIGNER)), Buffer.alloc(48));
  h.vm!.stop("test");
});
