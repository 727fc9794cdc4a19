// The C exit loop that `npm run bench:exits` measures the TypeScript vCPU path against
// (src/bench/c-exit-loop.c): built by `npm run build` (guest/Makefile) into guest/build/c-exit-loop.so
// and loaded through koffi here, because src/sys is the only layer that calls FFI. Prebuilt, so a
// host without gcc (the box) runs it too.

import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type * as KoffiModule from "koffi";

/** How a C run ended: the guest's debug-exit status (>= 0), or one of these (c-exit-loop.c END_*). */
export const C_LOOP_RESET = -1;
export const C_LOOP_SHUTDOWN = -2;
export const C_LOOP_OTHER_EXIT = -3;
export const C_LOOP_RUN_FAILED = -4;

export interface CExitLoopResult {
  /** >= 0: the guest's debug-exit status; else C_LOOP_*. */
  end: number;
  pioExits: number;
  mmioExits: number;
  interrupted: number;
  /** The exit reason (C_LOOP_OTHER_EXIT) or errno (C_LOOP_RUN_FAILED). */
  detail: number;
}

/** Runs a vCPU (its fd and the address of its mapped kvm_run) to the end of the guest's run, in C, on this thread. */
export type CExitLoop = (vcpuFd: number, runAddress: bigint, consoleFd: number) => CExitLoopResult;

/** Where `npm run build` puts the compiled loop (dist/sys/ or src/sys/ → ../../guest/build/). */
export const C_EXIT_LOOP_LIBRARY = fileURLToPath(new URL("../../guest/build/c-exit-loop.so", import.meta.url));

/** Binds typervisor_c_exit_loop from the built library. Throws naming the build step when it is missing. */
export function loadCExitLoop(library = C_EXIT_LOOP_LIBRARY): CExitLoop {
  if (!existsSync(library)) throw new Error(`${library} is missing: run "npm run build:guest" (it compiles src/bench/c-exit-loop.c)`);
  const koffi = createRequire(import.meta.url)("koffi") as typeof KoffiModule;
  // The kvm_run pointer travels as its address (a uint64 in the same register as a pointer, SysV x86-64).
  const fn = koffi.load(library).func("long typervisor_c_exit_loop(int vcpu_fd, uint64_t run, int console_fd, void *counts)");
  return (vcpuFd, runAddress, consoleFd) => {
    const counts = new BigUint64Array(4);
    const end = Number(fn(vcpuFd, runAddress, consoleFd, counts) as number | bigint);
    return { end, pioExits: Number(counts[0]), mmioExits: Number(counts[1]), interrupted: Number(counts[2]), detail: Number(counts[3]) };
  };
}
