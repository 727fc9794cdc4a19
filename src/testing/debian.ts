// Test helpers: real Debian packages (the cloud kernel, busybox-static, ...) fetched with apt and
// cached under <repo>/.cache/ (the box carries that folder in). The fetching itself is the shipped
// src/image/debian.ts; this file binds it to the repository's cache. Each function returns a path
// or throws an Error whose message is a short reason (no network, no apt, no package lists),
// which callers turn into `t.skip(reason)`. Nothing runs at import time.

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fetchDebianKernel as fetchKernel, fetchDebianPackageFile as fetchFile, type DebianCache } from "../image/debian.js";

export { DEBIAN_KERNEL_META_PACKAGE, debianKernelRelease, failureReason, kernelModulesDir } from "../image/debian.js";

// dist/testing/ (or src/testing/) → repository root.
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** Where fetched packages live; .gitignore lists .cache/. */
export const DEBIAN_CACHE = join(ROOT, ".cache");
/** The repository's package cache, for code that takes a DebianCache (src/image). */
export const REPO_DEBIAN_CACHE: DebianCache = { cacheDir: DEBIAN_CACHE };

/** A file from a Debian package, e.g. `fetchDebianPackageFile("busybox-static", /^bin\/busybox$/)`. */
export const fetchDebianPackageFile = (pkg: string, pathInPackage: RegExp): string => fetchFile(REPO_DEBIAN_CACHE, pkg, pathInPackage);

/** The vmlinuz (a bzImage) of Debian's current cloud kernel, cached under <repo>/.cache/debian-kernel/. */
export const fetchDebianKernel = (): string => fetchKernel(REPO_DEBIAN_CACHE);
