// Attestation documents as AWS Nitro Enclaves makes them, and their verification.
//
// Document: aws-nitro-enclaves-nsm-api src/api/mod.rs `AttestationDoc` (field names, order and types) inside an
// untagged COSE_Sign1 signed ES384 by the chip's leaf key. Verification follows the same project's
// docs/attestation_process.md §3 (syntactic checks 3.2.2, chain checks 3.2.3), plus root pinning, PCR, nonce and
// freshness checks; each failure names the one check that failed.

import { timingSafeEqual, type KeyObject } from "node:crypto";
import { encode, decode } from "cbor2";
import { parseSign1, plain, sign1, verifySign1, CoseError } from "./cose.js";
import { PCR_COUNT, PCR_DIGEST, toHex } from "./pcr.js";
import { certificateDer, fingerprintSha256, parseCertificate, KEY_USAGE, type CertInfo } from "./x509.js";
import type { Chip } from "./chip.js";

/** docs/attestation_process.md §3.2.2.2: user_data and nonce are 0..512 bytes. */
export const MAX_USER_DATA = 512;
export const MAX_NONCE = 512;
/** docs/attestation_process.md §3.2.2.2: public_key is 1..1024 bytes. */
export const MAX_PUBLIC_KEY = 1024;
/** docs/attestation_process.md §2.2: cert = bytes .size (1..1024), for `certificate` and each `cabundle` entry. */
export const MAX_CERT = 1024;
/** docs/attestation_process.md §3.2.2.2: a PCR value is 32, 48 or 64 bytes (SHA-256/384/512). */
const PCR_VALUE_SIZES = [32, 48, 64];
/** A document timestamp may lead the verifier's clock by this much (clock skew), never more. */
export const MAX_FUTURE_SKEW_MS = 60_000;

export interface AttestationDocument {
  module_id: string;
  digest: string;
  timestamp: number;
  pcrs: Map<number, Uint8Array>;
  certificate: Uint8Array;
  cabundle: Uint8Array[];
  public_key: Uint8Array | null;
  user_data: Uint8Array | null;
  nonce: Uint8Array | null;
}

export interface AttestationRequest {
  userData?: Uint8Array | null | undefined;
  nonce?: Uint8Array | null | undefined;
  publicKey?: Uint8Array | null | undefined;
}

export class AttestationInputError extends Error {
  constructor(
    readonly field: "user_data" | "nonce" | "public_key",
    message: string,
  ) {
    super(message);
    this.name = "AttestationInputError";
  }
}

/** Checks the request's optional fields against the Nitro bounds; throws AttestationInputError. */
export function checkAttestationRequest(req: AttestationRequest): void {
  if (req.userData != null && req.userData.length > MAX_USER_DATA) {
    throw new AttestationInputError("user_data", `user_data is ${req.userData.length} bytes; at most ${MAX_USER_DATA}`);
  }
  if (req.nonce != null && req.nonce.length > MAX_NONCE) {
    throw new AttestationInputError("nonce", `nonce is ${req.nonce.length} bytes; at most ${MAX_NONCE}`);
  }
  if (req.publicKey != null && (req.publicKey.length === 0 || req.publicKey.length > MAX_PUBLIC_KEY)) {
    throw new AttestationInputError("public_key", `public_key is ${req.publicKey.length} bytes; it must be 1..${MAX_PUBLIC_KEY}`);
  }
}

/** The CBOR payload, fields in nsm-api's struct order; absent optionals are CBOR null as the NSM emits them. */
export function encodeAttestationPayload(doc: AttestationDocument): Uint8Array {
  const pcrs = new Map<number, Uint8Array>();
  for (const i of [...doc.pcrs.keys()].sort((a, b) => a - b)) pcrs.set(i, plain(doc.pcrs.get(i)!));
  return encode({
    module_id: doc.module_id,
    digest: doc.digest,
    timestamp: doc.timestamp,
    pcrs,
    certificate: plain(doc.certificate),
    cabundle: doc.cabundle.map(plain),
    public_key: doc.public_key === null ? null : plain(doc.public_key),
    user_data: doc.user_data === null ? null : plain(doc.user_data),
    nonce: doc.nonce === null ? null : plain(doc.nonce),
  });
}

export interface DocumentSource {
  moduleId: string;
  /** Index → value of the PCRs to report: the NSM reports every locked PCR (nsm-api AttestationDoc.pcrs). */
  pcrs: Map<number, Uint8Array>;
  certificate: Uint8Array;
  /** Root first, then intermediates (docs/attestation_process.md §3.2.3). */
  cabundle: Uint8Array[];
  signingKey: KeyObject;
}

/** Builds and signs an attestation document (COSE_Sign1 bytes). */
export function createAttestationDocument(src: DocumentSource, req: AttestationRequest = {}, now: Date = new Date()): Uint8Array {
  checkAttestationRequest(req);
  const doc: AttestationDocument = {
    module_id: src.moduleId,
    digest: PCR_DIGEST,
    timestamp: now.getTime(),
    pcrs: src.pcrs,
    certificate: src.certificate,
    cabundle: src.cabundle,
    public_key: req.publicKey ?? null,
    user_data: req.userData ?? null,
    nonce: req.nonce ?? null,
  };
  return sign1(encodeAttestationPayload(doc), src.signingKey);
}

/** The chip as a document source: leaf certificate, cabundle [root]. */
export function chipDocumentSource(chip: Chip, moduleId: string, pcrs: Map<number, Uint8Array>): DocumentSource {
  return { moduleId, pcrs, certificate: chip.leaf.der, cabundle: [chip.root.der], signingKey: chip.leafKey };
}

// ---------------------------------------------------------------------------------------------------------------
// Verification

export type VerifyCheck =
  | "cose" // COSE_Sign1 structure or algorithm
  | "document" // the payload's fields (docs/attestation_process.md §3.2.2)
  | "signature" // ES384 signature with the leaf certificate's key
  | "root" // cabundle[0] is not the pinned root
  | "chain" // leaf → cabundle → root: signatures, names, basicConstraints, keyUsage, pathLen
  | "validity" // a certificate is expired or not yet valid at `now`
  | "pcrs" // an expected PCR value differs or is missing
  | "nonce" // the nonce differs or is missing
  | "freshness"; // the timestamp is older than maxAgeSeconds, or in the future

export type VerifyResult =
  | { ok: true; document: AttestationDocument }
  | { ok: false; check: VerifyCheck; message: string };

export interface VerifyOptions {
  /** The pinned root certificate, PEM or DER. */
  root: Uint8Array | string;
  /** Index → expected value in hex (case-insensitive). */
  expectedPcrs?: Map<number, string> | undefined;
  nonce?: Uint8Array | undefined;
  maxAgeSeconds?: number | undefined;
  now?: Date | undefined;
}

class Fail extends Error {
  constructor(
    readonly check: VerifyCheck,
    message: string,
  ) {
    super(message);
  }
}

function bytesField(m: Map<unknown, unknown>, key: string, min: number, max: number, optional: boolean): Uint8Array | null {
  if (!m.has(key)) {
    if (optional) return null;
    throw new Fail("document", `attestation document lacks the mandatory field ${key}`);
  }
  const v = m.get(key);
  if (v === null && optional) return null; // Nitro writes absent optionals as null
  if (!(v instanceof Uint8Array)) throw new Fail("document", `attestation document field ${key} must be a byte string`);
  if (v.length < min || v.length > max) {
    throw new Fail("document", `attestation document field ${key} is ${v.length} bytes; it must be ${min}..${max}`);
  }
  return v;
}

const KNOWN_FIELDS = new Set(["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce"]);

/** Syntactic validation, docs/attestation_process.md §3.2.2. */
export function parseAttestationPayload(payload: Uint8Array): AttestationDocument {
  let v: unknown;
  try {
    v = decode(payload, { preferMap: true, rejectDuplicateKeys: true });
  } catch (e) {
    throw new Fail("document", `attestation payload is not CBOR: ${(e as Error).message}`);
  }
  if (!(v instanceof Map)) throw new Fail("document", "attestation payload must be a CBOR map");
  for (const k of v.keys()) {
    if (typeof k !== "string" || !KNOWN_FIELDS.has(k)) throw new Fail("document", `attestation document has an unknown field ${String(k)}`);
  }
  const moduleId = v.get("module_id");
  if (typeof moduleId !== "string" || moduleId.length === 0) throw new Fail("document", "module_id must be a non-empty text string");
  const digest = v.get("digest");
  if (digest !== PCR_DIGEST) throw new Fail("document", `digest must be "${PCR_DIGEST}", got ${JSON.stringify(digest)}`);
  const ts = v.get("timestamp");
  if (typeof ts !== "number" || !Number.isSafeInteger(ts) || ts <= 0) throw new Fail("document", "timestamp must be a positive integer (ms)");
  const pcrsRaw = v.get("pcrs");
  if (!(pcrsRaw instanceof Map) || pcrsRaw.size < 1 || pcrsRaw.size > PCR_COUNT) {
    throw new Fail("document", `pcrs must be a map of 1..${PCR_COUNT} entries`);
  }
  const pcrs = new Map<number, Uint8Array>();
  for (const [k, val] of pcrsRaw) {
    if (typeof k !== "number" || !Number.isInteger(k) || k < 0 || k >= PCR_COUNT) throw new Fail("document", `pcrs key ${String(k)} is not an index 0..${PCR_COUNT - 1}`);
    if (!(val instanceof Uint8Array) || !PCR_VALUE_SIZES.includes(val.length)) throw new Fail("document", `pcrs[${k}] must be a 32, 48 or 64-byte string`);
    pcrs.set(k, val);
  }
  const certificate = bytesField(v, "certificate", 1, MAX_CERT, false)!;
  const bundle = v.get("cabundle");
  if (!Array.isArray(bundle) || bundle.length === 0) throw new Fail("document", "cabundle must be a non-empty array");
  const cabundle = bundle.map((c, i) => {
    if (!(c instanceof Uint8Array) || c.length < 1 || c.length > MAX_CERT) throw new Fail("document", `cabundle[${i}] must be a 1..${MAX_CERT}-byte string`);
    return c;
  });
  return {
    module_id: moduleId,
    digest,
    timestamp: ts,
    pcrs,
    certificate,
    cabundle,
    public_key: bytesField(v, "public_key", 1, MAX_PUBLIC_KEY, true),
    user_data: bytesField(v, "user_data", 0, MAX_USER_DATA, true),
    nonce: bytesField(v, "nonce", 0, MAX_NONCE, true),
  };
}

function parseCert(der: Uint8Array, what: string): CertInfo {
  try {
    return parseCertificate(der, what);
  } catch (e) {
    throw new Fail("document", (e as Error).message);
  }
}

function checkValidity(c: CertInfo, what: string, now: Date): void {
  if (now.getTime() > c.notAfter.getTime()) {
    throw new Fail("validity", `${what} (${c.subject}) expired on ${c.notAfter.toISOString()} (now ${now.toISOString()})`);
  }
  if (now.getTime() < c.notBefore.getTime()) {
    throw new Fail("validity", `${what} (${c.subject}) is not valid before ${c.notBefore.toISOString()} (now ${now.toISOString()})`);
  }
}

/** RFC 5280 §6.1 path checks, in the form docs/attestation_process.md §3.2.3 asks for. chain = [leaf, ..., root]. */
function checkChain(chain: { info: CertInfo; what: string }[]): void {
  for (let i = 0; i < chain.length - 1; i++) {
    const child = chain[i]!;
    const issuer = chain[i + 1]!;
    if (child.info.x509.issuer !== issuer.info.x509.subject) {
      throw new Fail("chain", `${child.what} names issuer "${child.info.x509.issuer.replace(/\n/g, ", ")}" but the next certificate is "${issuer.info.subject}"`);
    }
    if (!child.info.x509.verify(issuer.info.publicKey)) {
      throw new Fail("chain", `${child.what} signature does not verify with the key of ${issuer.what}`);
    }
    const bc = issuer.info.basicConstraints;
    if (bc === undefined || !bc.ca || !bc.critical) {
      throw new Fail("chain", `${issuer.what} issues certificates but lacks a critical basicConstraints CA:true (RFC 5280 §4.2.1.9)`);
    }
    // pathLenConstraint: the number of non-self-issued CA certificates that may follow it (RFC 5280 §4.2.1.9).
    const casBelow = i; // chain[1..i] are CAs below chain[i+1]
    if (bc.pathLen !== undefined && casBelow > bc.pathLen) {
      throw new Fail("chain", `${issuer.what} allows a path length of ${bc.pathLen}, but ${casBelow} CA certificates follow it`);
    }
    if (issuer.info.keyUsage === undefined || (issuer.info.keyUsage & KEY_USAGE.keyCertSign) === 0) {
      throw new Fail("chain", `${issuer.what} lacks keyUsage keyCertSign (RFC 5280 §4.2.1.3)`);
    }
  }
  const leaf = chain[0]!;
  if (leaf.info.keyUsage === undefined || (leaf.info.keyUsage & KEY_USAGE.digitalSignature) === 0) {
    throw new Fail("chain", `${leaf.what} lacks keyUsage digitalSignature (docs/attestation_process.md §3.2.3.3)`);
  }
  if (leaf.info.basicConstraints?.ca === true) throw new Fail("chain", `${leaf.what} is a CA certificate; the signer must be an end entity`);
  const root = chain[chain.length - 1]!;
  if (!root.info.x509.verify(root.info.publicKey)) throw new Fail("chain", `${root.what} is not self-signed`);
}

function hexEq(a: Uint8Array, hex: string): boolean {
  return toHex(a) === hex.toLowerCase();
}

/** Verifies an attestation document; says exactly which check failed. Never throws for bad input. */
export function verifyAttestation(docBytes: Uint8Array, opts: VerifyOptions): VerifyResult {
  try {
    return { ok: true, document: verifyOrThrow(docBytes, opts) };
  } catch (e) {
    if (e instanceof Fail) return { ok: false, check: e.check, message: e.message };
    if (e instanceof CoseError) return { ok: false, check: "cose", message: `malformed COSE_Sign1: ${e.message}` };
    return { ok: false, check: "document", message: `unexpected failure: ${(e as Error).message}` };
  }
}

function verifyOrThrow(docBytes: Uint8Array, opts: VerifyOptions): AttestationDocument {
  const now = opts.now ?? new Date();
  let pinnedDer: Uint8Array;
  let pinned: CertInfo;
  try {
    pinnedDer = certificateDer(opts.root);
    pinned = parseCertificate(pinnedDer, "pinned root");
  } catch (e) {
    throw new Fail("root", `the pinned root is unusable: ${(e as Error).message}`);
  }

  // 1. COSE structure and alg (RFC 8152 §4.2), then the payload's syntax (attestation_process.md §3.2.2).
  const s1 = parseSign1(docBytes);
  const doc = parseAttestationPayload(s1.payload);

  // 2. The signature, with the leaf certificate's key.
  const leaf = parseCert(doc.certificate, "signing certificate");
  const leafKey = leaf.publicKey;
  if (leafKey.asymmetricKeyType !== "ec" || leafKey.asymmetricKeyDetails?.namedCurve !== "secp384r1") {
    throw new Fail("signature", "the signing certificate's key is not P-384, so it cannot make an ES384 signature");
  }
  if (!verifySign1(s1, leafKey)) throw new Fail("signature", "the ES384 signature does not verify with the signing certificate's key");

  // 3. Root pinning: cabundle[0] must be the pinned root itself (same DER, so same SHA-256 fingerprint).
  const bundleRootFp = fingerprintSha256(doc.cabundle[0]!);
  const pinnedFp = fingerprintSha256(pinnedDer);
  if (bundleRootFp !== pinnedFp) {
    throw new Fail("root", `the document's root (SHA-256 ${bundleRootFp}) is not the pinned root (SHA-256 ${pinnedFp})`);
  }

  // 4. The chain leaf → cabundle[n-1] → ... → cabundle[0] (= pinned root), then each certificate's dates.
  const chain = [{ info: leaf, what: "signing certificate" }];
  for (let i = doc.cabundle.length - 1; i >= 1; i--) chain.push({ info: parseCert(doc.cabundle[i]!, `cabundle[${i}]`), what: `cabundle[${i}]` });
  chain.push({ info: pinned, what: "root certificate" });
  checkChain(chain);
  for (const c of chain) checkValidity(c.info, c.what, now);

  // 5. What the relying party expects: PCRs, nonce, freshness.
  for (const [i, hex] of opts.expectedPcrs ?? []) {
    const got = doc.pcrs.get(i);
    if (got === undefined) throw new Fail("pcrs", `PCR${i} is not in the document`);
    if (!hexEq(got, hex)) throw new Fail("pcrs", `PCR${i} is ${toHex(got)}, expected ${hex.toLowerCase()}`);
  }
  if (opts.nonce !== undefined) {
    if (doc.nonce === null) throw new Fail("nonce", "the document carries no nonce, one was expected");
    const a = Buffer.from(doc.nonce);
    const b = Buffer.from(opts.nonce);
    if (a.length !== b.length || !timingSafeEqual(a, b)) throw new Fail("nonce", "the document's nonce is not the expected one");
  }
  if (opts.maxAgeSeconds !== undefined) {
    const ageMs = now.getTime() - doc.timestamp;
    if (ageMs > opts.maxAgeSeconds * 1000) {
      throw new Fail("freshness", `the document is ${Math.round(ageMs / 1000)} s old (made ${new Date(doc.timestamp).toISOString()}); at most ${opts.maxAgeSeconds} s allowed — replayed or stale`);
    }
  }
  if (doc.timestamp - now.getTime() > MAX_FUTURE_SKEW_MS) {
    throw new Fail("freshness", `the document's timestamp ${new Date(doc.timestamp).toISOString()} is in the future (now ${now.toISOString()})`);
  }
  return doc;
}
