// The C exit loop that `npm run bench:exits` measures the TypeScript vCPU path against
// (src/bench/c-exit-loop.c): compiled with gcc into a temporary shared object and loaded through
// koffi here, because src/sys is the only layer that calls FFI.

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

/** Compiles `source` (gcc -O2 -shared -fPIC) and binds typervisor_c_exit_loop. Throws with gcc's message when it cannot. */
export function loadCExitLoop(source: string): CExitLoop {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-c-loop-"));
  const so = join(dir, "c-exit-loop.so");
  const fn = (() => {
    try {
      execFileSync("gcc", ["-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-o", so, source], { stdio: ["ignore", "ignore", "pipe"] });
      const koffi = createRequire(import.meta.url)("koffi") as typeof KoffiModule;
      // The kvm_run pointer travels as its address (a uint64 in the same register as a pointer, SysV x86-64).
      return koffi.load(so).func("long typervisor_c_exit_loop(int vcpu_fd, uint64_t run, int console_fd, void *counts)");
    } finally {
      rmSync(dir, { recursive: true, force: true }); // loaded (or failed): the mapping outlives the file
    }
  })();
  return (vcpuFd, runAddress, consoleFd) => {
    const counts = new BigUint64Array(4);
    const end = Number(fn(vcpuFd, runAddress, consoleFd, counts) as number | bigint);
    return { end, pioExits: Number(counts[0]), mmioExits: Number(counts[1]), interrupted: Number(counts[2]), detail: Number(counts[3]) };
  };
}
