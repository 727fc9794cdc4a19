// State shared between the VMM's main thread and its vCPU workers, in one SharedArrayBuffer:
// a run state word the workers wait on, a stop flag any thread may raise, and per-vCPU exit
// counters that only the owning worker writes and anyone may read (metrics).

export const RUN_CREATED = 0;
export const RUN_GO = 1;
export const RUN_STOP = 2;

/** Per-vCPU counters, one Float64 each (exact up to 2^53). */
export const Counter = {
  IO_IN: 0,
  IO_OUT: 1,
  MMIO_READ: 2,
  MMIO_WRITE: 3,
  UNHANDLED_IO: 4,
  UNHANDLED_MMIO: 5,
  INTERRUPTED: 6,
  OTHER: 7,
} as const;
export const COUNTERS_PER_VCPU = 8;
export type CounterName = keyof typeof Counter;

const WORDS = 4; // run state, pause request, parked vCPUs, spare
const W_STATE = 0;
const W_PAUSE = 1;
const W_PARKED = 2;
const HEADER_BYTES = WORDS * 4;

export class VmControl {
  readonly sab: SharedArrayBuffer;
  private readonly words: Int32Array;
  readonly counters: Float64Array;

  constructor(vcpus: number, sab?: SharedArrayBuffer) {
    this.sab = sab ?? new SharedArrayBuffer(HEADER_BYTES + vcpus * COUNTERS_PER_VCPU * 8);
    this.words = new Int32Array(this.sab, 0, WORDS);
    this.counters = new Float64Array(this.sab, HEADER_BYTES, vcpus * COUNTERS_PER_VCPU);
  }

  get vcpus(): number {
    return this.counters.length / COUNTERS_PER_VCPU;
  }

  get state(): number {
    return Atomics.load(this.words, W_STATE);
  }

  /** Releases every worker waiting in `waitForGo`. */
  go(): void {
    Atomics.compareExchange(this.words, 0, RUN_CREATED, RUN_GO);
    Atomics.notify(this.words, 0);
  }

  /** Raises the stop flag (idempotent) and wakes workers still waiting to start. */
  requestStop(): void {
    Atomics.store(this.words, W_STATE, RUN_STOP);
    Atomics.notify(this.words, W_STATE);
    Atomics.notify(this.words, W_PAUSE); // parked vCPUs leave too
  }

  get stopRequested(): boolean {
    return Atomics.load(this.words, 0) === RUN_STOP;
  }

  /** Asks every vCPU to park at its next exit (the caller kicks them out of KVM_RUN). */
  requestPause(): void {
    Atomics.store(this.words, W_PAUSE, 1);
  }

  /** Lets parked vCPUs run again. */
  requestResume(): void {
    Atomics.store(this.words, W_PAUSE, 0);
    Atomics.notify(this.words, W_PAUSE);
  }

  get pauseRequested(): boolean {
    return Atomics.load(this.words, W_PAUSE) === 1;
  }

  /** vCPUs parked right now. */
  get parked(): number {
    return Atomics.load(this.words, W_PARKED);
  }

  /**
   * Called by a vCPU thread that saw a pause request: counts itself parked and sleeps until
   * resumed or stopped.
   */
  park(): void {
    Atomics.add(this.words, W_PARKED, 1);
    try {
      while (Atomics.load(this.words, W_PAUSE) === 1 && !this.stopRequested) {
        Atomics.wait(this.words, W_PAUSE, 1, 1000);
      }
    } finally {
      Atomics.sub(this.words, W_PARKED, 1);
    }
  }

  /**
   * park() for a vCPU whose exits are handled on the event loop (a pooled vCPU): counts itself
   * parked and resolves once resumed or stopped, without blocking the thread.
   */
  async parkAsync(): Promise<void> {
    Atomics.add(this.words, W_PARKED, 1);
    try {
      while (Atomics.load(this.words, W_PAUSE) === 1 && !this.stopRequested) {
        const w = Atomics.waitAsync(this.words, W_PAUSE, 1, 1000);
        if (w.async) await w.value;
      }
    } finally {
      Atomics.sub(this.words, W_PARKED, 1);
    }
  }

  /** Blocks a worker until `go()` or `requestStop()`. Returns false if stopped before starting. */
  waitForGo(): boolean {
    while (Atomics.load(this.words, 0) === RUN_CREATED) Atomics.wait(this.words, 0, RUN_CREATED, 1000);
    return Atomics.load(this.words, 0) === RUN_GO;
  }

  /** The counter row of one vCPU (a view: writes are visible to every thread). */
  row(vcpu: number): Float64Array {
    return this.counters.subarray(vcpu * COUNTERS_PER_VCPU, (vcpu + 1) * COUNTERS_PER_VCPU);
  }

  snapshot(vcpu: number): Record<CounterName, number> {
    const r = this.row(vcpu);
    const out = {} as Record<CounterName, number>;
    for (const [name, i] of Object.entries(Counter) as Array<[CounterName, number]>) out[name] = r[i]!;
    return out;
  }
}
