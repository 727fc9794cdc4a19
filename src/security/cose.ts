// COSE_Sign1 with ES384 only (RFC 8152 §4.2, §4.4, §8.1), untagged as the Nitro NSM emits it.

import { createSign, createVerify, type KeyObject } from "node:crypto";
import { encode, decode, Tag } from "cbor2";

/** COSE header label 1 = alg (RFC 8152 §3.1, Table 2). */
export const COSE_HEADER_ALG = 1;
/** COSE alg -35 = ES384, ECDSA with SHA-384 (RFC 8152 §8.1, Table 5). */
export const COSE_ALG_ES384 = -35;
/** CBOR tag 18 = COSE_Sign1 (RFC 8152 §2, Table 1); accepted on input, never emitted (Nitro emits untagged). */
export const COSE_SIGN1_TAG = 18;
/** ES384 signature: r ‖ s, each the P-384 group size of 48 bytes (RFC 8152 §8.1). */
export const ES384_SIGNATURE_SIZE = 96;
/** Sig_structure context for COSE_Sign1 (RFC 8152 §4.4). */
const SIG_CONTEXT_SIGN1 = "Signature1";

/** A plain Uint8Array view: cbor2 encodes a Node Buffer as an object, not a byte string. */
export function plain(b: Uint8Array): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** The serialized protected header {1: -35}: bytes a1 01 38 22. */
export function es384ProtectedHeader(): Uint8Array {
  return encode(new Map([[COSE_HEADER_ALG, COSE_ALG_ES384]]));
}

/** Sig_structure = ["Signature1", body_protected, external_aad, payload] (RFC 8152 §4.4). */
export function sigStructure(protectedHeader: Uint8Array, payload: Uint8Array, externalAad = new Uint8Array(0)): Uint8Array {
  return encode([SIG_CONTEXT_SIGN1, plain(protectedHeader), plain(externalAad), plain(payload)]);
}

/** Signs `payload` into an untagged COSE_Sign1 [protected, {}, payload, signature] with a P-384 key. */
export function sign1(payload: Uint8Array, key: KeyObject): Uint8Array {
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "secp384r1") {
    throw new Error("ES384 needs a P-384 (secp384r1) EC private key");
  }
  const prot = es384ProtectedHeader();
  const signer = createSign("sha384");
  signer.update(sigStructure(prot, payload));
  // IEEE P1363 r‖s, not DER: RFC 8152 §8.1.
  const sig = new Uint8Array(signer.sign({ key, dsaEncoding: "ieee-p1363" }));
  return encode([prot, new Map(), plain(payload), sig]);
}

export interface Sign1 {
  protectedHeader: Uint8Array;
  payload: Uint8Array;
  signature: Uint8Array;
}

export class CoseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CoseError";
  }
}

/** Parses a COSE_Sign1 and checks its shape and alg (ES384); the signature is NOT checked here. */
export function parseSign1(bytes: Uint8Array): Sign1 {
  let v: unknown;
  try {
    v = decode(bytes, { preferMap: true, rejectDuplicateKeys: true });
  } catch (e) {
    throw new CoseError(`not CBOR: ${(e as Error).message}`);
  }
  if (v instanceof Tag) {
    if (Number(v.tag) !== COSE_SIGN1_TAG) throw new CoseError(`CBOR tag ${String(v.tag)} is not COSE_Sign1 (18)`);
    v = v.contents;
  }
  if (!Array.isArray(v) || v.length !== 4) throw new CoseError("COSE_Sign1 must be a 4-element array");
  const [prot, unprot, payload, signature] = v as unknown[];
  if (!(prot instanceof Uint8Array)) throw new CoseError("COSE_Sign1 protected header must be a byte string");
  if (!(unprot instanceof Map)) throw new CoseError("COSE_Sign1 unprotected header must be a map");
  if (!(payload instanceof Uint8Array)) throw new CoseError("COSE_Sign1 payload must be a byte string (detached payloads are not supported)");
  if (!(signature instanceof Uint8Array)) throw new CoseError("COSE_Sign1 signature must be a byte string");
  let hdr: unknown;
  try {
    hdr = decode(prot, { preferMap: true, rejectDuplicateKeys: true });
  } catch (e) {
    throw new CoseError(`COSE_Sign1 protected header is not CBOR: ${(e as Error).message}`);
  }
  if (!(hdr instanceof Map)) throw new CoseError("COSE_Sign1 protected header must encode a map");
  const alg = hdr.get(COSE_HEADER_ALG);
  if (alg !== COSE_ALG_ES384) throw new CoseError(`COSE alg ${String(alg)} is not ES384 (-35)`);
  // RFC 8152 §3: alg must not also sit in the unprotected bucket.
  if (unprot.has(COSE_HEADER_ALG)) throw new CoseError("COSE alg must not appear in the unprotected header");
  if (signature.length !== ES384_SIGNATURE_SIZE) {
    throw new CoseError(`ES384 signature must be ${ES384_SIGNATURE_SIZE} bytes (r‖s), got ${signature.length}`);
  }
  return { protectedHeader: prot, payload, signature };
}

/** Checks the ES384 signature of a parsed COSE_Sign1 with a public key. */
export function verifySign1(s: Sign1, publicKey: KeyObject): boolean {
  const v = createVerify("sha384");
  v.update(sigStructure(s.protectedHeader, s.payload));
  try {
    return v.verify({ key: publicKey, dsaEncoding: "ieee-p1363" }, s.signature);
  } catch {
    return false;
  }
}
