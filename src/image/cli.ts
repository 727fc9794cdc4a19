// `typervisor image build [--out DIR] [--cache-dir DIR]`: loaded by the CLI only when this
// subcommand runs. Progress goes to stderr, the boot command to stdout; a failure is one line.

import { parseArgs } from "node:util";
import { DebianFetchError } from "./debian.js";
import { ImageToolError } from "./rootfs.js";
import { buildImage, defaultCacheDir, runCommand, DEFAULT_IMAGE_DIR } from "./build.js";
import { EXIT_HOST, EXIT_OK, EXIT_USAGE } from "../cli/exit-codes.js";

export const IMAGE_HELP = `Usage: typervisor image build [--out DIR] [--cache-dir DIR]

Builds a starter Linux guest from Debian packages (apt-get download; nothing else is fetched):
  DIR/vmlinuz       Debian's cloud kernel (linux-image-cloud-amd64)
  DIR/initrd.img    busybox and the virtio_mmio, virtio_blk, virtio_net and vsock modules; mounts root=
  DIR/rootfs.ext4   an ext4 root disk with busybox: ip= networking, a root shell on ttyS0
then prints the typervisor run command that boots it.

  --out DIR         where the three files go (default ./${DEFAULT_IMAGE_DIR})
  --cache-dir DIR   where downloads are kept (default $XDG_CACHE_HOME/typervisor or ~/.cache/typervisor)

It boots on hardware KVM (a stock kernel cannot run on PVM hosts); in this repository,
npm run box -- <the printed command> tries it in the box on any host.

Exit status: 0 built; 2 bad arguments; 4 a package could not be fetched (no apt, no network,
no package lists) or a host tool is missing or failed (dpkg-deb, mke2fs and debugfs: e2fsprogs).
`;

export interface ImageIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
}

export function imageCommand(argv: string[], io: ImageIo): number {
  const fail = (code: number, msg: string): number => {
    io.stderr.write(`typervisor: image: ${msg}\n`);
    return code;
  };
  if (argv[0] !== "build") return fail(EXIT_USAGE, argv[0] === undefined ? "say what to do: typervisor image build [--out DIR]" : `unknown subcommand "${argv[0]}" (image build)`);
  let values;
  try {
    ({ values } = parseArgs({ args: argv.slice(1), strict: true, allowPositionals: false, options: { out: { type: "string" }, "cache-dir": { type: "string" } } }));
  } catch (e) {
    return fail(EXIT_USAGE, (e as Error).message.replace(/\. To specify a positional argument.*$/s, ""));
  }
  if (values.out === "" || values["cache-dir"] === "") return fail(EXIT_USAGE, "--out and --cache-dir need a folder");
  const outDir = values.out ?? DEFAULT_IMAGE_DIR;
  try {
    const image = buildImage({
      outDir,
      cacheDir: values["cache-dir"] ?? defaultCacheDir(),
      onProgress: (l) => io.stderr.write(`image: ${l}\n`),
    });
    io.stderr.write(`image: done: ${image.release}, initrd modules ${image.modules.length}; boot it with:\n`);
    io.stdout.write(`${runCommand(outDir)}\n`);
    return EXIT_OK;
  } catch (e) {
    if (e instanceof DebianFetchError || e instanceof ImageToolError) return fail(EXIT_HOST, e.message);
    const err = e as NodeJS.ErrnoException;
    if (typeof err.code === "string" && err.syscall !== undefined) return fail(EXIT_HOST, err.message); // EACCES, ENOSPC, ... on the output or cache folder
    if (e instanceof Error && /kernel module/.test(e.message)) return fail(EXIT_HOST, e.message);
    throw e;
  }
}
