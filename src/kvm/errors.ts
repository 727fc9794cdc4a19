// Errors raised by the KVM handles themselves (as opposed to SysError, a failed call).

/** A KVM precondition that does not hold: no /dev/kvm, a wrong API version, a missing capability. */
export class KvmError extends Error {
  /** The errno name when the error comes from a failed call (`ENOENT` for a missing /dev/kvm). */
  readonly code: string | undefined;

  constructor(message: string, options?: { code?: string; cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = "KvmError";
    this.code = options?.code;
  }
}
