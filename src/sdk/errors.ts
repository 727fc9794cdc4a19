// The SDK's errors: one class per kind of failure a MicroVM user meets, each with one sentence
// that says what is wrong and, where there is something to do, what. The layers below throw their
// own errors (SysError, KvmError, KernelFormatError, VmConfigError, DriveConfigError, ...); the SDK
// maps them here, at its edge, and keeps the original as `cause`.
//
// Two errors of the security layer reach SDK users unchanged, because they already are the typed,
// one-sentence error of their kind: ImageSignatureError (create() with an `imageSignature` that
// does not verify) and AttestationInputError (attest() with an oversized nonce, user data or key).

import { KvmError } from "../kvm/errors.js";
import { SysError } from "../sys/errors.js";
import { BootSetupError, KernelFormatError } from "../arch/x86_64/errors.js";
import { GuestMemoryError } from "../memory/guest-memory.js";
import { VmConfigError } from "../vmm/vm.js";
import { CardConfigError, DriveConfigError, RateLimiterConfigError } from "../cards/index.js";
import { MacError } from "../devices/virtio/net/mac.js";
import { AtaImageError } from "../devices/ata/file-backend.js";
import { Dom0Error } from "../dom0/spawn.js";

/** Every failure the SDK itself reports; `cause` holds the lower layer's error where there is one. */
export class MicroVMError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
  }
}

/** The configuration (or an argument of a call) is wrong: the message names the field and the value. */
export class MicroVMConfigError extends MicroVMError {}

/** The kernel or initrd image cannot be used: missing, unreadable, or not a kernel Typervisor boots. */
export class KernelImageError extends MicroVMError {
  /** Which image: the kernel or the initrd. */
  readonly image: "kernel" | "initrd";
  /** The path as given (or the name of the bytes given instead of a path). */
  readonly path: string;

  constructor(message: string, image: "kernel" | "initrd", path: string, options?: { cause?: unknown }) {
    super(message, options);
    this.image = image;
    this.path = path;
  }
}

/** `kernel: "probe"`, but the package's probe guest (guest/build/probe.elf) has not been built. */
export class ProbeNotBuiltError extends MicroVMError {
  /** Where the probe guest should be. */
  readonly path: string;

  constructor(message: string, path: string) {
    super(message);
    this.path = path;
  }
}

/** This host cannot run microVMs: no /dev/kvm, no permission to open it, or a KVM capability is missing. */
export class KvmUnavailableError extends MicroVMError {
  /** The errno name when opening /dev/kvm failed (`ENOENT`: no KVM; `EACCES`: no permission). */
  readonly code: string | undefined;

  constructor(message: string, code: string | undefined, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The host refused what the microVM needs (memory, descriptors, threads), or its vCPUs did not respond. */
export class HostError extends MicroVMError {
  /** The errno name when a system call failed (`ENOMEM`, `EMFILE`, ...). */
  readonly code: string | undefined;

  constructor(message: string, code: string | undefined, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The call is not allowed in the state the microVM is in (start twice, pause a stopped VM, ...). */
export class MicroVMStateError extends MicroVMError {
  /** The state the microVM was in. */
  readonly state: string;

  constructor(message: string, state: string) {
    super(message);
    this.state = state;
  }
}

/** `attest()` cannot sign: there is no usable security chip identity. */
export class AttestationUnavailableError extends MicroVMError {}

/** The lower layers' errors that mean "this configuration (or argument) cannot be used". */
const CONFIG_ERRORS: ReadonlyArray<abstract new (...args: never[]) => Error> = [
  VmConfigError,
  DriveConfigError,
  RateLimiterConfigError,
  CardConfigError,
  MacError,
  AtaImageError,
  GuestMemoryError,
];

/** What the error is about, for the sentences that need it. */
export interface ErrorContext {
  /** The call that failed: building the VM, starting or pausing it, or updating one of its devices. */
  during: "create" | "start" | "pause" | "update";
  /** The kernel image's path or name, when known. */
  kernel?: string;
}

/**
 * The SDK's error for `e`, thrown by a layer below while `ctx.during` ran. An SDK error (and the
 * security layer's typed errors, see the top of this file) is returned as it is. An error of no
 * known kind is returned as it is during create() (a bug, with its own stack); during start() and
 * pause() it becomes a HostError (the vCPU and card threads did not start or answer); during an
 * update a plain Error is the VM saying the device named has no such update (a MicroVMConfigError).
 */
export function toMicroVMError(e: unknown, ctx: ErrorContext): unknown {
  if (e instanceof MicroVMError) return e;
  if (e instanceof KvmError) {
    return new KvmUnavailableError(`this host cannot run microVMs: ${e.message}`, e.code, { cause: e });
  }
  if (e instanceof SysError) {
    return new HostError(`the host refused what the microVM needs: ${e.message}`, e.code, { cause: e });
  }
  if (e instanceof KernelFormatError) {
    const path = ctx.kernel ?? "(bytes)";
    return new KernelImageError(`the kernel image "${path}" cannot be booted: ${e.message}`, "kernel", path, { cause: e });
  }
  if (e instanceof BootSetupError) {
    return new MicroVMConfigError(`the kernel image "${ctx.kernel ?? "(bytes)"}" cannot boot in this microVM: ${e.message}`, { cause: e });
  }
  if (CONFIG_ERRORS.some((c) => e instanceof c)) return new MicroVMConfigError((e as Error).message, { cause: e });
  if (!(e instanceof Error)) return e;
  switch (ctx.during) {
    case "create":
      // Dom0Error while building: its drive's image or ring is not usable.
      return e instanceof Dom0Error ? new MicroVMConfigError(e.message, { cause: e }) : e;
    case "start":
    case "pause":
      return new HostError(`the microVM could not ${ctx.during}: ${e.message}`, (e as NodeJS.ErrnoException).code, { cause: e });
    case "update":
      return e.constructor === Error ? new MicroVMConfigError(e.message, { cause: e }) : e;
  }
}
