import { EventEmitter } from "node:events";

export type ReplicaState = "starting" | "ready" | "draining" | "failed";

/** One worker replica as the gateway sees it. */
export interface Replica {
  /** Unique within the controller, such as `npc-0`. */
  id: string;
  pool: string;
  /** Base URL of the worker, such as `http://127.0.0.1:41234`. */
  url: string;
  /** Quantization of the variant it serves, such as Q4_K_M. */
  quant: string;
  /** Index of that variant in the pool's ladder: 0 is the highest quality. */
  rung: number;
  state: ReplicaState;
  slots: number;
  /** Requests the gateway has sent to it and not yet finished. */
  outstanding: number;
  /** True while the replica switches to another variant of the ladder. */
  swapping?: boolean;
}

/**
 * The gateway's view of every replica. Runtimes (local processes, Kubernetes pods) write it; the
 * gateway reads it to route and counts outstanding requests on it.
 */
export class ReplicaTable extends EventEmitter<{ change: [Replica] ; remove: [Replica] }> {
  readonly #replicas = new Map<string, Replica>();

  /**
   * Adds a replica or updates its fields in place; `outstanding` is kept, because only the gateway counts
   * it. Updating in place matters: requests in flight hold the same object and finish on it.
   */
  upsert(replica: Omit<Replica, "outstanding">): Replica {
    const existing = this.#replicas.get(replica.id);
    if (existing !== undefined) {
      Object.assign(existing, replica);
      this.emit("change", existing);
      return existing;
    }
    const added: Replica = { ...replica, outstanding: 0 };
    this.#replicas.set(replica.id, added);
    this.emit("change", added);
    return added;
  }

  remove(id: string): void {
    const replica = this.#replicas.get(id);
    if (replica === undefined) return;
    this.#replicas.delete(id);
    this.emit("remove", replica);
  }

  get(id: string): Replica | undefined {
    return this.#replicas.get(id);
  }

  forPool(pool: string): Replica[] {
    return [...this.#replicas.values()].filter((replica) => replica.pool === pool);
  }

  all(): Replica[] {
    return [...this.#replicas.values()];
  }

  /** Marks a request as sent to a replica; the returned function marks it finished (once). */
  begin(id: string): () => void {
    const replica = this.#replicas.get(id);
    if (replica === undefined) return () => undefined;
    replica.outstanding += 1;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      // Looked up again, because the replica may have been removed and added back meanwhile.
      const current = this.#replicas.get(id);
      if (current !== undefined) current.outstanding = Math.max(0, current.outstanding - 1);
    };
  }
}
