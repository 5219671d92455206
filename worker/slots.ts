import type { LlamaContextSequence } from "node-llama-cpp";

import { ApiError } from "../api/errors.ts";
import type { Engine } from "./engine.ts";

/** A slot held by one request: the variant it runs on and the sequence it decodes into. */
export interface Lease {
  engine: Engine;
  sequence: LlamaContextSequence;
}

interface Waiter {
  resolve(lease: Lease): void;
  reject(error: Error): void;
}

/**
 * Hands out slots one request at a time, with a bounded queue of requests waiting for a free one.
 * Only the serving engine gets new work. An engine being replaced keeps the requests it already runs,
 * and its slots go back to it rather than to the queue, so queued requests wait for the new variant.
 */
export class SlotRouter {
  readonly slots: number;
  readonly maxQueue: number;
  #serving: Engine | undefined;
  readonly #retiring = new Set<Engine>();
  readonly #waiters: Waiter[] = [];
  #refusal: Error | undefined;
  #recentServiceSeconds = 1;

  constructor(slots: number, maxQueue: number) {
    this.slots = slots;
    this.maxQueue = maxQueue;
  }

  /** The engine new requests go to; undefined while a drain-mode swap has no variant loaded. */
  get serving(): Engine | undefined {
    return this.#serving;
  }

  get queueDepth(): number {
    return this.#waiters.length;
  }

  /** Slots in use on every loaded engine, so the count can exceed `slots` while a swap overlaps. */
  get busySlots(): number {
    let busy = 0;
    for (const engine of this.engines()) busy += engine.busySlots;
    return busy;
  }

  /** Slots new requests may still take. */
  get freeSlots(): number {
    return this.#serving?.freeSlots ?? 0;
  }

  /** Fraction of the loaded engines' KV cache cells that hold tokens. */
  get kvCacheUsageRatio(): number {
    let used = 0;
    let capacity = 0;
    for (const engine of this.engines()) {
      const cells = engine.kvCacheCells;
      used += cells.used;
      capacity += cells.capacity;
    }
    return capacity === 0 ? 0 : used / capacity;
  }

  /**
   * Sends new and queued requests to `engine`, or keeps them in the queue while it is undefined. The
   * engine served until now keeps its in-flight requests until `retire` is called for it.
   */
  route(engine: Engine | undefined): void {
    const previous = this.#serving;
    if (previous !== undefined && previous !== engine) this.#retiring.add(previous);
    this.#serving = engine;
    if (engine === undefined) return;
    this.#retiring.delete(engine);
    this.#refusal = undefined;
    for (let waiter = this.#waiters.at(0); waiter !== undefined; waiter = this.#waiters.at(0)) {
      const sequence = engine.take();
      if (sequence === undefined) break;
      this.#waiters.shift();
      waiter.resolve({ engine, sequence });
    }
  }

  /** Forgets an engine that no longer serves, once it is idle and about to be disposed. */
  retire(engine: Engine): void {
    this.#retiring.delete(engine);
  }

  /** Rejects every queued request, and new ones too, with `error` until `route` names an engine again. */
  rejectRequests(error: Error): void {
    this.#refusal = error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }

  /**
   * Waits for a free slot. Throws a 429 `ApiError` when the queue is full, and rejects with the signal's
   * reason if the client goes away while waiting.
   */
  async acquire(signal: AbortSignal): Promise<Lease> {
    signal.throwIfAborted();
    if (this.#refusal !== undefined) throw this.#refusal;
    const engine = this.#serving;
    const sequence = engine?.take();
    if (engine !== undefined && sequence !== undefined) return { engine, sequence };
    if (this.#waiters.length >= this.maxQueue) throw this.#queueFullError();

    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (lease) => {
          signal.removeEventListener("abort", onAbort);
          resolve(lease);
        },
        reject: (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter);
        if (index >= 0) this.#waiters.splice(index, 1);
        reject(signal.reason instanceof Error ? signal.reason : new Error("request aborted while queued"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** Returns a slot, handing it straight to the longest-waiting request when its engine still serves. */
  release(lease: Lease, serviceSeconds: number): void {
    this.#recentServiceSeconds = 0.8 * this.#recentServiceSeconds + 0.2 * serviceSeconds;
    const waiter = lease.engine === this.#serving ? this.#waiters.shift() : undefined;
    if (waiter !== undefined) waiter.resolve(lease);
    else lease.engine.give(lease.sequence);
  }

  /** The serving engine and those still finishing requests after a swap. */
  *engines(): Iterable<Engine> {
    if (this.#serving !== undefined) yield this.#serving;
    yield* this.#retiring;
  }

  #queueFullError(): ApiError {
    // Every queued request and slot must turn over once before a retry finds room.
    const waitSeconds = ((this.#waiters.length + this.slots) * this.#recentServiceSeconds) / this.slots;
    const retryAfter = Math.min(60, Math.max(1, Math.ceil(waitSeconds)));
    return new ApiError(
      429,
      `All ${this.slots} slots are busy and ${this.#waiters.length} requests are queued. Retry after ${retryAfter} s.`,
      { code: "rate_limit_exceeded", headers: { "retry-after": String(retryAfter) } },
    );
  }
}
