// Where the security chip's identity lives by default (apart from the chip code, so that the CLI's
// argument parser and the SDK's config can name it without loading the crypto).

import { homedir } from "node:os";
import { join } from "node:path";

/** Default chip directory: $TYPERVISOR_CHIP_DIR, else ~/.typervisor/chip. */
export function defaultChipDir(env: NodeJS.ProcessEnv = process.env): string {
  return env["TYPERVISOR_CHIP_DIR"] ?? join(homedir(), ".typervisor", "chip");
}
