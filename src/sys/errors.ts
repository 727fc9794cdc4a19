// Typed errors for failed system calls. One place builds the message, so every failure in the
// VMM reads the same way: `${call} failed: ${code}` (e.g. `KVM_CREATE_VCPU failed: EEXIST`).
import { constants } from "node:os";

/** Names that alias another errno value on Linux; the first name is the one we report. */
const PREFERRED_NAMES: ReadonlySet<string> = new Set(["EAGAIN", "EOPNOTSUPP", "EDEADLK"]);

/** errno value -> symbolic name, built from Node's own table (os.constants.errno, ~80 codes). */
const ERRNO_NAMES: ReadonlyMap<number, string> = (() => {
  const names = new Map<number, string>();
  for (const [name, value] of Object.entries(constants.errno)) {
    const existing = names.get(value);
    if (existing === undefined || (PREFERRED_NAMES.has(name) && !PREFERRED_NAMES.has(existing))) {
      names.set(value, name);
    }
  }
  return names;
})();

/** The symbolic name of an errno value (`ENOENT`), or `E<number>` for one Node does not know. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

/** The errno value of a symbolic name (`ENOENT` -> 2), or undefined. */
export function errnoValue(name: string): number | undefined {
  return (constants.errno as Record<string, number | undefined>)[name];
}

/** A system call (or ioctl) that returned an error. `call` names the call, `code` the errno. */
export class SysError extends Error {
  readonly call: string;
  readonly errno: number;
  readonly code: string;

  constructor(call: string, errno: number) {
    const code = errnoName(errno);
    super(`${call} failed: ${code}`);
    this.name = "SysError";
    this.call = call;
    this.errno = errno;
    this.code = code;
  }
}
