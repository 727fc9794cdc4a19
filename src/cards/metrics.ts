// Per-card counters in shared memory: the card worker adds, anyone holding the buffer reads
// (the VMM's metrics endpoint, tests). BigInt64 words updated with Atomics, so a reader on
// another thread never sees a torn value.

export const METRIC_NAMES = ["requests", "bytes", "errors", "throttled", "kicks", "interrupts", "needsReset"] as const;
export type MetricName = (typeof METRIC_NAMES)[number];
export type CardMetricsSnapshot = Record<MetricName, number>;

export const METRICS_BYTES = 8 * METRIC_NAMES.length;

export class CardMetrics {
  private readonly words: BigInt64Array;

  constructor(readonly sab: SharedArrayBuffer = new SharedArrayBuffer(METRICS_BYTES)) {
    this.words = new BigInt64Array(sab, 0, METRIC_NAMES.length);
  }

  add(name: MetricName, n = 1): void {
    Atomics.add(this.words, METRIC_NAMES.indexOf(name), BigInt(n));
  }

  snapshot(): CardMetricsSnapshot {
    const out = {} as CardMetricsSnapshot;
    METRIC_NAMES.forEach((name, i) => {
      out[name] = Number(Atomics.load(this.words, i));
    });
    return out;
  }
}
