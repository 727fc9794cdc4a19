// SharedPcrBank against PcrBank: the same answers and errors for the same operations, shared
// between two views of one buffer, and accepted by handleNsmRequest.
import { test } from "node:test";
import assert from "node:assert/strict";
import { encode, decode } from "cbor2";
import { PcrBank, PcrError, measureBoot, toHex } from "../security/pcr.js";
import { handleNsmRequest } from "../security/nsm.js";
import { SharedPcrBank } from "./shared-pcr-bank.js";

const code = (f: () => unknown): string => {
  try {
    f();
    return "ok";
  } catch (e) {
    assert.ok(e instanceof PcrError, String(e));
    return e.code;
  }
};

test("SharedPcrBank behaves as PcrBank: extend, locks, lockRange, errors, lockedValues, toJSON", () => {
  const plain = measureBoot({ kernel: Buffer.from("k"), cmdline: "c", vmId: "v" });
  const shared = SharedPcrBank.from(plain);
  const ops: Array<(b: PcrBank | SharedPcrBank) => unknown> = [
    (b) => b.extend(16, new Uint8Array([1, 2])),
    (b) => b.extend(0, new Uint8Array([1])),
    (b) => b.extend(32, new Uint8Array([1])),
    (b) => b.extend(-1, new Uint8Array([1])),
    (b) => b.lock(16),
    (b) => b.lock(16),
    (b) => b.extend(16, new Uint8Array([3])),
    (b) => b.lockRange(33),
    (b) => b.lockRange(20),
    (b) => b.extend(19, new Uint8Array([3])),
    (b) => b.extend(20, new TextEncoder().encode("x")),
    (b) => b.get(1.5),
  ];
  for (const op of ops) {
    assert.equal(code(() => op(shared)), code(() => op(plain)), op.toString());
  }
  assert.deepEqual(shared.lockedIndexes(), plain.lockedIndexes());
  assert.deepEqual(shared.toJSON(), plain.toJSON());
  assert.deepEqual(
    [...shared.lockedValues()].map(([i, v]) => [i, toHex(v)]),
    [...plain.lockedValues()].map(([i, v]) => [i, toHex(v)]),
  );
  assert.equal(shared.state().locked.filter(Boolean).length, 20);
});

test("two views of one buffer see one bank; get() returns copies", () => {
  const a = new SharedPcrBank();
  const b = new SharedPcrBank(a.sab);
  const v = a.extend(16, new Uint8Array([7]));
  assert.equal(toHex(b.get(16)), toHex(v));
  b.get(16).fill(0);
  assert.equal(toHex(a.get(16)), toHex(v), "a returned value is a copy");
  b.lock(16);
  assert.equal(a.isLocked(16), true);
  assert.equal(a.generation, 2);
  assert.throws(() => new SharedPcrBank(new SharedArrayBuffer(16)), RangeError);
});

test("handleNsmRequest over a SharedPcrBank (the cast the card makes) answers as over a PcrBank", () => {
  const plain = measureBoot({ kernel: Buffer.from("k"), cmdline: "c", vmId: "v" });
  const shared = SharedPcrBank.from(plain);
  const signer = { certificate: new Uint8Array([1]), cabundle: [new Uint8Array([1])], signingKey: undefined as never };
  const ask = (bank: unknown, req: unknown) =>
    decode(handleNsmRequest({ moduleId: "m", bank: bank as PcrBank, signer }, encode(req)), { preferMap: true });
  for (const req of ["DescribeNSM", { DescribePCR: { index: 2 } }, { ExtendPCR: { index: 18, data: new Uint8Array([1]) } }, { ExtendPCR: { index: 1, data: new Uint8Array([1]) } }, { LockPCR: { index: 18 } }, { LockPCRs: { range: 24 } }]) {
    assert.deepEqual(ask(shared, req), ask(plain, req), JSON.stringify(req));
  }
  assert.equal(toHex(shared.get(18)), toHex(plain.get(18)));
});
