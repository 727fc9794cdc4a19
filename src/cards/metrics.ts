// Per-card counters in shared memory: the card worker adds, anyone holding the buffer reads
// (the VMM's metrics endpoint, tests). BigInt64 words updated with Atomics, so a reader on
// another thread never sees a torn value.

/**
 * cpuMicros: CPU time of the device's back end since it was ready, apart from the vCPU threads and
 * the VMM's main thread — a card's own worker thread (CLOCK_THREAD_CPUTIME_ID); for a drive on
 * another I/O path, the Dom0 process, or 0 for the emulated disk (whose work is on the vCPU thread).
 */
export const METRIC_NAMES = ["requests", "bytes", "errors", "throttled", "kicks", "interrupts", "needsReset", "cpuMicros"] as const;
export type MetricName = (typeof METRIC_NAMES)[number];
export type CardMetricsSnapshot = Record<MetricName, number>;

export const METRICS_BYTES = 8 * METRIC_NAMES.length;
const METRIC_INDEX = Object.fromEntries(METRIC_NAMES.map((n, i) => [n, i])) as Record<MetricName, number>;

export class CardMetrics {
  private readonly words: BigInt64Array;

  constructor(readonly sab: SharedArrayBuffer = new SharedArrayBuffer(METRICS_BYTES)) {
    this.words = new BigInt64Array(sab, 0, METRIC_NAMES.length);
  }

  add(name: MetricName, n = 1): void {
    Atomics.add(this.words, METRIC_INDEX[name], BigInt(n));
  }

  /** Replaces a gauge (cpuMicros). */
  set(name: MetricName, n: number): void {
    Atomics.store(this.words, METRIC_INDEX[name], BigInt(Math.trunc(n)));
  }

  snapshot(): CardMetricsSnapshot {
    const out = {} as CardMetricsSnapshot;
    METRIC_NAMES.forEach((name, i) => {
      out[name] = Number(Atomics.load(this.words, i));
    });
    return out;
  }
}
