// The nsm card for real: CBOR requests through the virtqueue in memfd guest RAM, answered in the
// worker by handleNsmRequest over the VM's SharedPcrBank, signed with the chip's leaf key; the
// main thread's view of the bank sees what the guest did, and the guest sees the host's changes.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encode, decode } from "cbor2";
import { chipInit, ChipError, type Chip } from "../security/chip.js";
import { measureBoot, toHex } from "../security/pcr.js";
import { verifyAttestation } from "../security/attestation.js";
import { r32 } from "../devices/virtio/testing.js";
import { MMIO_DEVICE_ID, MMIO_STATUS, STATUS_DEVICE_NEEDS_RESET } from "../devices/virtio/spec.js";
import { NSM_RESPONSE_MAX_SIZE } from "../devices/virtio/nsm/device.js";
import { CardConfigError, SharedPcrBank, createTransportState, signalEventfd, startCard } from "./index.js";
import { cardRig, waitUsed, type CardRig } from "./testing.js";

const REQ = 0x100000;
const RESP = 0x110000;

let chipDir: string;
let chip: Chip;
test.before(() => {
  chipDir = mkdtempSync(join(tmpdir(), "nsm-card-"));
  chip = chipInit(join(chipDir, "chip")).chip;
});
test.after(() => rmSync(chipDir, { recursive: true, force: true }));

function bootBank(): SharedPcrBank {
  return SharedPcrBank.from(measureBoot({ kernel: Buffer.from("kernel"), cmdline: "console=ttyS0", vmId: "vm-nsm" }));
}

async function nsmRig(t: TestContext, pcrs = bootBank()): Promise<CardRig & { pcrs: SharedPcrBank; call(req: unknown | Uint8Array): Promise<unknown> }> {
  const r = await cardRig(t, { kind: "nsm", config: { signer: { chipDir: join(chipDir, "chip") }, moduleId: "i-typervisor-enc0001", pcrs } });
  /** One request the way Linux nsm.c sends it: request chain, 0x3000 response chain, one kick. */
  const call = async (req: unknown): Promise<unknown> => {
    const bytes = req instanceof Uint8Array ? req : encode(req);
    r.mem.write(REQ, bytes);
    r.mem.fill(RESP, NSM_RESPONSE_MAX_SIZE, 0);
    const a = r.drv.addChain([{ addr: REQ, len: bytes.length }]);
    r.drv.publish(a);
    const b = r.drv.addChain([{ addr: RESP, len: NSM_RESPONSE_MAX_SIZE, write: true }]);
    r.drv.publish(b);
    signalEventfd(r.notifyFd);
    const used = await waitUsed(r.drv, 2);
    assert.deepEqual(used.map((u) => u.id), [a, b]);
    assert.equal(used[0]!.len, 0, "the request buffer comes back with nothing written");
    return decode(r.mem.read(RESP, used[1]!.len), { preferMap: true });
  };
  return { ...r, pcrs, call };
}

type M = Map<string, Map<string, unknown>>;
const err = (code: string) => new Map([["Error", code]]);
const sha384 = (...b: Uint8Array[]) => createHash("sha384").update(Buffer.concat(b)).digest();

test("nsm card: DescribeNSM, DescribePCR, ExtendPCR(16) seen by the main thread, Attestation verifies against the chip root with nonce and user_data", { timeout: 30_000 }, async (t) => {
  const r = await nsmRig(t);
  assert.equal(r32(r.dev, MMIO_DEVICE_ID), 33);
  const d = ((await r.call("DescribeNSM")) as M).get("DescribeNSM")!;
  assert.equal(d.get("module_id"), "i-typervisor-enc0001");
  assert.equal(d.get("max_pcrs"), 32);
  assert.deepEqual(d.get("locked_pcrs"), Array.from({ length: 16 }, (_, i) => i));

  const p0 = ((await r.call({ DescribePCR: { index: 0 } })) as M).get("DescribePCR")!;
  assert.equal(p0.get("lock"), true);
  assert.equal(toHex(p0.get("data") as Uint8Array), toHex(r.pcrs.get(0)));

  const gen = r.pcrs.generation;
  const data = new TextEncoder().encode("guest measurement");
  const ext = ((await r.call({ ExtendPCR: { index: 16, data } })) as M).get("ExtendPCR")!.get("data") as Uint8Array;
  const expected = sha384(Buffer.alloc(48), sha384(data)); // DESIGN.md §5: SHA384(old || SHA384(data))
  assert.equal(toHex(ext), expected.toString("hex"));
  assert.equal(toHex(r.pcrs.get(16)), expected.toString("hex"), "the main thread's bank holds the guest's extend");
  assert.ok(r.pcrs.generation > gen);

  // And the other way: the host extends PCR 17, the guest reads it.
  const host = r.pcrs.extend(17, new Uint8Array([1]));
  const p17 = ((await r.call({ DescribePCR: { index: 17 } })) as M).get("DescribePCR")!;
  assert.equal(toHex(p17.get("data") as Uint8Array), toHex(host));

  assert.equal(await r.call({ LockPCR: { index: 16 } }), "LockPCR");
  assert.equal(r.pcrs.isLocked(16), true, "the guest's lock is visible on the main thread");

  const nonce = new Uint8Array(32).map((_, i) => i);
  const userData = new TextEncoder().encode("user data from the guest");
  const att = ((await r.call({ Attestation: { nonce, user_data: userData, public_key: null } })) as M).get("Attestation")!;
  const doc = att.get("document") as Uint8Array;
  const v = verifyAttestation(doc, {
    root: chip.root.der,
    nonce,
    expectedPcrs: new Map([
      [0, toHex(r.pcrs.get(0))],
      [16, expected.toString("hex")],
    ]),
    maxAgeSeconds: 60,
  });
  assert.ok(v.ok, JSON.stringify(v));
  assert.deepEqual([...v.document.user_data!], [...userData]);
  assert.deepEqual([...v.document.pcrs.keys()], [...Array.from({ length: 17 }, (_, i) => i)], "every locked PCR, 16 included");
  assert.equal(v.document.module_id, "i-typervisor-enc0001");
  assert.equal(r.card.failure, undefined);
});

test("nsm card: ExtendPCR of a locked PCR is ReadOnlyIndex, bad CBOR and oversized requests get errors, the device keeps working", { timeout: 30_000 }, async (t) => {
  const r = await nsmRig(t);
  const before = toHex(r.pcrs.get(3));
  assert.deepEqual(await r.call({ ExtendPCR: { index: 3, data: new Uint8Array([1]) } }), err("ReadOnlyIndex"));
  assert.equal(toHex(r.pcrs.get(3)), before);
  assert.deepEqual(await r.call(new Uint8Array([0xff, 0x00, 0x13])), err("InvalidOperation"), "not CBOR");
  assert.deepEqual(await r.call(encode({ DescribePCR: { index: 0 } }).slice(0, 6)), err("InvalidOperation"), "truncated");
  assert.deepEqual(await r.call({ DescribePCR: { index: 99 } }), err("InvalidIndex"));
  assert.deepEqual(await r.call(new Uint8Array(0x1001)), err("InputTooLarge"));
  // A malformed pair (a response chain with no request) is answered with used length 0.
  const lone = r.drv.addChain([{ addr: RESP, len: 64, write: true }]);
  r.drv.publish(lone);
  signalEventfd(r.notifyFd);
  assert.deepEqual(await waitUsed(r.drv, 1), [{ id: lone, len: 0 }]);
  assert.equal(r32(r.dev, MMIO_STATUS) & STATUS_DEVICE_NEEDS_RESET, 0);
  const p = ((await r.call({ DescribePCR: { index: 16 } })) as M).get("DescribePCR")!;
  assert.equal(p.get("lock"), false);
  assert.equal(r.card.metrics().errors, 1);
  assert.ok(r.card.metrics().requests >= 6);
});

test("nsm card: signer material as PKCS#8 DER works; bad configuration is a start-up error", { timeout: 30_000 }, async (t) => {
  const pkcs8 = new Uint8Array(chip.leafKey.export({ format: "der", type: "pkcs8" }));
  const pcrs = bootBank();
  const r = await cardRig(t, { kind: "nsm", config: { signer: { certificate: chip.leaf.der, cabundle: [chip.root.der], signingKey: pkcs8 }, moduleId: "m", pcrs } });
  assert.equal(r32(r.dev, MMIO_DEVICE_ID), 33);
  assert.ok(pkcs8.some((b) => b !== 0), "the caller's own key bytes are not wiped");

  const base = { kind: "nsm" as const, memfd: -1, regions: [], transportState: createTransportState(), notifyFd: -1, irqFd: -1 };
  await assert.rejects(startCard({ ...base, config: { signer: { chipDir: "/nonexistent/chip" }, moduleId: "m", pcrs } }), ChipError);
  await assert.rejects(
    startCard({ ...base, config: { signer: { certificate: chip.leaf.der, cabundle: [chip.root.der], signingKey: new Uint8Array([1, 2, 3]) }, moduleId: "m", pcrs } }),
    (e: unknown) => e instanceof CardConfigError && /PKCS#8/.test((e as Error).message),
  );
  await assert.rejects(
    startCard({ ...base, config: { signer: { chipDir: join(chipDir, "chip") }, moduleId: "m", pcrs: new SharedArrayBuffer(8) as unknown as SharedPcrBank } }),
    CardConfigError,
  );
  await assert.rejects(startCard({ ...base, config: { signer: { chipDir: join(chipDir, "chip") }, moduleId: "", pcrs } }), /moduleId/);
});
