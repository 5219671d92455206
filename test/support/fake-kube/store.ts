import { randomBytes, randomUUID } from "node:crypto";

import { alreadyExists, conflict, invalid, notFound, resourceVersionTooOld } from "./errors.ts";
import { applyDefaults } from "./defaults.ts";
import { cloneObject, jsonEqual, type KubeObject } from "./objects.ts";
import { apiVersionOf, resourceId, resourceTypeById, type ResourceType } from "./resources.ts";

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

/** One change to one object; the watch history is a list of these. */
export interface StoreEvent {
  type: EventType;
  resource: ResourceType;
  object: KubeObject;
  /** The object before a MODIFIED event, so a watch with a selector can tell objects that stopped matching. */
  previous?: KubeObject;
  revision: number;
}

export interface Preconditions {
  uid?: string;
  resourceVersion?: string;
}

export interface DeleteResult {
  object: KubeObject;
  /** False when finalizers keep the object: it then only has a deletionTimestamp. */
  removed: boolean;
}

type ResourceRef = ResourceType | string;

/**
 * All objects of the fake API server, under one global resourceVersion counter as etcd keeps them. Every
 * change is recorded for watches, whether it came over HTTP or straight from a test.
 */
export class ObjectStore {
  private revision = 0;
  private readonly objects = new Map<string, KubeObject>();
  private history: StoreEvent[] = [];
  private oldestWatchableRevision = 0;
  private readonly listeners = new Set<(event: StoreEvent) => void>();

  /** The latest resourceVersion, as lists report it. */
  get resourceVersion(): string {
    return String(this.revision);
  }

  get(resource: ResourceRef, namespace: string | undefined, name: string): KubeObject | undefined {
    const object = this.objects.get(keyOf(typeOf(resource), namespace, name));
    return object === undefined ? undefined : cloneObject(object);
  }

  /** Objects of a type, in one namespace or in all when `namespace` is undefined, sorted by namespace and name. */
  list(resource: ResourceRef, namespace?: string): KubeObject[] {
    const prefix = namespace === undefined ? `${resourceId(typeOf(resource))}/` : keyOf(typeOf(resource), namespace, "");
    return [...this.objects.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .sort(([left], [right]) => left.localeCompare(right))
      .map(([, object]) => cloneObject(object));
  }

  /** Finds every object, of any type, whose owner references name the given uid. */
  dependentsOf(ownerUid: string): Array<{ type: ResourceType; object: KubeObject }> {
    const dependents: Array<{ type: ResourceType; object: KubeObject }> = [];
    for (const [key, object] of this.objects) {
      if (object.metadata.ownerReferences?.some((reference) => reference.uid === ownerUid) === true) {
        dependents.push({ type: resourceTypeById(key.split("/")[0]!), object: cloneObject(object) });
      }
    }
    return dependents;
  }

  hasUid(uid: string): boolean {
    return [...this.objects.values()].some((object) => object.metadata.uid === uid);
  }

  create(resource: ResourceRef, input: KubeObject): KubeObject {
    const type = typeOf(resource);
    const object = cloneObject(input);
    object.apiVersion = apiVersionOf(type);
    object.kind = type.kind;
    object.metadata.name = nameFor(type, object);
    if (!type.namespaced) {
      delete object.metadata.namespace;
    }
    const key = keyOf(type, object.metadata.namespace, object.metadata.name);
    if (this.objects.has(key)) {
      throw alreadyExists(type, object.metadata.name);
    }

    object.metadata.uid = randomUUID();
    object.metadata.creationTimestamp = timestamp();
    delete object.metadata.deletionTimestamp;
    if (type.tracksGeneration) {
      object.metadata.generation = 1;
    } else {
      delete object.metadata.generation;
    }
    applyDefaults(type, object);
    return this.commit("ADDED", type, key, object);
  }

  /**
   * Replaces an object. Through the main resource, status stays as stored when the type has a status
   * subresource; through `status`, everything but status stays as stored. A write that changes nothing
   * keeps the resourceVersion and sends no watch event, as in Kubernetes.
   */
  update(resource: ResourceRef, input: KubeObject, subresource?: "status"): KubeObject {
    const type = typeOf(resource);
    const key = keyOf(type, type.namespaced ? input.metadata.namespace : undefined, input.metadata.name);
    const stored = this.objects.get(key);
    if (stored === undefined) {
      throw notFound(type, input.metadata.name);
    }
    checkResourceVersion(type, stored, input.metadata.resourceVersion);

    const next = subresource === "status" ? { ...cloneObject(stored), status: cloneObject(input.status) } : mergeForUpdate(type, stored, input);
    applyDefaults(type, next);
    if (type.tracksGeneration && !jsonEqual(specOf(stored), specOf(next))) {
      next.metadata.generation = (stored.metadata.generation ?? 0) + 1;
    }
    if (jsonEqual(next, stored)) {
      return cloneObject(stored);
    }
    if (next.metadata.deletionTimestamp !== undefined && (next.metadata.finalizers ?? []).length === 0) {
      return this.remove(type, key, next);
    }
    return this.commit("MODIFIED", type, key, next, stored);
  }

  /** Deletes an object, or only marks it with a deletionTimestamp while finalizers remain. */
  delete(resource: ResourceRef, namespace: string | undefined, name: string, preconditions: Preconditions = {}): DeleteResult {
    const type = typeOf(resource);
    const key = keyOf(type, namespace, name);
    const stored = this.objects.get(key);
    if (stored === undefined) {
      throw notFound(type, name);
    }
    if (preconditions.uid !== undefined && preconditions.uid !== stored.metadata.uid) {
      throw conflict(type, name, `Precondition failed: UID in precondition: ${preconditions.uid}, UID in object meta: ${stored.metadata.uid}`);
    }
    if (preconditions.resourceVersion !== undefined && preconditions.resourceVersion !== stored.metadata.resourceVersion) {
      throw conflict(type, name);
    }
    if ((stored.metadata.finalizers ?? []).length === 0) {
      return { object: this.remove(type, key, cloneObject(stored)), removed: true };
    }
    if (stored.metadata.deletionTimestamp !== undefined) {
      return { object: cloneObject(stored), removed: false };
    }
    const marked = cloneObject(stored);
    marked.metadata.deletionTimestamp = timestamp();
    return { object: this.commit("MODIFIED", type, key, marked, stored), removed: false };
  }

  /** Recorded events after `resourceVersion`; throws 410 Expired when some of them are no longer kept. */
  eventsAfter(resourceVersion: number): StoreEvent[] {
    if (resourceVersion < this.oldestWatchableRevision) {
      throw resourceVersionTooOld(resourceVersion, this.oldestWatchableRevision);
    }
    return this.history.filter((event) => event.revision > resourceVersion);
  }

  /** Forgets the events before `resourceVersion`, as etcd compaction does; older watches then get 410. */
  expireHistoryBefore(resourceVersion: number): void {
    this.oldestWatchableRevision = Math.max(this.oldestWatchableRevision, resourceVersion);
    this.history = this.history.filter((event) => event.revision >= resourceVersion);
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private remove(type: ResourceType, key: string, object: KubeObject): KubeObject {
    this.objects.delete(key);
    object.metadata.resourceVersion = String(++this.revision);
    this.record({ type: "DELETED", resource: type, object, revision: this.revision });
    return cloneObject(object);
  }

  private commit(eventType: EventType, type: ResourceType, key: string, object: KubeObject, previous?: KubeObject): KubeObject {
    object.metadata.resourceVersion = String(++this.revision);
    this.objects.set(key, object);
    const event: StoreEvent = { type: eventType, resource: type, object: cloneObject(object), revision: this.revision };
    if (previous !== undefined) {
      event.previous = cloneObject(previous);
    }
    this.record(event);
    return cloneObject(object);
  }

  private record(event: StoreEvent): void {
    this.history.push(event);
    for (const listener of this.listeners) {
      listener(event);
    }
  }
}

function typeOf(resource: ResourceRef): ResourceType {
  return typeof resource === "string" ? resourceTypeById(resource) : resource;
}

function keyOf(type: ResourceType, namespace: string | undefined, name: string): string {
  return `${resourceId(type)}/${type.namespaced ? (namespace ?? "") : ""}/${name}`;
}

function timestamp(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

function nameFor(type: ResourceType, object: KubeObject): string {
  if (object.metadata.name) {
    return object.metadata.name;
  }
  if (object.metadata.generateName) {
    return object.metadata.generateName + randomBytes(4).toString("hex").slice(0, 5);
  }
  throw invalid(type, "", "metadata.name: Required value: name or generateName is required");
}

function checkResourceVersion(type: ResourceType, stored: KubeObject, requested: string | undefined): void {
  if (requested === undefined || requested === "") {
    if (type.custom) {
      throw invalid(type, stored.metadata.name, "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update");
    }
    return;
  }
  if (requested !== stored.metadata.resourceVersion) {
    throw conflict(type, stored.metadata.name);
  }
}

/** Copies onto the incoming object the metadata that clients cannot change, and status when it has its own subresource. */
function mergeForUpdate(type: ResourceType, stored: KubeObject, input: KubeObject): KubeObject {
  const next = cloneObject(input);
  next.apiVersion = stored.apiVersion;
  next.kind = stored.kind;
  for (const field of ["name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp", "resourceVersion"] as const) {
    if (stored.metadata[field] === undefined) {
      delete next.metadata[field];
    } else {
      next.metadata[field] = stored.metadata[field] as never;
    }
  }
  if (type.subresources.includes("status")) {
    if (stored.status === undefined) {
      delete next.status;
    } else {
      next.status = cloneObject(stored.status);
    }
  }
  return next;
}

/** Everything generation counts: the object without apiVersion, kind, metadata and status. */
function specOf(object: KubeObject): Record<string, unknown> {
  const { apiVersion: _apiVersion, kind: _kind, metadata: _metadata, status: _status, ...spec } = object;
  return spec;
}
