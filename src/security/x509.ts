// X.509 certificates for the chip (RFC 5280): creation through @peculiar/asn1-x509's ASN.1 schema (no hand-written
// DER), parsing of the few extensions a chain check needs, and signature checks through node:crypto.

import { createHash, createPublicKey, createSign, randomBytes, X509Certificate, type KeyObject } from "node:crypto";
import { createRequire } from "node:module";
import type * as Asn1Schema from "@peculiar/asn1-schema";
import type * as Asn1X509 from "@peculiar/asn1-x509";

/**
 * The ASN.1 schema libraries, loaded on the first certificate made or parsed: they are CommonJS, so
 * `require` loads them synchronously, and a process that only imports this module (every VM does,
 * through the NSM kind and the SDK) pays nothing for them (about 15 MiB of RSS when loaded).
 */
let asn1: { schema: typeof Asn1Schema; x509: typeof Asn1X509 } | undefined;
function lib(): { schema: typeof Asn1Schema; x509: typeof Asn1X509 } {
  if (asn1 === undefined) {
    const require = createRequire(import.meta.url);
    asn1 = { schema: require("@peculiar/asn1-schema") as typeof Asn1Schema, x509: require("@peculiar/asn1-x509") as typeof Asn1X509 };
  }
  return asn1;
}

/** ecdsa-with-SHA384, RFC 5758 §3.2. */
export const OID_ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3";
/** Attribute types, RFC 5280 Appendix A.1 (id-at-*): X.520 countryName, organizationName, organizationalUnitName, commonName. */
const OID_AT_C = "2.5.4.6";
const OID_AT_O = "2.5.4.10";
const OID_AT_OU = "2.5.4.11";
const OID_AT_CN = "2.5.4.3";
/** RFC 5280 §4.1.2.2: serial numbers are positive and at most 20 octets; 16 random bytes with the top bit cleared. */
const SERIAL_BYTES = 16;

export interface SubjectName {
  cn: string;
  o?: string;
  ou?: string;
  c?: string;
}

function buildName(n: SubjectName): Asn1X509.Name {
  const { AttributeTypeAndValue, AttributeValue, Name, RelativeDistinguishedName } = lib().x509;
  const rdn = (type: string, value: Asn1X509.AttributeValue) =>
    new RelativeDistinguishedName([new AttributeTypeAndValue({ type, value })]);
  const out: Asn1X509.RelativeDistinguishedName[] = [];
  // RFC 5280 Appendix A.1: countryName is a PrintableString of 2 characters; the rest are DirectoryString (UTF8String).
  if (n.c !== undefined) out.push(rdn(OID_AT_C, new AttributeValue({ printableString: n.c })));
  if (n.o !== undefined) out.push(rdn(OID_AT_O, new AttributeValue({ utf8String: n.o })));
  if (n.ou !== undefined) out.push(rdn(OID_AT_OU, new AttributeValue({ utf8String: n.ou })));
  out.push(rdn(OID_AT_CN, new AttributeValue({ utf8String: n.cn })));
  return new Name(out);
}

function ab(u: Uint8Array): ArrayBuffer {
  return u.buffer.slice(u.byteOffset, u.byteOffset + u.byteLength) as ArrayBuffer;
}

/** Key identifier: SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 §4.2.1.2, method (1)). */
function keyIdentifier(spki: Asn1X509.SubjectPublicKeyInfo): Uint8Array {
  return new Uint8Array(createHash("sha1").update(new Uint8Array(spki.subjectPublicKey)).digest());
}

export interface CertificateRequest {
  subject: SubjectName;
  /** The certified public key. */
  publicKey: KeyObject;
  /** Issuer's name and private key; omitted for a self-signed certificate (subject and `signingKey` used). */
  issuer?: { name: SubjectName; publicKey: KeyObject } | undefined;
  signingKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  ca: boolean;
  /** RFC 5280 §4.2.1.9 pathLenConstraint, for CA certificates only. */
  pathLen?: number | undefined;
}

/** Creates a DER certificate signed with ECDSA P-384 / SHA-384. */
export function createCertificate(req: CertificateRequest): Uint8Array {
  const { AsnConvert, OctetString } = lib().schema;
  const {
    AlgorithmIdentifier, AuthorityKeyIdentifier, BasicConstraints, Certificate, Extension, Extensions, KeyIdentifier, KeyUsage,
    KeyUsageFlags, SubjectKeyIdentifier, SubjectPublicKeyInfo, TBSCertificate, Validity, Version,
    id_ce_authorityKeyIdentifier, id_ce_basicConstraints, id_ce_keyUsage, id_ce_subjectKeyIdentifier,
  } = lib().x509;
  const spki = AsnConvert.parse(new Uint8Array(req.publicKey.export({ type: "spki", format: "der" })), SubjectPublicKeyInfo);
  const issuerSpki = req.issuer
    ? AsnConvert.parse(new Uint8Array(req.issuer.publicKey.export({ type: "spki", format: "der" })), SubjectPublicKeyInfo)
    : spki;
  const serial = new Uint8Array(randomBytes(SERIAL_BYTES));
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive, and never a leading zero octet to strip
  const usage = req.ca ? KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign : KeyUsageFlags.digitalSignature;
  const basic = new BasicConstraints({ cA: req.ca });
  if (req.ca && req.pathLen !== undefined) basic.pathLenConstraint = req.pathLen;
  const ext = (extnID: string, critical: boolean, value: unknown) =>
    new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
  const extensions = new Extensions([
    // RFC 5280 §4.2.1.9: basicConstraints MUST be critical in CA certificates; we mark it critical in all of ours.
    ext(id_ce_basicConstraints, true, basic),
    // RFC 5280 §4.2.1.3: keyUsage SHOULD be critical.
    ext(id_ce_keyUsage, true, new KeyUsage(usage)),
    ext(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(ab(keyIdentifier(spki)))),
    ext(id_ce_authorityKeyIdentifier, false, new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(ab(keyIdentifier(issuerSpki))) })),
  ]);
  // RFC 5758 §3.2: the ecdsa-with-SHA384 AlgorithmIdentifier has absent parameters.
  const alg = new AlgorithmIdentifier({ algorithm: OID_ECDSA_WITH_SHA384 });
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: ab(serial),
    signature: alg,
    issuer: buildName(req.issuer ? req.issuer.name : req.subject),
    validity: new Validity({ notBefore: req.notBefore, notAfter: req.notAfter }),
    subject: buildName(req.subject),
    subjectPublicKeyInfo: spki,
    extensions,
  });
  const tbsDer = new Uint8Array(AsnConvert.serialize(tbs));
  // X.509 ECDSA signatures are a DER Ecdsa-Sig-Value (RFC 5480 §2.2 / RFC 3279 §2.2.3): node's default encoding.
  const sig = createSign("sha384").update(tbsDer).sign({ key: req.signingKey, dsaEncoding: "der" });
  const cert = new Certificate({ tbsCertificate: tbs, signatureAlgorithm: alg, signatureValue: ab(new Uint8Array(sig)) });
  return new Uint8Array(AsnConvert.serialize(cert));
}

/** What a chain check needs from one certificate. */
export interface CertInfo {
  der: Uint8Array;
  x509: X509Certificate;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  /** undefined when the extension is absent. */
  basicConstraints?: { ca: boolean; pathLen?: number | undefined; critical: boolean } | undefined;
  /** KeyUsageFlags bit mask; undefined when the extension is absent. */
  keyUsage?: number | undefined;
  publicKey: KeyObject;
  signatureAlgorithm: string;
}

export class CertificateParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CertificateParseError";
  }
}

export function parseCertificate(der: Uint8Array, what = "certificate"): CertInfo {
  const { AsnConvert } = lib().schema;
  const { BasicConstraints, Certificate, KeyUsage, id_ce_basicConstraints, id_ce_keyUsage } = lib().x509;
  let cert: Asn1X509.Certificate;
  let x509: X509Certificate;
  try {
    cert = AsnConvert.parse(der, Certificate);
    x509 = new X509Certificate(der);
  } catch (e) {
    throw new CertificateParseError(`${what} is not a DER X.509 certificate: ${(e as Error).message}`);
  }
  const tbs = cert.tbsCertificate;
  const info: CertInfo = {
    der,
    x509,
    subject: x509.subject.replace(/\n/g, ", "),
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
    publicKey: x509.publicKey,
    signatureAlgorithm: cert.signatureAlgorithm.algorithm,
  };
  for (const e of tbs.extensions ?? []) {
    if (e.extnID === id_ce_basicConstraints) {
      const bc = AsnConvert.parse(e.extnValue, BasicConstraints);
      info.basicConstraints = { ca: bc.cA, pathLen: bc.pathLenConstraint, critical: e.critical };
    } else if (e.extnID === id_ce_keyUsage) {
      info.keyUsage = AsnConvert.parse(e.extnValue, KeyUsage).toNumber();
    }
  }
  return info;
}

/** SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex (the `openssl x509 -fingerprint` form). */
export function fingerprintSha256(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex").toUpperCase().match(/../g)!.join(":");
}

export function derToPem(der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  return `-----BEGIN CERTIFICATE-----\n${b64.match(/.{1,64}/g)!.join("\n")}\n-----END CERTIFICATE-----\n`;
}

/** Accepts DER bytes or a PEM text/bytes holding exactly one certificate; returns DER. */
export function certificateDer(input: Uint8Array | string): Uint8Array {
  const text = typeof input === "string" ? input : null;
  const asText = text ?? (input instanceof Uint8Array && input[0] === 0x2d /* '-' */ ? Buffer.from(input).toString("latin1") : null);
  if (asText !== null) {
    const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(asText);
    if (!m) throw new CertificateParseError("no PEM CERTIFICATE block found");
    return new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
  }
  return input as Uint8Array;
}

/**
 * KeyUsage bits as CertInfo.keyUsage holds them (@peculiar/asn1-x509's KeyUsageFlags: bit n of
 * RFC 5280 §4.2.1.3's KeyUsage BIT STRING is 1 << n), here so that checking them loads no ASN.1
 * library; x509.test.ts checks them against the library's.
 */
export const KEY_USAGE = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
  encipherOnly: 128,
  decipherOnly: 256,
} as const;

/** A P-384 public key's SPKI in DER. */
export function spkiDer(key: KeyObject): Uint8Array {
  return new Uint8Array(createPublicKey(key).export({ type: "spki", format: "der" }));
}
