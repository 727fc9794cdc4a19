// A VM's size limits, apart from the VM code so that the CLI's argument parser can name them
// without loading KVM, memory and device code.

/** vCPUs per VM. */
export const MAX_VCPUS = 8;
/** Guest memory, MiB. */
export const MIN_MEM_MIB = 16;
export const MAX_MEM_MIB = 64 * 1024;
