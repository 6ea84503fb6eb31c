// Serializes async operations per key (one container at a time) while
// different keys proceed in parallel. An operation that needs several keys
// takes them with runAll, in one global order (see `rank`), so two such
// operations can never hold one key each and wait for the other's.
import { lockWaited } from './faults';

export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /**
   * `rank(key)`: keys of a lower rank are taken before keys of a higher one
   * (then by name). Code that already holds a key may take more only of a
   * higher rank than any it holds.
   */
  constructor(private readonly rank: (key: string) => number = () => 0) {}

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key);
    if (prev) lockWaited(key);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = (prev ?? Promise.resolve()).then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Run `fn` holding every key, taken one by one in the global order. */
  runAll<T>(keys: string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort((a, b) => this.rank(a) - this.rank(b) || (a < b ? -1 : a > b ? 1 : 0));
    const take = (i: number): Promise<T> => (i === sorted.length ? fn() : this.run(sorted[i]!, () => take(i + 1)));
    return take(0);
  }

  isHeld(key: string): boolean {
    return this.tails.has(key);
  }
}
