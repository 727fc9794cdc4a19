// `npm run box -- <command> [args...]`: runs one command in the box with the built project and
// prints the box's console (the command's output, and a guest's serial console when the command
// is `typervisor run`). Host files the arguments name are carried in at the same paths.
// Exit status: the command's own, or 125 when the box itself failed.

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { boxUnavailable, runInBox } from "./box.js";
import { shQuote } from "./image.js";

const USAGE = `usage: npm run box -- <command> [args...]

Runs the command in the box: a QEMU TCG virtual machine whose Debian kernel loads kvm_amd, so
Typervisor runs against a real /dev/kvm on a host that has none. The built project is inside at
this same path, 'typervisor' is on PATH, and host files named in the arguments are carried in.
Slow (TCG): timings inside mean nothing. Example:
  npm run box -- typervisor run --kernel vmlinuz --initrd initrd.cpio --vcpus 4 --cmdline "console=ttyS0 reboot=k panic=1 rdinit=/init"`;

/** Host paths an argument names: the whole argument, or a value after '=' or between commas. */
export function namedPaths(args: string[], cwd: string): string[] {
  const out = new Set<string>();
  for (const a of args) {
    for (const piece of [a, ...a.split(/[=,]/)]) {
      if (piece === "" || piece.startsWith("-")) continue;
      const p = resolve(cwd, piece);
      if (p !== "/" && existsSync(p)) out.add(p);
    }
  }
  return [...out];
}

export async function boxMain(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h") {
    console.log(USAGE);
    return argv.length === 0 ? 2 : 0;
  }
  const why = boxUnavailable();
  if (why !== undefined) {
    console.error(`box: ${why}`);
    return 125;
  }
  const cwd = process.cwd();
  const r = await runInBox({
    command: { shell: `mkdir -p ${shQuote(cwd)} && cd ${shQuote(cwd)} && ${argv.map(shQuote).join(" ")}`, cwd: "/" },
    extraPaths: namedPaths(argv, cwd),
    onConsole: (c) => process.stdout.write(c),
    onProgress: (l) => process.stderr.write(`box: ${l}\n`),
  });
  if (r.status === null) {
    console.error(`box: ${r.failure}`);
    return 125;
  }
  return r.status;
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${resolve(process.argv[1])}`).href) {
  process.exitCode = await boxMain(process.argv.slice(2));
}
