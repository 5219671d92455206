import { pickLeastLoaded } from "./admission.ts";
import type { ReplicaTable } from "./replicas.ts";

/** A slot on a replica, reserved for one request; `release` frees it (once). */
export interface SlotLease {
  replicaId: string;
  release(): void;
}

/** Why a queued request left the queue without a slot. */
export class QueueTimeoutError extends Error {
  override name = "QueueTimeoutError";
}

interface Waiter {
  floorRung: number;
  enqueuedAt: number;
  resolve(lease: SlotLease): void;
  reject(error: Error): void;
}

/**
 * Bounded per-pool queues of requests waiting for a local slot. `dispatch(pool)` runs whenever a slot may
 * have freed (a request finished, a replica became ready) and hands free slots to waiters in arrival
 * order, skipping a waiter whose quality floor no free replica meets.
 */
export class PoolQueues {
  readonly #table: ReplicaTable;
  readonly #waiters = new Map<string, Waiter[]>();

  constructor(table: ReplicaTable) {
    this.#table = table;
  }

  length(pool: string): number {
    return this.#waiters.get(pool)?.length ?? 0;
  }

  /** Reserves a free slot on the least-loaded ready replica at or above the floor, if there is one now. */
  tryLease(pool: string, floorRung: number, exclude: ReadonlySet<string> = new Set()): SlotLease | undefined {
    const free = this.#table
      .forPool(pool)
      .filter((replica) => replica.state === "ready" && replica.rung <= floorRung && replica.outstanding < replica.slots)
      .filter((replica) => !exclude.has(replica.id));
    const replica = pickLeastLoaded(free);
    if (replica === undefined) return undefined;
    const release = this.#table.begin(replica.id);
    return {
      replicaId: replica.id,
      release: () => {
        release();
        this.dispatch(pool);
      },
    };
  }

  /**
   * Waits for a slot. Rejects with `QueueTimeoutError` after `timeoutSeconds`, or with the signal's
   * reason when the client goes away.
   */
  wait(pool: string, floorRung: number, timeoutSeconds: number, signal: AbortSignal): Promise<SlotLease> {
    return new Promise<SlotLease>((resolve, reject) => {
      const queue = this.#waiters.get(pool) ?? [];
      this.#waiters.set(pool, queue);
      const leave = () => {
        const index = queue.indexOf(waiter);
        if (index >= 0) queue.splice(index, 1);
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
      };
      const waiter: Waiter = {
        floorRung,
        enqueuedAt: performance.now(),
        resolve: (lease) => {
          leave();
          resolve(lease);
        },
        reject: (error) => {
          leave();
          reject(error);
        },
      };
      const onAbort = () => waiter.reject(signal.reason instanceof Error ? signal.reason : new Error("client disconnected"));
      const timer = setTimeout(
        () => waiter.reject(new QueueTimeoutError(`no slot freed within ${timeoutSeconds} s`)),
        timeoutSeconds * 1000,
      );
      signal.addEventListener("abort", onAbort, { once: true });
      queue.push(waiter);
      this.dispatch(pool);
    });
  }

  /** Hands free slots to waiting requests, oldest first. */
  dispatch(pool: string): void {
    const queue = this.#waiters.get(pool);
    if (queue === undefined) return;
    for (const waiter of [...queue]) {
      const lease = this.tryLease(pool, waiter.floorRung);
      if (lease !== undefined) waiter.resolve(lease);
    }
  }

  /** Seconds the oldest request of a pool has waited, for metrics. */
  oldestWaitSeconds(pool: string): number {
    const oldest = this.#waiters.get(pool)?.[0];
    return oldest === undefined ? 0 : (performance.now() - oldest.enqueuedAt) / 1000;
  }

  /** Fails every waiting request, for shutdown. */
  rejectAll(error: Error): void {
    for (const queue of this.#waiters.values()) for (const waiter of [...queue]) waiter.reject(error);
  }
}
