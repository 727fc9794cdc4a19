// A fake vCPU (see fake-machine.ts): replays its script of exits as KVM_RUN would, on a vCPU
// worker thread (run) or pooled (runAsync: what blocks in run is waited for without blocking).

import { isMainThread } from "node:worker_threads";
import { SysError, sleepInterruptible } from "../../sys/index.js";
import type { KvmRun } from "../../kvm/run.js";
import type { VcpuExit } from "../../kvm/types.js";
import type { OpenedVcpu } from "../vcpu-thread.js";
import type { FakeVcpuBackend } from "./fake-machine.js";

// errno.h: EINTR
const EINTR = 4;
/** How often a pooled fake vCPU looks at its kick flag and go-ahead counter while it "runs". */
const POLL_MS = 5;

export function openFakeVcpu(backend: unknown, vcpuId: number): OpenedVcpu {
  const b = backend as FakeVcpuBackend;
  const words = new Int32Array(b.shared);
  const script = [...b.script];
  let current: VcpuExit | undefined;
  let lastIn: Uint8Array | undefined;
  const kvmRun = { decode: () => current! } as unknown as KvmRun;
  return {
    vcpu: {
      id: vcpuId,
      kvmRun,
      run() {
        // The VMM answered the previous `in` in place, as it does in kvm_run (little-endian).
        if (lastIn !== undefined) Atomics.store(words, 2, lastIn.reduceRight((v, b) => v * 256 + b, 0) | 0);
        lastIn = undefined;
        // KVM_RUN checks immediate_exit first and returns EINTR without entering the guest.
        if (Atomics.load(words, 0) !== 0) throw new SysError("KVM_RUN", EINTR);
        const step = script.shift() ?? { block: true };
        if ("block" in step) {
          script.unshift(step);
          // "Run the guest" until a signal interrupts us (SysError EINTR, counted in Int32[3]).
          // Like KVM, look at immediate_exit again between slices: a kick that lands just
          // before we block must not be lost.
          for (;;) {
            try {
              sleepInterruptible(20);
            } catch (e) {
              if (e instanceof SysError && e.code === "EINTR") Atomics.add(words, 3, 1);
              throw e;
            }
            if (Atomics.load(words, 0) !== 0) throw new SysError("KVM_RUN", EINTR);
          }
        }
        if ("fail" in step) throw new Error(step.fail);
        if ("waitFor" in step) {
          while (Atomics.load(words, 4) < step.waitFor) {
            if (Atomics.load(words, 0) !== 0) {
              script.unshift(step);
              throw new SysError("KVM_RUN", EINTR);
            }
            // On the main thread (vcpuThreads "main") nobody else can move the counter while
            // this waits: a signal (its periodic tick) ends the run, as it ends KVM_RUN.
            if (isMainThread) {
              try {
                sleepInterruptible(20);
              } catch (e) {
                script.unshift(step);
                throw e;
              }
            } else Atomics.wait(words, 4, Atomics.load(words, 4), 20);
          }
          current = { kind: "intr" };
          return;
        }
        if ("shutdown" in step) current = { kind: "shutdown" };
        else if ("inb" in step) {
          lastIn = new Uint8Array(1);
          current = { kind: "io", direction: "in", port: step.inb, size: 1, count: 1, data: lastIn };
        } else if ("inl" in step) {
          lastIn = new Uint8Array(4);
          current = { kind: "io", direction: "in", port: step.inl, size: 4, count: 1, data: lastIn };
        } else if ("out" in step) {
          current = { kind: "io", direction: "out", port: step.out, size: step.bytes.length, count: 1, data: Uint8Array.from(step.bytes) };
        } else if ("mmioWrite" in step) {
          const data = new Uint8Array(8);
          data.set(step.bytes);
          current = { kind: "mmio", address: step.mmioWrite, isWrite: true, len: step.bytes.length, data };
        }
      },
      async runAsync() {
        for (;;) {
          const step = script[0] ?? { block: true };
          // Kicked: run() answers the last `in` and returns EINTR, as KVM_RUN does.
          if (Atomics.load(words, 0) !== 0) return this.run();
          const waiting = "block" in step || ("waitFor" in step && Atomics.load(words, 4) < step.waitFor);
          if (!waiting) return this.run();
          await new Promise((r) => setTimeout(r, POLL_MS));
        }
      },
    },
    irqLine: (line: number) => {
      Atomics.store(words, 5, line);
      Atomics.add(words, 1, 1);
    },
    dumpState: () => ({ regs: { rip: 0xdead0000n + BigInt(vcpuId) } }),
    clearImmediateExit: () => Atomics.store(words, 0, 0),
  };
}
