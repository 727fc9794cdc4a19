// src/sys: the only layer that calls FFI (DESIGN.md §2). Re-exports libc wrappers, errors and the KVM ABI.
export * from "./errors.js";
export * from "./libc.js";
export * from "./kvm-abi.js";
