// Debian packages fetched with apt and cached: the cloud kernel (linux-image-cloud-amd64 → its
// versioned linux-image-*-cloud-amd64 package) and single files of other packages
// (busybox-static's bin/busybox). `typervisor image build` caches them under
// ~/.cache/typervisor; the tests and the box under <repo>/.cache (src/testing/debian.ts binds
// that folder). A failure throws DebianFetchError, whose message is one short line saying why
// (no apt, no network, no package lists, a package missing). Nothing runs at import time.
//
// Cache layout under `cacheDir`:
//   debian-kernel/<package>_<version>_amd64.deb and debian-kernel/extract/ (boot/, lib/modules/)
//   debian-packages/<pkg>/<pkg>_<version>_<arch>.deb and debian-packages/<pkg>/extract/

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";

/** The meta package that always depends on the current cloud kernel (Debian's linux-signed-amd64 source). */
export const DEBIAN_KERNEL_META_PACKAGE = "linux-image-cloud-amd64";

/** apt-get download of a ~30 MB kernel package on a slow mirror; apt-get update of bookworm lists. */
const COMMAND_TIMEOUT_MS = 240_000;

/** A package (or its lists, or apt itself) could not be had; the message is one line. */
export class DebianFetchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DebianFetchError";
  }
}

export interface DebianCache {
  /** The cache root (created when needed). */
  cacheDir: string;
  /** One line per slow step (a download, an extraction, apt-get update). */
  onProgress?: (line: string) => void;
}

function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: COMMAND_TIMEOUT_MS });
}

/** The last line of a failed command's stderr (or the error message), short enough for a skip reason. */
export function failureReason(e: unknown): string {
  const err = e as { stderr?: string | Buffer; message?: string; code?: string };
  if (err.code === "ENOENT") return err.message ?? String(e); // the command itself is missing
  const stderr = String(err.stderr ?? "").trim();
  const detail = stderr.split("\n").filter(Boolean).pop() ?? err.message ?? String(e);
  return detail.slice(0, 300);
}

/** Runs `f`, and once more after `apt-get update` when it failed (empty or stale package lists). */
function withPackageLists<T>(c: DebianCache, what: string, f: () => T | undefined): T {
  let first: unknown;
  try {
    const v = f();
    if (v !== undefined) return v;
  } catch (e) {
    first = e;
  }
  c.onProgress?.(`${what} failed; running apt-get update`);
  try {
    run("apt-get", ["update"], c.cacheDir);
  } catch (e) {
    throw new DebianFetchError(`${what} failed${first === undefined ? "" : ` (${failureReason(first)})`}, and apt-get update failed: ${failureReason(e)}`);
  }
  try {
    const v = f();
    if (v !== undefined) return v;
    throw new DebianFetchError(`${what} found nothing, even after apt-get update`);
  } catch (e) {
    if (e instanceof DebianFetchError) throw e;
    throw new DebianFetchError(`${what} failed after apt-get update: ${failureReason(e)}`);
  }
}

/** Every regular file under `dir`, as paths relative to it. */
function walk(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p, { throwIfNoEntry: false });
    if (st === undefined) continue; // a dangling symlink
    if (st.isDirectory()) out.push(...walk(p, base));
    else if (st.isFile()) out.push(relative(base, p));
  }
  return out;
}

/** Downloads `pkg` into `dir` (unless a .deb of it is there) and returns the .deb's path. */
function downloadDeb(c: DebianCache, pkg: string, dir: string): string {
  mkdirSync(dir, { recursive: true });
  // apt-get download names the file <name>_<version>_<arch>.deb (the version with ':' escaped).
  const find = (): string | undefined => readdirSync(dir).find((n) => n.startsWith(`${pkg}_`) && n.endsWith(".deb"));
  const cached = find();
  if (cached !== undefined) return join(dir, cached);
  c.onProgress?.(`downloading ${pkg} (apt-get download) into ${dir}`);
  withPackageLists(c, `apt-get download ${pkg}`, () => run("apt-get", ["download", pkg], dir));
  const deb = find();
  if (deb === undefined) throw new DebianFetchError(`apt-get download ${pkg} left no ${pkg}_*.deb in ${dir}`);
  return join(dir, deb);
}

function extract(c: DebianCache, deb: string, into: string): void {
  c.onProgress?.(`extracting ${basename(deb)}`);
  try {
    run("dpkg-deb", ["-x", deb, into], dirname(deb));
  } catch (e) {
    // A half-extracted tree would pass for a cached one next time.
    rmSync(into, { recursive: true, force: true });
    throw new DebianFetchError(`dpkg-deb -x ${basename(deb)} failed: ${failureReason(e)}`);
  }
}

/** Debian Policy §5.6.7: package names are lower-case alphanumerics, +, - and ., starting alphanumeric. */
export const isDebianPackageName = (pkg: string): boolean => /^[a-z0-9][a-z0-9+.-]+$/.test(pkg);

/**
 * A file from a Debian package, e.g. `fetchDebianPackageFile(c, "busybox-static", /^bin\/busybox$/)`:
 * downloads the package with apt-get, extracts it under <cacheDir>/debian-packages/<pkg>/ and
 * returns the path of the first file whose path inside the package (no leading slash) matches.
 */
export function fetchDebianPackageFile(c: DebianCache, pkg: string, pathInPackage: RegExp): string {
  if (!isDebianPackageName(pkg)) throw new DebianFetchError(`"${pkg}" is not a Debian package name`);
  const dir = join(c.cacheDir, "debian-packages", pkg);
  const into = join(dir, "extract");
  const lookup = (): string | undefined => {
    if (!existsSync(into)) return undefined;
    const hit = walk(into).find((p) => pathInPackage.test(p));
    return hit === undefined ? undefined : join(into, hit);
  };
  const cached = lookup();
  if (cached !== undefined) return cached;
  extract(c, downloadDeb(c, pkg, dir), into);
  const found = lookup();
  if (found === undefined) throw new DebianFetchError(`package ${pkg} holds no file matching ${pathInPackage}`);
  return found;
}

function findVmlinuz(kernelCache: string): string | undefined {
  const boot = join(kernelCache, "extract", "boot");
  if (!existsSync(boot)) return undefined;
  const f = readdirSync(boot).find((n) => n.startsWith("vmlinuz-"));
  return f === undefined ? undefined : join(boot, f);
}

/** apt-cache depends linux-image-cloud-amd64 → the versioned linux-image-*-cloud-amd64 package. */
function realKernelPackage(c: DebianCache): string {
  return withPackageLists(c, `apt-cache depends ${DEBIAN_KERNEL_META_PACKAGE}`, () => {
    const out = run("apt-cache", ["depends", DEBIAN_KERNEL_META_PACKAGE], c.cacheDir);
    return /^\s*\|?Depends:\s*(linux-image-[^\s<>]+-cloud-amd64)\s*$/m.exec(out)?.[1];
  });
}

/**
 * The vmlinuz (a bzImage) of Debian's current cloud kernel, cached under
 * <cacheDir>/debian-kernel/: the meta package names the versioned linux-image-*-cloud-amd64
 * package, which is downloaded and extracted once (its modules land beside it: kernelModulesDir).
 */
export function fetchDebianKernel(c: DebianCache): string {
  const kernelCache = join(c.cacheDir, "debian-kernel");
  const cached = findVmlinuz(kernelCache);
  if (cached !== undefined) return cached;
  mkdirSync(kernelCache, { recursive: true });
  const have = readdirSync(kernelCache).find((n) => /^linux-image-.*-cloud-amd64_.*\.deb$/.test(n));
  const deb = have !== undefined ? join(kernelCache, have) : downloadDeb(c, realKernelPackage(c), kernelCache);
  extract(c, deb, join(kernelCache, "extract"));
  const v = findVmlinuz(kernelCache);
  if (v === undefined) throw new DebianFetchError(`${basename(deb)} holds no boot/vmlinuz-*`);
  return v;
}

/** The kernel release (`uname -r`) of a Debian vmlinuz path: boot/vmlinuz-<release>. */
export function debianKernelRelease(vmlinuzPath: string): string {
  const m = /^vmlinuz-(.+)$/.exec(basename(vmlinuzPath));
  if (m === null) throw new DebianFetchError(`${vmlinuzPath} is not named vmlinuz-<release>`);
  return m[1]!;
}

/** The lib/modules/<release>/kernel folder that the package of `vmlinuzPath` (boot/vmlinuz-<release>) holds. */
export function kernelModulesDir(vmlinuzPath: string): string {
  const dir = join(dirname(dirname(vmlinuzPath)), "lib/modules", debianKernelRelease(vmlinuzPath), "kernel");
  if (!existsSync(dir)) throw new DebianFetchError(`the kernel package has no ${dir}`);
  return dir;
}
