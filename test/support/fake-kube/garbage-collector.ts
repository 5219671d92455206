import { setImmediate as nextTurn } from "node:timers/promises";

import { ApiError, badRequest, notFound } from "./errors.ts";
import { cloneObject, type KubeObject } from "./objects.ts";
import type { DeleteResult, ObjectStore, Preconditions } from "./store.ts";
import type { ResourceType } from "./resources.ts";

export type PropagationPolicy = "Background" | "Foreground" | "Orphan";

export function parsePropagationPolicy(value: unknown): PropagationPolicy {
  if (value === undefined || value === null || value === "") {
    return "Background";
  }
  if (value === "Background" || value === "Foreground" || value === "Orphan") {
    return value;
  }
  throw badRequest(`invalid propagationPolicy ${JSON.stringify(value)}: must be Background, Foreground or Orphan`);
}

/**
 * Deletes dependents through their owner references, as kube-controller-manager's garbage collector does.
 * Background deletion removes the owner at once and its dependents a moment later. Foreground deletion here
 * removes the dependents first and then the owner within the one request, so the owner never shows the
 * `foregroundDeletion` finalizer that a real cluster adds while it waits. Orphan deletion strips the owner
 * reference from each dependent.
 */
export class GarbageCollector {
  private pending: Promise<void> = Promise.resolve();
  private readonly unsubscribe: () => void;

  constructor(private readonly store: ObjectStore) {
    this.unsubscribe = store.subscribe((event) => {
      const uid = event.object.metadata.uid;
      if (event.type === "DELETED" && uid !== undefined) {
        this.pending = this.pending.then(async () => {
          await nextTurn();
          this.collect(uid);
        });
      }
    });
  }

  delete(type: ResourceType, namespace: string | undefined, name: string, policy: PropagationPolicy, preconditions: Preconditions = {}): DeleteResult {
    const owner = this.store.get(type, namespace, name);
    if (owner === undefined) {
      throw notFound(type, name);
    }
    const ownerUid = owner.metadata.uid!;
    if (policy === "Orphan") {
      for (const dependent of this.store.dependentsOf(ownerUid)) {
        this.dropOwnerReference(dependent.type, dependent.object, ownerUid);
      }
    }
    if (policy === "Foreground") {
      for (const dependent of this.store.dependentsOf(ownerUid)) {
        if (!this.hasOtherLiveOwner(dependent.object, ownerUid)) {
          this.delete(dependent.type, dependent.object.metadata.namespace, dependent.object.metadata.name, "Foreground");
        }
      }
    }
    return this.store.delete(type, namespace, name, preconditions);
  }

  /** Resolves once every collection scheduled so far has run. */
  async idle(): Promise<void> {
    let observed: Promise<void>;
    do {
      observed = this.pending;
      await observed;
    } while (observed !== this.pending);
  }

  stop(): void {
    this.unsubscribe();
  }

  /** Deletes the dependents of a deleted owner, or only drops the reference where another owner is still alive. */
  private collect(ownerUid: string): void {
    for (const { type, object } of this.store.dependentsOf(ownerUid)) {
      try {
        if (this.hasOtherLiveOwner(object, ownerUid)) {
          this.dropOwnerReference(type, object, ownerUid);
        } else {
          this.store.delete(type, object.metadata.namespace, object.metadata.name, { uid: object.metadata.uid! });
        }
      } catch (error) {
        // NOTE: unlike the real collector, this one does not retry a dependent it failed to delete.
        if (!(error instanceof ApiError)) {
          throw error;
        }
      }
    }
  }

  private hasOtherLiveOwner(object: KubeObject, ownerUid: string): boolean {
    return (object.metadata.ownerReferences ?? []).some((reference) => reference.uid !== ownerUid && this.store.hasUid(reference.uid));
  }

  private dropOwnerReference(type: ResourceType, object: KubeObject, ownerUid: string): void {
    const next = cloneObject(object);
    next.metadata.ownerReferences = (object.metadata.ownerReferences ?? []).filter((reference) => reference.uid !== ownerUid);
    if (next.metadata.ownerReferences.length === 0) {
      delete next.metadata.ownerReferences;
    }
    this.store.update(type, next);
  }
}
