// Pure command handlers for `typervisor chip|measure|attest|sign`. Each takes the arguments after its command word
// and an output pair, and returns the exit status; nothing here touches process.* (src/cli dispatches to these).
//
// Exit status: 0 ok; 1 the check asked for failed (attestation or signature did not verify); 2 bad input (usage,
// unreadable or malformed input files), one line on stderr; 4 host problem (a missing/corrupt chip identity).

import { readFileSync, writeFileSync } from "node:fs";
import { ChipError, chipInit, chipShow } from "./chip.js";
import { defaultChipDir } from "./chip-dir.js";
import { bootMeasurements, PCR_COUNT, PCR_IMAGE, toHex } from "./pcr.js";
import { verifyAttestation } from "./attestation.js";
import { ImageSignError, signImage, verifyImageSignature } from "./image.js";
import { CertificateParseError } from "./x509.js";

export const EXIT_OK = 0;
export const EXIT_CHECK_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_HOST = 4;

export interface CliIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
}

export type CommandHandler = (argv: string[], io: CliIo) => Promise<number>;

class Usage extends Error {}

/** `--name value` and `--flag` parsing; repeated flags collect. Unknown flags and stray words are usage errors. */
function parseFlags(argv: string[], valued: string[], booleans: string[], positionals = 0): { flags: Map<string, string[]>; rest: string[] } {
  const flags = new Map<string, string[]>();
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      if (booleans.includes(name)) {
        if (eq > 0) throw new Usage(`--${name} takes no value`);
        flags.set(name, ["true"]);
      } else if (valued.includes(name)) {
        const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
        if (value === undefined) throw new Usage(`--${name} needs a value`);
        flags.set(name, [...(flags.get(name) ?? []), value]);
      } else {
        throw new Usage(`unknown option ${a}`);
      }
    } else {
      rest.push(a);
    }
  }
  if (rest.length > positionals) throw new Usage(`unexpected argument ${rest[positionals]}`);
  return { flags, rest };
}

function one(flags: Map<string, string[]>, name: string): string | undefined {
  const v = flags.get(name);
  if (v !== undefined && v.length > 1) throw new Usage(`--${name} given more than once`);
  return v?.[0];
}

function readInput(what: string, path: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    const why: Record<string, string> = { ENOENT: "no such file", EACCES: "permission denied", EISDIR: "is a directory" };
    throw new Usage(`cannot read ${what} ${path}: ${why[code] ?? code}`);
  }
}

function parseHex(what: string, s: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new Usage(`${what} must be hex digits in pairs`);
  return new Uint8Array(Buffer.from(s, "hex"));
}

export { defaultChipDir };

async function guard(io: CliIo, prefix: string, f: () => number): Promise<number> {
  try {
    return f();
  } catch (e) {
    const msg = (e as Error).message.replace(/\s*\n\s*/g, " ");
    if (e instanceof Usage || e instanceof ImageSignError || e instanceof CertificateParseError) {
      io.stderr.write(`typervisor ${prefix}: ${msg}\n`);
      return EXIT_USAGE;
    }
    if (e instanceof ChipError) {
      io.stderr.write(`typervisor ${prefix}: ${msg}\n`);
      return EXIT_HOST;
    }
    throw e;
  }
}

/** `chip init [--dir D] [--json]` and `chip show [--dir D] [--json]`. */
export const chipCommand: CommandHandler = (argv, io) =>
  guard(io, "chip", () => {
    const { flags, rest } = parseFlags(argv, ["dir"], ["json"], 1);
    const sub = rest[0];
    if (sub !== "init" && sub !== "show") throw new Usage("usage: typervisor chip init|show [--dir DIR] [--json]");
    const dir = one(flags, "dir") ?? defaultChipDir();
    const json = flags.has("json");
    let action: string | undefined;
    if (sub === "init") action = chipInit(dir).action;
    const s = chipShow(dir);
    if (json) {
      io.stdout.write(JSON.stringify(action === undefined ? s : { action, ...s }) + "\n");
    } else {
      if (action !== undefined) io.stdout.write(`chip identity ${action} in ${dir}\n`);
      io.stdout.write(`root SHA-256 fingerprint: ${s.rootFingerprintSha256}\n`);
      io.stdout.write(`root: ${s.rootSubject} (until ${s.rootNotAfter})\n`);
      io.stdout.write(`leaf: ${s.leafSubject} (until ${s.leafNotAfter})\n`);
    }
    return EXIT_OK;
  });

function bootInputs(flags: Map<string, string[]>) {
  const kernelPath = one(flags, "kernel");
  if (kernelPath === undefined) throw new Usage("--kernel FILE is required");
  const initrdPath = one(flags, "initrd");
  const certPath = one(flags, "signing-cert");
  return {
    kernel: readInput("kernel", kernelPath),
    initrd: initrdPath === undefined ? undefined : readInput("initrd", initrdPath),
    cmdline: one(flags, "cmdline") ?? "",
    vmId: one(flags, "vm-id"),
    signingCert: certPath === undefined ? undefined : certDerOrUsage(readInput("signing certificate", certPath), certPath),
  };
}

function certDerOrUsage(bytes: Uint8Array, path: string): Uint8Array {
  const text = Buffer.from(bytes).toString("latin1");
  if (!text.startsWith("-----")) return bytes;
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(text);
  if (!m) throw new Usage(`${path} holds no PEM CERTIFICATE block`);
  return new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
}

/**
 * `measure --kernel F [--initrd F] [--cmdline S] [--vm-id ID] [--signing-cert C] [--json]`: the PCRs a boot of these
 * exact bytes produces. PCR0, 1 and 2 always; PCR4 with --vm-id, PCR8 with --signing-cert.
 */
export const measureCommand: CommandHandler = (argv, io) =>
  guard(io, "measure", () => {
    const { flags } = parseFlags(argv, ["kernel", "initrd", "cmdline", "vm-id", "signing-cert"], ["json"]);
    const b = bootInputs(flags);
    const m = bootMeasurements({ ...b, vmId: b.vmId ?? "" });
    if (b.vmId === undefined) m.delete(4);
    const zero = new Uint8Array(48);
    const shown = new Map<number, Uint8Array>([[0, m.get(0)!], [1, m.get(1)!], [2, m.get(2) ?? zero]]);
    for (const i of [4, 8]) if (m.has(i)) shown.set(i, m.get(i)!);
    if (flags.has("json")) {
      const o: Record<string, string> = {};
      for (const [i, v] of shown) o[`pcr${i}`] = toHex(v);
      io.stdout.write(JSON.stringify(o) + "\n");
    } else {
      for (const [i, v] of shown) io.stdout.write(`PCR${i} ${toHex(v)}\n`);
    }
    return EXIT_OK;
  });

/**
 * `attest verify DOC --root ROOT.pem [--pcr N=HEX]... [--nonce HEX] [--max-age SECONDS] [--json]`: verifies an
 * attestation document (COSE_Sign1 bytes in a file). Failure prints `<check>: <message>` and exits 1.
 */
export const attestCommand: CommandHandler = (argv, io) =>
  guard(io, "attest", () => {
    const { flags, rest } = parseFlags(argv, ["root", "pcr", "nonce", "max-age"], ["json"], 2);
    if (rest[0] !== "verify" || rest[1] === undefined) {
      throw new Usage("usage: typervisor attest verify DOC --root ROOT.pem [--pcr N=HEX]... [--nonce HEX] [--max-age SECONDS] [--json]");
    }
    const doc = readInput("attestation document", rest[1]);
    const rootPath = one(flags, "root");
    if (rootPath === undefined) throw new Usage("--root ROOT.pem (the pinned root certificate) is required");
    const root = readInput("root certificate", rootPath);
    const expectedPcrs = new Map<number, string>();
    for (const p of flags.get("pcr") ?? []) {
      const m = /^(\d+)=([0-9a-fA-F]+)$/.exec(p);
      if (!m) throw new Usage(`--pcr ${p}: expected N=HEX`);
      const i = Number(m[1]);
      if (i >= PCR_COUNT) throw new Usage(`--pcr ${p}: index must be below ${PCR_COUNT}`);
      if (m[2]!.length !== 96) throw new Usage(`--pcr ${p}: a SHA-384 PCR is 96 hex digits`);
      expectedPcrs.set(i, m[2]!);
    }
    const nonceHex = one(flags, "nonce");
    const maxAge = one(flags, "max-age");
    if (maxAge !== undefined && !/^\d+$/.test(maxAge)) throw new Usage(`--max-age ${maxAge}: expected whole seconds`);
    const r = verifyAttestation(doc, {
      root: root,
      expectedPcrs,
      nonce: nonceHex === undefined ? undefined : parseHex("--nonce", nonceHex),
      maxAgeSeconds: maxAge === undefined ? undefined : Number(maxAge),
    });
    if (flags.has("json")) {
      const out = r.ok
        ? { ok: true, module_id: r.document.module_id, timestamp: r.document.timestamp, pcrs: Object.fromEntries([...r.document.pcrs].map(([i, v]) => [`pcr${i}`, toHex(v)])) }
        : r;
      io.stdout.write(JSON.stringify(out) + "\n");
    } else if (r.ok) {
      io.stdout.write(`attestation OK: module ${r.document.module_id}, made ${new Date(r.document.timestamp).toISOString()}\n`);
    }
    if (!r.ok) {
      io.stderr.write(`typervisor attest: ${r.check}: ${r.message}\n`);
      return EXIT_CHECK_FAILED;
    }
    return EXIT_OK;
  });

/**
 * `sign --kernel F [--initrd F] [--cmdline S] --key KEY.pem --cert CERT.pem --out SIG` writes a COSE_Sign1 over the
 * image's PCR0; `sign verify SIG --kernel F [--initrd F] [--cmdline S] --cert CERT.pem` checks one.
 */
export const signCommand: CommandHandler = (argv, io) =>
  guard(io, "sign", () => {
    const { flags, rest } = parseFlags(argv, ["kernel", "initrd", "cmdline", "key", "cert", "out"], ["json"], 2);
    const certPath = one(flags, "cert");
    if (certPath === undefined) throw new Usage("--cert CERT.pem is required");
    const cert = readInput("certificate", certPath);
    const b = bootInputs(flags);
    const pcr0 = bootMeasurements({ ...b, vmId: "" }).get(PCR_IMAGE)!;
    if (rest[0] === "verify") {
      if (rest[1] === undefined) throw new Usage("usage: typervisor sign verify SIG --kernel F [--initrd F] [--cmdline S] --cert CERT.pem");
      const r = verifyImageSignature(readInput("signature", rest[1]), { pcr0, trustedCert: cert });
      if (!r.ok) {
        io.stderr.write(`typervisor sign: ${r.check}: ${r.message}\n`);
        return EXIT_CHECK_FAILED;
      }
      io.stdout.write(`image signature OK for PCR0 ${toHex(pcr0)}\n`);
      return EXIT_OK;
    }
    if (rest.length > 0) throw new Usage(`unexpected argument ${rest[0]}`);
    const keyPath = one(flags, "key");
    const out = one(flags, "out");
    if (keyPath === undefined || out === undefined) throw new Usage("--key KEY.pem and --out FILE are required");
    const key = Buffer.from(readInput("signing key", keyPath)).toString("utf8");
    const { signature } = signImage({ pcr0, key, cert });
    writeFileSync(out, signature);
    io.stdout.write(`signed PCR0 ${toHex(pcr0)} into ${out}\n`);
    return EXIT_OK;
  });
