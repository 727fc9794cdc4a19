// Files the CLI reads on the user's behalf: every failure is a one-line UsageError naming the file.

import { readFileSync } from "node:fs";
import { UsageError } from "./args.js";
import type { KernelSource } from "../vmm/builder.js";
import type { BootSignature } from "../security/image.js";

/** Reads a whole file, turning every failure into a one-line UsageError. */
export function readInputFile(what: string, path: string): KernelSource {
  try {
    return { name: path, bytes: new Uint8Array(readFileSync(path)) };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    const why: Record<string, string> = {
      ENOENT: "no such file",
      EACCES: "permission denied",
      EISDIR: "is a directory",
    };
    throw new UsageError(`cannot read ${what} ${path}: ${why[code] ?? code}`);
  }
}

/** `--signature SIG --trust CERT`: both files read, for verifyBootSignature. */
export function readBootSignature(sigPath: string, certPath: string): BootSignature {
  return { signature: readInputFile("signature", sigPath).bytes, trust: readInputFile("trusted certificate", certPath).bytes };
}
