// Device state that several threads touch (every vCPU worker that takes an exit, and the main
// thread that feeds console input) lives in a SharedArrayBuffer guarded by a small Atomics lock.
// Device models keep no per-thread copies of guest-visible state: what one vCPU writes,
// another reads.

const UNLOCKED = 0;
const LOCKED = 1;
/** Locked, and somebody may sleep on the word: the unlock must wake one. */
const CONTENDED = 2;

/**
 * A mutex on one shared Int32, in the three-state shape of Drepper's "Futexes Are Tricky" (mutex
 * 3): taking and releasing it uncontended is one atomic each, and only a release that finds a
 * sleeper pays for Atomics.notify (which takes a lock inside V8: measured as most of a polling
 * card's time when every unlock notified).
 */
export class SharedLock {
  private readonly word: Int32Array;

  /** `sab` and `byteOffset` locate one 4-byte-aligned Int32 used as the lock word. */
  constructor(sab: SharedArrayBuffer, byteOffset = 0) {
    this.word = new Int32Array(sab, byteOffset, 1);
  }

  lock(): void {
    let c = Atomics.compareExchange(this.word, 0, UNLOCKED, LOCKED);
    if (c === UNLOCKED) return;
    // Contention is rare (a console byte arriving while a vCPU touches the UART): spin briefly,
    // then mark the word contended and sleep on it until an unlock hands it over.
    for (let spins = 0; spins < 100; spins++) {
      c = Atomics.compareExchange(this.word, 0, UNLOCKED, LOCKED);
      if (c === UNLOCKED) return;
    }
    if (c !== CONTENDED) c = Atomics.exchange(this.word, 0, CONTENDED);
    while (c !== UNLOCKED) {
      Atomics.wait(this.word, 0, CONTENDED, 1);
      c = Atomics.exchange(this.word, 0, CONTENDED);
    }
  }

  unlock(): void {
    if (Atomics.exchange(this.word, 0, UNLOCKED) === CONTENDED) Atomics.notify(this.word, 0, 1);
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
