// src/sys: the only layer that calls FFI (DESIGN.md §2). Re-exports libc wrappers, errors, the KVM ABI and TAP access and Unix sockets.
export * from "./errors.js";
export * from "./libc.js";
export * from "./kvm-abi.js";
export * from "./tun.js";
export * from "./unix.js";
