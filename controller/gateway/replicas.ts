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
}

/**
 * The gateway's view of every replica. Runtimes (local processes, Kubernetes pods) write it; the
 * gateway reads it to route and counts outstanding requests on it.
 */
export class ReplicaTable extends EventEmitter<{ change: [Replica] ; remove: [Replica] }> {
  readonly #replicas = new Map<string, Replica>();

  /** Adds a replica or updates its fields; `outstanding` is kept, because only the gateway counts it. */
  upsert(replica: Omit<Replica, "outstanding">): Replica {
    const existing = this.#replicas.get(replica.id);
    const next: Replica = { ...replica, outstanding: existing?.outstanding ?? 0 };
    this.#replicas.set(replica.id, next);
    this.emit("change", next);
    return next;
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
      replica.outstanding = Math.max(0, replica.outstanding - 1);
    };
  }
}
