// The probe guest's virtio drivers as a host library (guest/src/hosted.c, built by `make -C guest`
// as guest/build/probe-hosted.so): the same C driver code the guest runs, called on this thread,
// its register accesses answered by the callbacks given here. Bound through koffi in src/sys, the
// only layer that calls FFI.

import { createRequire } from "node:module";
import type * as KoffiModule from "koffi";

export interface HostedProbe {
  /**
   * Runs one probe test ("blk-verify", "blk-ro", "blk-bench", "rng", "nsm") with `cmdline` (its
   * virtio_mmio.device= entries name the register windows), one RAM range [dmaBase, dmaBase +
   * dmaSize) for every DMA area (host memory the devices reach at these same addresses), and the
   * register callbacks. Blocks this thread until the test ends; returns its status and report.
   */
  run(
    test: string,
    cmdline: string,
    dmaBase: bigint,
    dmaSize: number,
    mmioRead: (addr: number) => number,
    mmioWrite: (addr: number, value: number) => void,
  ): { status: number; output: string };
}

export function loadHostedProbe(soPath: string): HostedProbe {
  const koffi = createRequire(import.meta.url)("koffi") as typeof KoffiModule;
  const lib = koffi.load(soPath);
  const readProto = koffi.proto("uint32_t HostedMmioRead(uint64_t addr)");
  const writeProto = koffi.proto("void HostedMmioWrite(uint64_t addr, uint32_t value)");
  const run = lib.func("hosted_run", "int", ["const char *", "const char *", "uint64_t", "uint64_t", koffi.pointer(readProto), koffi.pointer(writeProto)]);
  const output = lib.func("const char *hosted_output(void)");
  return {
    run(test, cmdline, dmaBase, dmaSize, mmioRead, mmioWrite) {
      // Transient callbacks: valid for this call, which is the only time the library calls them.
      const status = run(test, cmdline, dmaBase, dmaSize,
        (addr: number | bigint) => mmioRead(Number(addr)) >>> 0,
        (addr: number | bigint, value: number) => mmioWrite(Number(addr), value >>> 0)) as number;
      return { status, output: output() as string };
    },
  };
}
