// Signed images: a COSE_Sign1 (ES384) over PCR0, made with a user's P-384 key, checked against a trusted certificate.
//
// Payload: the CBOR of aws-nitro-enclaves-image-format's `PcrInfo { register_index: i32, register_value: Vec<u8> }`
// as serde encodes it: a map with text keys whose value is an ARRAY of byte-sized integers (serde's default for
// Vec<u8>, not a bstr), for index 0 and the image's PCR0. The signing certificate's DER is what PCR8 measures.

import { createPrivateKey, type KeyObject } from "node:crypto";
import { encode, decode } from "cbor2";
import { parseSign1, sign1, verifySign1, CoseError } from "./cose.js";
import { PCR_IMAGE, PCR_SIZE, bootMeasurements, toHex } from "./pcr.js";
import { certificateDer, parseCertificate, KEY_USAGE } from "./x509.js";

export interface SignImageInput {
  pcr0: Uint8Array;
  /** P-384 private key: a KeyObject or PEM text. */
  key: KeyObject | string;
  /** The signing certificate (PEM or DER); checked to certify `key`. */
  cert: Uint8Array | string;
}

export class ImageSignError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ImageSignError";
  }
}

function pcrInfo(index: number, value: Uint8Array): Uint8Array {
  return encode({ register_index: index, register_value: Array.from(value) });
}

export function signImage(input: SignImageInput): { signature: Uint8Array; certificate: Uint8Array } {
  if (input.pcr0.length !== PCR_SIZE) throw new ImageSignError(`PCR0 must be ${PCR_SIZE} bytes, got ${input.pcr0.length}`);
  let key: KeyObject;
  try {
    key = typeof input.key === "string" ? createPrivateKey({ key: input.key, format: "pem" }) : input.key;
  } catch (e) {
    throw new ImageSignError(`signing key is not a PEM private key: ${(e as Error).message}`);
  }
  if (key.type !== "private" || key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "secp384r1") {
    throw new ImageSignError("signing key must be a P-384 (secp384r1) EC private key");
  }
  const der = certificateDer(input.cert);
  const cert = parseCertificate(der, "signing certificate");
  const a = cert.publicKey.export({ format: "jwk" });
  const b = key.export({ format: "jwk" });
  if (a.x !== b.x || a.y !== b.y) throw new ImageSignError("the signing certificate does not certify the signing key");
  return { signature: sign1(pcrInfo(PCR_IMAGE, input.pcr0), key), certificate: der };
}

export type ImageVerifyResult =
  | { ok: true }
  | { ok: false; check: "cose" | "payload" | "signature" | "certificate" | "pcr0"; message: string };

export interface ImageVerifyOptions {
  /** The expected PCR0 (the kernel ‖ cmdline ‖ initrd measurement). */
  pcr0: Uint8Array;
  /** The certificate trusted to sign images, PEM or DER. */
  trustedCert: Uint8Array | string;
  now?: Date | undefined;
}

export function verifyImageSignature(sig: Uint8Array, opts: ImageVerifyOptions): ImageVerifyResult {
  let cert;
  try {
    cert = parseCertificate(certificateDer(opts.trustedCert), "trusted certificate");
  } catch (e) {
    return { ok: false, check: "certificate", message: (e as Error).message };
  }
  const now = opts.now ?? new Date();
  if (now > cert.notAfter || now < cert.notBefore) {
    return { ok: false, check: "certificate", message: `trusted certificate is valid ${cert.notBefore.toISOString()} .. ${cert.notAfter.toISOString()}, not at ${now.toISOString()}` };
  }
  if (cert.keyUsage !== undefined && (cert.keyUsage & KEY_USAGE.digitalSignature) === 0) {
    return { ok: false, check: "certificate", message: "trusted certificate lacks keyUsage digitalSignature" };
  }
  let s1;
  try {
    s1 = parseSign1(sig);
  } catch (e) {
    return { ok: false, check: "cose", message: `malformed COSE_Sign1: ${(e as CoseError).message}` };
  }
  if (!verifySign1(s1, cert.publicKey)) return { ok: false, check: "signature", message: "the image signature does not verify with the trusted certificate's key" };
  let p: unknown;
  try {
    p = decode(s1.payload, { preferMap: true, rejectDuplicateKeys: true });
  } catch (e) {
    return { ok: false, check: "payload", message: `signed payload is not CBOR: ${(e as Error).message}` };
  }
  const idx = p instanceof Map ? p.get("register_index") : undefined;
  const val = p instanceof Map ? p.get("register_value") : undefined;
  if (idx !== PCR_IMAGE || !Array.isArray(val) || !val.every((x) => Number.isInteger(x) && x >= 0 && x <= 255)) {
    return { ok: false, check: "payload", message: "signed payload is not a PcrInfo {register_index: 0, register_value: [bytes]}" };
  }
  const signed = Uint8Array.from(val as number[]);
  if (toHex(signed) !== toHex(opts.pcr0)) {
    return { ok: false, check: "pcr0", message: `the image signature is for PCR0 ${toHex(signed)}, the image measures ${toHex(opts.pcr0)}` };
  }
  return { ok: true };
}

/** A boot refused because its image signature does not verify; `check` names the failed check. */
export class ImageSignatureError extends Error {
  constructor(
    readonly check: Extract<ImageVerifyResult, { ok: false }>["check"],
    detail: string,
  ) {
    super(`refusing to boot: the image signature does not verify (${check}: ${detail})`);
    this.name = "ImageSignatureError";
  }
}

/** The signature and trusted certificate a boot must carry (`typervisor sign` output; PEM or DER). */
export interface BootSignature {
  signature: Uint8Array;
  trust: Uint8Array | string;
}

/**
 * Checks `sig` against the PCR0 that this boot will measure (kernel ‖ cmdline ‖ initrd, the command
 * line as the user gave it) before anything is built. Returns the trusted certificate's DER, which
 * the VM measures into PCR8; throws ImageSignatureError otherwise.
 */
export function verifyBootSignature(sig: BootSignature, boot: { kernel: Uint8Array; initrd?: Uint8Array | undefined; cmdline: string }, now?: Date): Uint8Array {
  const pcr0 = bootMeasurements({ kernel: boot.kernel, initrd: boot.initrd, cmdline: boot.cmdline, vmId: "" }).get(PCR_IMAGE)!;
  const r = verifyImageSignature(sig.signature, { pcr0, trustedCert: sig.trust, now });
  if (!r.ok) throw new ImageSignatureError(r.check, r.message);
  return certificateDer(sig.trust);
}

