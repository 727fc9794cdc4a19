import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Where `make -C guest` puts the probe guest, relative to the package root. */
export const PROBE_ELF_RELATIVE = 'guest/build/probe.elf';
/** The test-only variant that enters through linux64_entry under QEMU (guest/README.md). */
export const PROBE_SHIM_ELF_RELATIVE = 'guest/build/probe-linux64-shim.elf';

/** The package root: this file is dist/probe/path.js (or src/probe/path.ts). */
export function packageRoot(): string {
  return fileURLToPath(new URL('../../', import.meta.url));
}

function built(relative: string): string {
  const path = fileURLToPath(new URL(relative, new URL('../../', import.meta.url)));
  if (!existsSync(path)) {
    throw new Error(`probe guest not built: run "npm run build:guest" (missing ${path})`);
  }
  return path;
}

/** Absolute path of guest/build/probe.elf; throws if it has not been built. */
export function probePath(): string {
  return built(PROBE_ELF_RELATIVE);
}

/** The probe's virtio drivers as a host library (guest/src/hosted.c), for tests without KVM. */
export const PROBE_HOSTED_SO_RELATIVE = 'guest/build/probe-hosted.so';

/** Absolute path of guest/build/probe-hosted.so; throws if not built. */
export function probeHostedPath(): string {
  return built(PROBE_HOSTED_SO_RELATIVE);
}

/** Absolute path of guest/build/probe-linux64-shim.elf (test only); throws if not built. */
export function probeShimPath(): string {
  return built(PROBE_SHIM_ELF_RELATIVE);
}
