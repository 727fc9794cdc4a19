// Device state that several threads touch (every vCPU worker that takes an exit, and the main
// thread that feeds console input) lives in a SharedArrayBuffer guarded by a small Atomics lock.
// Device models keep no per-thread copies of guest-visible state: what one vCPU writes,
// another reads.

const UNLOCKED = 0;
const LOCKED = 1;

export class SharedLock {
  private readonly word: Int32Array;

  /** `sab` and `byteOffset` locate one 4-byte-aligned Int32 used as the lock word. */
  constructor(sab: SharedArrayBuffer, byteOffset = 0) {
    this.word = new Int32Array(sab, byteOffset, 1);
  }

  lock(): void {
    // Contention is rare (a console byte arriving while a vCPU touches the UART); spin briefly,
    // then sleep on the word.
    for (let spins = 0; Atomics.compareExchange(this.word, 0, UNLOCKED, LOCKED) !== UNLOCKED; spins++) {
      if (spins > 100) Atomics.wait(this.word, 0, LOCKED, 1);
    }
  }

  unlock(): void {
    Atomics.store(this.word, 0, UNLOCKED);
    Atomics.notify(this.word, 0, 1);
  }

  with<T>(fn: () => T): T {
    this.lock();
    try {
      return fn();
    } finally {
      this.unlock();
    }
  }
}
