export interface WorkQueueOptions {
  /** Delay before the first retry of a failed key; each further failure doubles it. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * A queue of keys handled one at a time. A key added again while it waits is queued once, and a key
 * added while it is being handled runs again afterwards, so no change is lost and none is handled twice
 * at once. Failed keys come back after an exponential backoff.
 */
export class WorkQueue {
  private readonly pending: string[] = [];
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private wake: (() => void) | undefined;
  private stopped = false;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(options: WorkQueueOptions = {}) {
    this.initialBackoffMs = options.initialBackoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 60_000;
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.pending.push(key);
    this.wake?.();
  }

  /** Drops a key's pending retry and failure count, as for an object that no longer exists. */
  forget(key: string): void {
    clearTimeout(this.retryTimers.get(key));
    this.retryTimers.delete(key);
    this.failures.delete(key);
  }

  /** Handles keys until stop() is called; a handler's rejection schedules a retry of its key. */
  async run(handle: (key: string) => Promise<void>, onError: (key: string, error: unknown) => void): Promise<void> {
    while (!this.stopped) {
      const key = this.pending.shift();
      if (key === undefined) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        continue;
      }
      this.queued.delete(key);
      this.active.add(key);
      try {
        await handle(key);
        this.failures.delete(key);
      } catch (error) {
        onError(key, error);
        this.retryLater(key);
      } finally {
        this.active.delete(key);
      }
      if (this.dirty.delete(key)) this.add(key);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
    this.wake?.();
  }

  private retryLater(key: string): void {
    const failures = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, failures);
    const delay = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** (failures - 1));
    clearTimeout(this.retryTimers.get(key));
    this.retryTimers.set(
      key,
      setTimeout(() => {
        this.retryTimers.delete(key);
        this.add(key);
      }, delay),
    );
  }
}
