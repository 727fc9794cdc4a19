// Chip identity: a root CA and a leaf (signing) certificate, each with its own P-384 key, kept in one directory.
//
// The identity is the root: `chipInit` creates it once and reuses it on every later run. A missing or corrupt file
// is an error that names the file; nothing here ever replaces an identity silently. The only thing `chipInit`
// re-issues on its own is an expired leaf, signed by the same root key (so verifiers pinned to the root still work).

import { closeSync, constants, existsSync, fstatSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import {
  createCertificate,
  derToPem,
  fingerprintSha256,
  parseCertificate,
  certificateDer,
  type CertInfo,
  type SubjectName,
} from "./x509.js";

/** File names inside a chip directory. */
export const CHIP_FILES = {
  rootKey: "root-key.pem",
  rootCertPem: "root-cert.pem",
  rootCertDer: "root-cert.der",
  leafKey: "leaf-key.pem",
  leafCertPem: "leaf-cert.pem",
  leafCertDer: "leaf-cert.der",
} as const;

/** Owner read/write only, for every file; owner-only directory. */
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
/** Permission bits for group and others (POSIX st_mode). */
const GROUP_OTHER_BITS = 0o077;

/** The root lives 30 years, as the AWS Nitro Enclaves root (nsm-api docs/attestation_process.md §2.1). */
export const ROOT_VALIDITY_DAYS = 30 * 365;
/** The leaf is re-issued by `chipInit` when it expires. Nitro's own leaves live hours; ours outlive a VM host's uptime. */
export const LEAF_VALIDITY_DAYS = 365;
/** Backdating the start absorbs clock skew between the host and a verifier (RFC 5280 §4.1.2.5 leaves it to us). */
const NOT_BEFORE_SKEW_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

export const ROOT_SUBJECT: SubjectName = { c: "US", o: "Typervisor", ou: "Security chip", cn: "Typervisor Nitro-compatible root" };
export const LEAF_SUBJECT: SubjectName = { c: "US", o: "Typervisor", ou: "Security chip", cn: "Typervisor Nitro-compatible chip" };

export class ChipError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ChipError";
  }
}

export interface Chip {
  dir: string;
  rootKey: KeyObject;
  root: CertInfo;
  leafKey: KeyObject;
  leaf: CertInfo;
  /** SHA-256 fingerprint of the root certificate's DER (colon-separated upper-case hex). */
  rootFingerprint: string;
}

function writeNew(path: string, data: string | Uint8Array): void {
  // O_EXCL: never overwrite; a concurrent init or a leftover file makes this fail loudly.
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data, "utf8") : data);
  } finally {
    closeSync(fd);
  }
}

function writeReplace(path: string, data: string | Uint8Array): void {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, FILE_MODE);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data, "utf8") : data);
  } finally {
    closeSync(fd);
  }
}

function readChipFile(dir: string, name: string): Buffer {
  const path = join(dir, name);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new ChipError(`chip identity in ${dir} is incomplete: ${name} is missing`);
    if (code === "ELOOP") throw new ChipError(`chip file ${path} is a symbolic link; refusing it`);
    throw new ChipError(`cannot read chip file ${path}: ${code ?? (e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ChipError(`chip file ${path} is not a regular file`);
    if ((st.mode & GROUP_OTHER_BITS) !== 0) {
      throw new ChipError(`chip file ${path} has mode ${(st.mode & 0o777).toString(8)}; it must be 600 (owner only)`);
    }
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

function loadKey(dir: string, name: string): KeyObject {
  const pem = readChipFile(dir, name);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: "pem" });
  } catch (e) {
    throw new ChipError(`chip file ${join(dir, name)} is corrupt: not a PEM private key (${(e as Error).message})`);
  }
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "secp384r1") {
    throw new ChipError(`chip file ${join(dir, name)} is corrupt: not a P-384 EC private key`);
  }
  return key;
}

function loadCert(dir: string, pemName: string, derName: string): CertInfo {
  const pem = readChipFile(dir, pemName);
  const derFile = new Uint8Array(readChipFile(dir, derName));
  let fromPem: Uint8Array;
  let info: CertInfo;
  try {
    fromPem = certificateDer(pem.toString("latin1"));
    info = parseCertificate(fromPem, pemName);
  } catch (e) {
    throw new ChipError(`chip file ${join(dir, pemName)} is corrupt: ${(e as Error).message}`);
  }
  if (Buffer.compare(Buffer.from(fromPem), Buffer.from(derFile)) !== 0) {
    throw new ChipError(`chip file ${join(dir, derName)} is corrupt: it differs from ${pemName}`);
  }
  return info;
}

function sameKey(priv: KeyObject, cert: CertInfo): boolean {
  const a = priv.export({ format: "jwk" });
  const b = cert.publicKey.export({ format: "jwk" });
  return a.x === b.x && a.y === b.y && a.crv === b.crv;
}

/** Loads and cross-checks an existing identity. Every inconsistency names the file at fault. */
export function chipLoad(dir: string): Chip {
  if (!existsSync(dir)) throw new ChipError(`no chip identity at ${dir}: directory does not exist (run chip init)`);
  const rootKey = loadKey(dir, CHIP_FILES.rootKey);
  const root = loadCert(dir, CHIP_FILES.rootCertPem, CHIP_FILES.rootCertDer);
  const leafKey = loadKey(dir, CHIP_FILES.leafKey);
  const leaf = loadCert(dir, CHIP_FILES.leafCertPem, CHIP_FILES.leafCertDer);
  if (!sameKey(rootKey, root)) {
    throw new ChipError(`chip file ${join(dir, CHIP_FILES.rootCertPem)} does not certify the key in ${CHIP_FILES.rootKey}`);
  }
  if (!root.x509.verify(root.publicKey)) {
    throw new ChipError(`chip file ${join(dir, CHIP_FILES.rootCertPem)} is corrupt: its self-signature does not verify`);
  }
  if (!sameKey(leafKey, leaf)) {
    throw new ChipError(`chip file ${join(dir, CHIP_FILES.leafCertPem)} does not certify the key in ${CHIP_FILES.leafKey}`);
  }
  if (!leaf.x509.verify(root.publicKey)) {
    throw new ChipError(`chip file ${join(dir, CHIP_FILES.leafCertPem)} was not signed by the root in ${CHIP_FILES.rootCertPem}`);
  }
  return { dir, rootKey, root, leafKey, leaf, rootFingerprint: fingerprintSha256(root.der) };
}

function newKey(): { privateKey: KeyObject; publicKey: KeyObject } {
  // P-384 (secp384r1): the curve of ES384, RFC 8152 §8.1.
  return generateKeyPairSync("ec", { namedCurve: "P-384" });
}

function issueLeaf(rootKey: KeyObject, root: CertInfo, leafKey: { privateKey: KeyObject; publicKey: KeyObject }, now: Date): Uint8Array {
  return createCertificate({
    subject: LEAF_SUBJECT,
    publicKey: leafKey.publicKey,
    issuer: { name: ROOT_SUBJECT, publicKey: root.publicKey },
    signingKey: rootKey,
    notBefore: new Date(now.getTime() - NOT_BEFORE_SKEW_MS),
    notAfter: new Date(now.getTime() + LEAF_VALIDITY_DAYS * DAY_MS),
    ca: false,
  });
}

export interface ChipInitResult {
  chip: Chip;
  /** "created": a new identity; "reused": the existing one; "renewed-leaf": existing root, new leaf (old one expired). */
  action: "created" | "reused" | "renewed-leaf";
}

/** Creates the chip identity in `dir`, or reuses the one there. Refuses a partial or corrupt identity. */
export function chipInit(dir: string, now: Date = new Date()): ChipInitResult {
  if (existsSync(dir)) {
    const st = statSync(dir);
    if (!st.isDirectory()) throw new ChipError(`chip path ${dir} exists and is not a directory`);
    if ((st.mode & GROUP_OTHER_BITS) !== 0) {
      throw new ChipError(`chip directory ${dir} has mode ${(st.mode & 0o777).toString(8)}; it must be 700 (owner only)`);
    }
  } else {
    mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  }
  const present = Object.values(CHIP_FILES).filter((f) => existsSync(join(dir, f)));
  if (present.length > 0) {
    const chip = chipLoad(dir); // throws, naming the file, on a partial or corrupt identity
    if (now.getTime() > chip.root.notAfter.getTime()) {
      throw new ChipError(`chip root certificate ${join(dir, CHIP_FILES.rootCertPem)} expired on ${chip.root.notAfter.toISOString()}`);
    }
    if (now.getTime() <= chip.leaf.notAfter.getTime()) return { chip, action: "reused" };
    const leafKey = newKey();
    const leafDer = issueLeaf(chip.rootKey, chip.root, leafKey, now);
    writeReplace(join(dir, CHIP_FILES.leafKey), leafKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string);
    writeReplace(join(dir, CHIP_FILES.leafCertDer), leafDer);
    writeReplace(join(dir, CHIP_FILES.leafCertPem), derToPem(leafDer));
    return { chip: chipLoad(dir), action: "renewed-leaf" };
  }
  const rootKey = newKey();
  const rootDer = createCertificate({
    subject: ROOT_SUBJECT,
    publicKey: rootKey.publicKey,
    signingKey: rootKey.privateKey,
    notBefore: new Date(now.getTime() - NOT_BEFORE_SKEW_MS),
    notAfter: new Date(now.getTime() + ROOT_VALIDITY_DAYS * DAY_MS),
    ca: true,
    pathLen: 0, // RFC 5280 §4.2.1.9: only end-entity certificates below the root
  });
  const leafKey = newKey();
  const leafDer = issueLeaf(rootKey.privateKey, parseCertificate(rootDer), leafKey, now);
  // Keys first: a crash part-way leaves an identity that chipLoad reports as incomplete, never a silent new one.
  writeNew(join(dir, CHIP_FILES.rootKey), rootKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string);
  writeNew(join(dir, CHIP_FILES.leafKey), leafKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string);
  writeNew(join(dir, CHIP_FILES.rootCertDer), rootDer);
  writeNew(join(dir, CHIP_FILES.rootCertPem), derToPem(rootDer));
  writeNew(join(dir, CHIP_FILES.leafCertDer), leafDer);
  writeNew(join(dir, CHIP_FILES.leafCertPem), derToPem(leafDer));
  return { chip: chipLoad(dir), action: "created" };
}

export interface ChipSummary {
  dir: string;
  rootFingerprintSha256: string;
  rootSubject: string;
  rootNotAfter: string;
  leafSubject: string;
  leafNotAfter: string;
}

/** The identity in `dir`, for people: the root's SHA-256 fingerprint is what a verifier pins. */
export function chipShow(dir: string): ChipSummary {
  const chip = chipLoad(dir);
  return {
    dir,
    rootFingerprintSha256: chip.rootFingerprint,
    rootSubject: chip.root.subject,
    rootNotAfter: chip.root.notAfter.toISOString(),
    leafSubject: chip.leaf.subject,
    leafNotAfter: chip.leaf.notAfter.toISOString(),
  };
}
