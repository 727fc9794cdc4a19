// The probe guest's virtio drivers as a host library (guest/src/hosted.c, built by `make -C guest`
// as guest/build/probe-hosted.so): the same C driver code the guest runs, called on this thread,
// its register accesses answered by the callbacks given here. Bound through koffi in src/sys, the
// only layer that calls FFI.

import { createRequire } from "node:module";
import type * as KoffiModule from "koffi";

export interface HostedProbe {
  /**
   * Runs one probe test (blk-verify, blk-ro, blk-bench, blk-durable, blk-hostile, rng, nsm,
   * ata-verify, ata-bench, xenblk-verify, xenblk-bench) with `cmdline` (its virtio_mmio.device=,
   * typervisor_ata= and typervisor_xenblk= entries name the devices), one RAM range [dmaBase,
   * dmaBase + dmaSize) for every DMA area (host memory the devices reach at these same addresses;
   * 16 MiB), and the register and port callbacks. Blocks this thread until the test ends.
   */
  run(
    test: string,
    cmdline: string,
    dmaBase: bigint,
    dmaSize: number,
    mmioRead: (addr: number) => number,
    mmioWrite: (addr: number, value: number) => void,
    pioIn: (port: number, size: number) => number,
    pioOut: (port: number, size: number, value: number) => void,
  ): { status: number; output: string };
}

export function loadHostedProbe(soPath: string): HostedProbe {
  const koffi = createRequire(import.meta.url)("koffi") as typeof KoffiModule;
  const lib = koffi.load(soPath);
  const readProto = koffi.proto("uint32_t HostedMmioRead(uint64_t addr)");
  const writeProto = koffi.proto("void HostedMmioWrite(uint64_t addr, uint32_t value)");
  const inProto = koffi.proto("uint32_t HostedPioIn(uint32_t port, uint32_t size)");
  const outProto = koffi.proto("void HostedPioOut(uint32_t port, uint32_t size, uint32_t value)");
  const run = lib.func("hosted_run", "int", [
    "const char *", "const char *", "uint64_t", "uint64_t",
    koffi.pointer(readProto), koffi.pointer(writeProto), koffi.pointer(inProto), koffi.pointer(outProto),
  ]);
  const output = lib.func("const char *hosted_output(void)");
  return {
    run(test, cmdline, dmaBase, dmaSize, mmioRead, mmioWrite, pioIn, pioOut) {
      // Transient callbacks: valid for this call, which is the only time the library calls them.
      const status = run(test, cmdline, dmaBase, dmaSize,
        (addr: number | bigint) => mmioRead(Number(addr)) >>> 0,
        (addr: number | bigint, value: number) => mmioWrite(Number(addr), value >>> 0),
        (port: number, size: number) => pioIn(port, size) >>> 0,
        (port: number, size: number, value: number) => pioOut(port, size, value >>> 0)) as number;
      return { status, output: output() as string };
    },
  };
}
