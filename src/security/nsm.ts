// The Nitro Secure Module request handler: CBOR request bytes in, CBOR response bytes out, as a pure function over
// an explicit state. The guest-facing virtio device (ID 33, DESIGN.md §5) only has to move bytes to and from it.
//
// Messages are aws-nitro-enclaves-nsm-api src/api/mod.rs `Request`/`Response` as serde encodes them into CBOR
// (externally tagged enums): a unit variant is a text string ("DescribeNSM"), a struct variant a one-entry map
// ({"DescribePCR": {"index": 0}}), an error {"Error": "InvalidIndex"}. Byte fields are serde_bytes (CBOR bstr).

import { randomBytes } from "node:crypto";
import { encode, decode } from "cbor2";
import { plain } from "./cose.js";
import { PcrError, PCR_COUNT, PCR_DIGEST, type PcrRegisters } from "./pcr.js";
import { AttestationInputError, MAX_NONCE, MAX_PUBLIC_KEY, MAX_USER_DATA, createAttestationDocument, type DocumentSource } from "./attestation.js";

/** aws-nitro-enclaves-nsm-api src/driver/mod.rs: NSM_REQUEST_MAX_SIZE = 0x1000 (the Linux nsm driver's limit too). */
export const NSM_REQUEST_MAX_SIZE = 0x1000;
/** aws-nitro-enclaves-nsm-api src/driver/mod.rs: NSM_RESPONSE_MAX_SIZE = 0x3000, the response buffer the guest offers. */
export const NSM_RESPONSE_MAX_SIZE = 0x3000;
/** Bytes of entropy per GetRandom; QEMU's virtio-nsm (NSM_RND_BUF_SIZE) and the Nitro NSM both give 256. */
export const NSM_RANDOM_SIZE = 256;
/** PCR indexes travel as u16 (nsm-api Request::DescribePCR { index: u16 }). */
const U16_MAX = 0xffff;
/** DescribeNSM version we report: API 1.0.0 (the nsm-api major version whose messages we implement). */
export const NSM_VERSION = { major: 1, minor: 0, patch: 0 } as const;

/** nsm-api api::ErrorCode (the variants a module returns; Success and InvalidResponse are client-side only). */
export type NsmErrorCode =
  | "InvalidArgument"
  | "InvalidIndex"
  | "ReadOnlyIndex"
  | "InvalidOperation"
  | "BufferTooSmall"
  | "InputTooLarge"
  | "InternalError";

export interface NsmState {
  moduleId: string;
  bank: PcrRegisters;
  /** Leaf certificate, cabundle and signing key; PCRs are taken from `bank` at request time. */
  signer: Omit<DocumentSource, "pcrs" | "moduleId">;
  /** Injected for tests; default node:crypto randomBytes. */
  random?: ((n: number) => Uint8Array) | undefined;
  /** Injected for tests; default the wall clock. */
  now?: (() => Date) | undefined;
}

class NsmFail extends Error {
  constructor(readonly code: NsmErrorCode) {
    super(code);
  }
}

function errorResponse(code: NsmErrorCode): Uint8Array {
  return encode({ Error: code });
}

function args(body: unknown): Map<unknown, unknown> {
  if (!(body instanceof Map)) throw new NsmFail("InvalidArgument");
  return body;
}

function u16(m: Map<unknown, unknown>, key: string): number {
  const v = m.get(key);
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > U16_MAX) throw new NsmFail("InvalidArgument");
  return v;
}

/** serde_bytes accepts a byte string or a text string (its bytes); both as QEMU's virtio-nsm does. */
function bytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (typeof v === "string") return new TextEncoder().encode(v);
  throw new NsmFail("InvalidArgument");
}

/** Option<ByteBuf>: absent or null is None. */
function optBytes(m: Map<unknown, unknown>, key: string, max: number): Uint8Array | null {
  const v = m.get(key);
  if (v === undefined || v === null) return null;
  const b = bytes(v);
  if (b.length > max) throw new NsmFail("InputTooLarge");
  return b;
}

function pcrIndex(m: Map<unknown, unknown>): number {
  const i = u16(m, "index");
  if (i >= PCR_COUNT) throw new NsmFail("InvalidIndex");
  return i;
}

function pcrOp<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof PcrError) throw new NsmFail(e.code);
    throw e;
  }
}

function dispatch(state: NsmState, name: string, body: unknown, unit: boolean): unknown {
  switch (name) {
    case "DescribeNSM":
      if (!unit) throw new NsmFail("InvalidOperation");
      // Field order as nsm-api Response::DescribeNSM declares them.
      return {
        DescribeNSM: {
          version_major: NSM_VERSION.major,
          version_minor: NSM_VERSION.minor,
          version_patch: NSM_VERSION.patch,
          module_id: state.moduleId,
          max_pcrs: PCR_COUNT,
          locked_pcrs: state.bank.lockedIndexes(),
          digest: PCR_DIGEST,
        },
      };
    case "GetRandom": {
      if (!unit) throw new NsmFail("InvalidOperation");
      const r = (state.random ?? ((n: number) => new Uint8Array(randomBytes(n))))(NSM_RANDOM_SIZE);
      return { GetRandom: { random: plain(r) } };
    }
    case "DescribePCR": {
      if (unit) throw new NsmFail("InvalidOperation");
      const i = pcrIndex(args(body));
      return { DescribePCR: { lock: state.bank.isLocked(i), data: plain(state.bank.get(i)) } };
    }
    case "ExtendPCR": {
      if (unit) throw new NsmFail("InvalidOperation");
      const m = args(body);
      const i = pcrIndex(m);
      if (!m.has("data")) throw new NsmFail("InvalidArgument");
      const data = bytes(m.get("data"));
      return { ExtendPCR: { data: plain(pcrOp(() => state.bank.extend(i, data))) } };
    }
    case "LockPCR": {
      if (unit) throw new NsmFail("InvalidOperation");
      const i = pcrIndex(args(body));
      pcrOp(() => state.bank.lock(i));
      return "LockPCR";
    }
    case "LockPCRs": {
      if (unit) throw new NsmFail("InvalidOperation");
      const range = u16(args(body), "range");
      pcrOp(() => state.bank.lockRange(range));
      return "LockPCRs";
    }
    case "Attestation": {
      if (unit) throw new NsmFail("InvalidOperation");
      const m = args(body);
      const req = {
        userData: optBytes(m, "user_data", MAX_USER_DATA),
        nonce: optBytes(m, "nonce", MAX_NONCE),
        publicKey: optBytes(m, "public_key", MAX_PUBLIC_KEY),
      };
      if (req.publicKey !== null && req.publicKey.length === 0) throw new NsmFail("InvalidArgument");
      let document: Uint8Array;
      try {
        document = createAttestationDocument(
          { ...state.signer, moduleId: state.moduleId, pcrs: state.bank.lockedValues() },
          req,
          (state.now ?? (() => new Date()))(),
        );
      } catch (e) {
        if (e instanceof AttestationInputError) throw new NsmFail("InputTooLarge");
        throw e;
      }
      return { Attestation: { document } };
    }
    default:
      throw new NsmFail("InvalidOperation");
  }
}

/**
 * Handles one NSM request. Never throws: every failure is an {"Error": code} response, and `state` is changed only by
 * a request that succeeds (ExtendPCR, LockPCR, LockPCRs).
 */
export function handleNsmRequest(state: NsmState, request: Uint8Array): Uint8Array {
  try {
    if (request.length > NSM_REQUEST_MAX_SIZE) return errorResponse("InputTooLarge");
    if (request.length === 0) return errorResponse("InvalidOperation");
    let v: unknown;
    try {
      // Maps as Map so that non-text keys cannot masquerade as fields; duplicate keys are hostile, not "last wins".
      v = decode(request, { preferMap: true, rejectDuplicateKeys: true });
    } catch {
      return errorResponse("InvalidOperation");
    }
    let response: unknown;
    if (typeof v === "string") {
      response = dispatch(state, v, undefined, true);
    } else if (v instanceof Map && v.size === 1) {
      const [[name, body]] = [...v.entries()] as [[unknown, unknown]];
      if (typeof name !== "string") return errorResponse("InvalidOperation");
      response = dispatch(state, name, body, false);
    } else {
      return errorResponse("InvalidOperation");
    }
    const out = encode(response);
    if (out.length > NSM_RESPONSE_MAX_SIZE) return errorResponse("BufferTooSmall");
    return out;
  } catch (e) {
    if (e instanceof NsmFail) return errorResponse(e.code);
    return errorResponse("InternalError");
  }
}

/** A fresh NSM state whose PCRs are `bank` (from measureBoot) and whose signer is a chip's leaf. */
export function nsmStateFromChip(
  chip: { leaf: { der: Uint8Array }; root: { der: Uint8Array }; leafKey: DocumentSource["signingKey"] },
  bank: PcrRegisters,
  moduleId: string,
): NsmState {
  return { moduleId, bank, signer: { certificate: chip.leaf.der, cabundle: [chip.root.der], signingKey: chip.leafKey } };
}
