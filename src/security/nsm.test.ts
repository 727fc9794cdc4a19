// The NSM request handler: nsm-api message shapes (serde CBOR), and hostile requests that must get the right error
// while the state stays usable.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { encode, decode } from "cbor2";
import { chipInit } from "./chip.js";
import { measureBoot, toHex } from "./pcr.js";
import { handleNsmRequest, nsmStateFromChip, NSM_REQUEST_MAX_SIZE, NSM_RANDOM_SIZE, type NsmState } from "./nsm.js";
import { verifyAttestation } from "./attestation.js";

const chip = chipInit(join(mkdtempSync(join(tmpdir(), "tv-nsm-")), "chip")).chip;

function fresh(): NsmState {
  const bank = measureBoot({ kernel: Buffer.from("k"), cmdline: "c", vmId: "vm" });
  return nsmStateFromChip(chip, bank, "i-typervisor-enc0001");
}
function call(s: NsmState, req: unknown): unknown {
  return decode(handleNsmRequest(s, encode(req)), { preferMap: true });
}
function raw(s: NsmState, bytes: Uint8Array): unknown {
  return decode(handleNsmRequest(s, bytes), { preferMap: true });
}
const err = (code: string) => new Map([["Error", code]]);

test("DescribeNSM (unit variant as a text string) answers nsm-api's DescribeNSM struct", () => {
  const r = call(fresh(), "DescribeNSM") as Map<string, Map<string, unknown>>;
  const d = r.get("DescribeNSM")!;
  assert.deepEqual([...d.keys()], ["version_major", "version_minor", "version_patch", "module_id", "max_pcrs", "locked_pcrs", "digest"]);
  assert.equal(d.get("max_pcrs"), 32);
  assert.equal(d.get("digest"), "SHA384");
  assert.equal(d.get("module_id"), "i-typervisor-enc0001");
  assert.deepEqual(d.get("locked_pcrs"), Array.from({ length: 16 }, (_, i) => i));
});

test("DescribePCR / ExtendPCR / LockPCR / LockPCRs shapes and semantics", () => {
  const s = fresh();
  const d0 = (call(s, { DescribePCR: { index: 0 } }) as Map<string, Map<string, unknown>>).get("DescribePCR")!;
  assert.deepEqual([...d0.keys()], ["lock", "data"]);
  assert.equal(d0.get("lock"), true);
  assert.equal(toHex(d0.get("data") as Uint8Array), toHex(s.bank.get(0)));

  const data = new Uint8Array([1, 2, 3]);
  const ext = (call(s, { ExtendPCR: { index: 16, data } }) as Map<string, Map<string, Uint8Array>>).get("ExtendPCR")!.get("data")!;
  const expected = createHash("sha384").update(Buffer.concat([Buffer.alloc(48), createHash("sha384").update(data).digest()])).digest("hex");
  assert.equal(toHex(ext), expected);
  assert.equal(call(s, { LockPCR: { index: 16 } }), "LockPCR", "unit response as a text string");
  assert.deepEqual(call(s, { ExtendPCR: { index: 16, data } }), err("ReadOnlyIndex"));
  assert.deepEqual(call(s, { LockPCR: { index: 16 } }), err("ReadOnlyIndex"), "already locked");
  assert.deepEqual(call(s, { LockPCR: { index: 3 } }), err("ReadOnlyIndex"), "boot-locked PCRs cannot be locked again (nsm-check.rs)");
  assert.deepEqual(call(s, { ExtendPCR: { index: 0, data } }), err("ReadOnlyIndex"));
  assert.equal(call(s, { LockPCRs: { range: 32 } }), "LockPCRs");
  assert.deepEqual(call(s, { LockPCRs: { range: 33 } }), err("InvalidIndex"));
  assert.deepEqual(call(s, { ExtendPCR: { index: 31, data } }), err("ReadOnlyIndex"));
});

test("Attestation: a document with every locked PCR, the nonce and user data, verifiable against the chip root", () => {
  const s = fresh();
  call(s, { ExtendPCR: { index: 17, data: new Uint8Array([9]) } });
  call(s, { LockPCR: { index: 17 } });
  const nonce = new Uint8Array(32).fill(7);
  const r = call(s, { Attestation: { user_data: new Uint8Array([5]), nonce, public_key: null } }) as Map<string, Map<string, Uint8Array>>;
  const document = r.get("Attestation")!.get("document")!;
  const v = verifyAttestation(document, { root: chip.root.der, nonce, expectedPcrs: new Map([[17, toHex(s.bank.get(17))]]), maxAgeSeconds: 60 });
  assert.ok(v.ok, JSON.stringify(v));
  assert.deepEqual([...v.document.pcrs.keys()], [...Array.from({ length: 16 }, (_, i) => i), 17]);
  assert.deepEqual([...v.document.user_data!], [5]);
  assert.equal(v.document.public_key, null);
  // All fields omitted (serde Option: missing = None) is fine too.
  assert.ok((call(s, { Attestation: {} }) as Map<string, unknown>).has("Attestation"));
});

test("GetRandom answers 256 bytes, different each time", () => {
  const s = fresh();
  const a = (call(s, "GetRandom") as Map<string, Map<string, Uint8Array>>).get("GetRandom")!.get("random")!;
  const b = (call(s, "GetRandom") as Map<string, Map<string, Uint8Array>>).get("GetRandom")!.get("random")!;
  assert.equal(a.length, NSM_RANDOM_SIZE);
  assert.notEqual(toHex(a), toHex(b));
});

test("GetRandom, byte for byte as Linux's nsm driver reads it (drivers/misc/nsm.c: the request it sends, the response prefix it compares, then a byte string)", () => {
  const s = fresh();
  // fill_req_get_random: text(9) "GetRandom", exactly these 10 bytes.
  const req = Uint8Array.from([0x69, ...Buffer.from("GetRandom")]);
  const resp = handleNsmRequest(s, req);
  // parse_resp_get_random: memcmp with map(1) text(9) "GetRandom" map(1) text(6) "random", then
  // cbor_object_get_array on the rest: major type 2 (0x40) with a 1/2/4/8-byte length, that many bytes.
  const prefix = Uint8Array.from([0xa1, 0x69, ...Buffer.from("GetRandom"), 0xa1, 0x66, ...Buffer.from("random")]);
  assert.deepEqual(resp.subarray(0, prefix.length), prefix);
  const rest = resp.subarray(prefix.length);
  assert.equal(rest[0]! & 0xe0, 0x40, "a byte string");
  assert.equal(rest[0], 0x59, "NSM_RANDOM_SIZE = 256 takes a 2-byte length (25)");
  assert.equal((rest[1]! << 8) | rest[2]!, NSM_RANDOM_SIZE);
  assert.equal(rest.length, 3 + NSM_RANDOM_SIZE, "nothing after the bytes");
});

test("hostile requests get the right error and the state stays usable", () => {
  const s = fresh();
  const before = toHex(s.bank.get(16));
  const cases: [string, Uint8Array, string][] = [
    ["not CBOR", new Uint8Array([0xff, 0xff]), "InvalidOperation"],
    ["truncated CBOR", encode({ DescribePCR: { index: 0 } }).slice(0, 5), "InvalidOperation"],
    ["empty request", new Uint8Array(0), "InvalidOperation"],
    ["trailing bytes", new Uint8Array([...encode("DescribeNSM"), 0x00]), "InvalidOperation"],
    ["unknown request", encode("Shutdown"), "InvalidOperation"],
    ["unit request as a map", encode({ DescribeNSM: null }), "InvalidOperation"],
    ["struct request as a string", encode("DescribePCR"), "InvalidOperation"],
    ["two requests in one map", encode({ DescribePCR: { index: 0 }, LockPCR: { index: 20 } }), "InvalidOperation"],
    ["integer request key", encode(new Map([[1, { index: 0 }]])), "InvalidOperation"],
    ["array request", encode(["DescribePCR", 0]), "InvalidOperation"],
    ["duplicate keys", new Uint8Array([0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02]), "InvalidOperation"],
    ["index out of range", encode({ DescribePCR: { index: 32 } }), "InvalidIndex"],
    ["index at u16 max", encode({ ExtendPCR: { index: 0xffff, data: new Uint8Array(1) } }), "InvalidIndex"],
    ["index beyond u16", encode({ DescribePCR: { index: 0x10000 } }), "InvalidArgument"],
    ["negative index", encode({ DescribePCR: { index: -1 } }), "InvalidArgument"],
    ["float index", encode({ DescribePCR: { index: 1.5 } }), "InvalidArgument"],
    ["text index", encode({ DescribePCR: { index: "0" } }), "InvalidArgument"],
    ["bignum index", new Uint8Array([0xa1, 0x6b, ...Buffer.from("DescribePCR"), 0xa1, 0x65, ...Buffer.from("index"), 0xc2, 0x41, 0x00]), "InvalidArgument"],
    ["missing index", encode({ DescribePCR: {} }), "InvalidArgument"],
    ["args not a map", encode({ DescribePCR: [0] }), "InvalidArgument"],
    ["extend without data", encode({ ExtendPCR: { index: 16 } }), "InvalidArgument"],
    ["extend data of wrong type", encode({ ExtendPCR: { index: 16, data: 5 } }), "InvalidArgument"],
    ["extend a locked PCR", encode({ ExtendPCR: { index: 2, data: new Uint8Array(1) } }), "ReadOnlyIndex"],
    ["LockPCRs range of wrong type", encode({ LockPCRs: { range: true } }), "InvalidArgument"],
    ["user_data > 512", encode({ Attestation: { user_data: new Uint8Array(513) } }), "InputTooLarge"],
    ["nonce > 512", encode({ Attestation: { nonce: new Uint8Array(513) } }), "InputTooLarge"],
    ["public_key > 1024", encode({ Attestation: { public_key: new Uint8Array(1025) } }), "InputTooLarge"],
    ["empty public_key", encode({ Attestation: { public_key: new Uint8Array(0) } }), "InvalidArgument"],
    ["nonce of wrong type", encode({ Attestation: { nonce: 12 } }), "InvalidArgument"],
    ["request over 0x1000 bytes", encode({ ExtendPCR: { index: 16, data: new Uint8Array(NSM_REQUEST_MAX_SIZE) } }), "InputTooLarge"],
    ["deep nesting", new Uint8Array([0xa1, 0x6b, ...Buffer.from("DescribePCR"), ...new Array(2000).fill(0x81), 0x00]), "InvalidOperation"],
  ];
  for (const [what, bytes, code] of cases) {
    const r = raw(s, bytes);
    assert.deepEqual(r, err(code), `${what}: got ${JSON.stringify([...(r instanceof Map ? r : new Map())])}`);
  }
  assert.equal(toHex(s.bank.get(16)), before, "no hostile request changed PCR16");
  assert.equal(s.bank.isLocked(20), false, "the two-request map locked nothing");
  // Still fully usable.
  assert.ok((call(s, { ExtendPCR: { index: 16, data: new Uint8Array([1]) } }) as Map<string, unknown>).has("ExtendPCR"));
  assert.ok((call(s, "DescribeNSM") as Map<string, unknown>).has("DescribeNSM"));
  // Text data is accepted as its bytes (serde_bytes does; so does QEMU's virtio-nsm).
  assert.ok((call(s, { ExtendPCR: { index: 18, data: "abc" } }) as Map<string, unknown>).has("ExtendPCR"));
});
