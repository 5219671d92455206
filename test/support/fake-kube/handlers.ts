import type { ServerResponse } from "node:http";

import { ApiError, badRequest, invalid, notFound } from "./errors.ts";
import { parsePropagationPolicy, type GarbageCollector } from "./garbage-collector.ts";
import { cloneObject, isRecord, type KubeObject } from "./objects.ts";
import { applyPatch } from "./patch.ts";
import { apiVersionOf } from "./resources.ts";
import type { ResourcePath } from "./routes.ts";
import { formatMatchLabels, matchesSelector, parseSelector } from "./selectors.ts";
import type { ObjectStore } from "./store.ts";
import type { WatchHub } from "./watch.ts";

export interface ResourceRequest {
  method: string;
  path: ResourcePath;
  query: URLSearchParams;
  contentType: string;
  body: unknown;
}

export interface Reply {
  code: number;
  body: unknown;
}

/** The REST verbs on served resources: list, watch, get, create, update, patch and delete. */
export class ResourceHandlers {
  constructor(
    private readonly store: ObjectStore,
    private readonly watches: WatchHub,
    private readonly collector: GarbageCollector,
  ) {}

  /** Handles one request; returns undefined when a watch took over the response. */
  handle(request: ResourceRequest, response: ServerResponse): Reply | undefined {
    const { method, path } = request;
    if (path.name === undefined) {
      if (method === "GET" && isTrue(request.query.get("watch"))) {
        this.watch(request, response);
        return undefined;
      }
      if (method === "GET") return { code: 200, body: this.list(request) };
      if (method === "POST") return { code: 201, body: this.create(request) };
    } else {
      if (method === "GET") return { code: 200, body: this.get(path) };
      if (method === "PUT") return { code: 200, body: this.replace(path, requireObject(request.body)) };
      if (method === "PATCH") return { code: 200, body: this.patch(request) };
      if (method === "DELETE" && path.subresource === undefined) return { code: 200, body: this.delete(request) };
    }
    throw new ApiError(405, "MethodNotAllowed", `${method} is not supported on ${request.path.type.plural}${path.subresource ? `/${path.subresource}` : ""}`);
  }

  private watch(request: ResourceRequest, response: ServerResponse): void {
    const timeout = request.query.get("timeoutSeconds");
    this.watches.open(
      {
        type: request.path.type,
        namespace: request.path.namespace,
        selector: parseSelector(request.query),
        resourceVersion: request.query.get("resourceVersion") ?? undefined,
        allowBookmarks: isTrue(request.query.get("allowWatchBookmarks")),
        timeoutSeconds: timeout === null ? undefined : Number(timeout),
      },
      response,
    );
  }

  /**
   * Lists at the latest resourceVersion. A request for a newer resourceVersion gets the 504 "Too large
   * resource version" that the API server returns after waiting for it in vain.
   */
  private list(request: ResourceRequest): unknown {
    const { type, namespace } = request.path;
    const requested = request.query.get("resourceVersion");
    if (requested !== null && requested !== "" && Number(requested) > Number(this.store.resourceVersion)) {
      throw new ApiError(504, "Timeout", `Too large resource version: ${requested}, current: ${this.store.resourceVersion}`);
    }
    if (request.query.get("resourceVersionMatch") === "Exact" && requested !== this.store.resourceVersion) {
      throw badRequest("the fake API server lists only at the latest resourceVersion; resourceVersionMatch=Exact with an older one is not supported");
    }
    const selector = parseSelector(request.query);
    const items = this.store
      .list(type, namespace)
      .filter((object) => matchesSelector(object, selector))
      .map((object) => (type.custom ? object : withoutTypeMeta(object)));
    return { apiVersion: apiVersionOf(type), kind: `${type.kind}List`, metadata: { resourceVersion: this.store.resourceVersion }, items };
  }

  private get(path: ResourcePath): unknown {
    const object = this.read(path);
    return path.subresource === "scale" ? scaleOf(object) : object;
  }

  private create(request: ResourceRequest): unknown {
    const { type, namespace } = request.path;
    const object = requireObject(request.body);
    if (type.namespaced) {
      if (object.metadata.namespace !== undefined && object.metadata.namespace !== namespace) {
        throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
      }
      object.metadata.namespace = namespace ?? "default";
    }
    return this.store.create(type, object);
  }

  private replace(path: ResourcePath, object: KubeObject): unknown {
    if (path.subresource === "scale") {
      return this.writeScale(path, object);
    }
    if (object.metadata.name !== path.name) {
      throw badRequest(`the name of the object (${object.metadata.name}) does not match the name on the URL (${path.name})`);
    }
    object.metadata.namespace = path.namespace;
    return this.store.update(path.type, object, path.subresource === "status" ? "status" : undefined);
  }

  private patch(request: ResourceRequest): unknown {
    const { path } = request;
    const current = this.read(path);
    const target = path.subresource === "scale" ? scaleOf(current) : current;
    const patched = applyPatch(target, request.contentType, request.body);
    if (!isRecord(patched) || !isRecord(patched.metadata)) {
      throw invalid(path.type, path.name!, "metadata: Required value: a patch must leave an object with metadata");
    }
    const object = patched as KubeObject;
    object.metadata.name = path.name!;
    return this.replace(path, object);
  }

  /** Deletes with `propagationPolicy` and `preconditions` from the DeleteOptions body or the query. */
  private delete(request: ResourceRequest): unknown {
    const { type, namespace, name } = request.path;
    const options = isRecord(request.body) ? request.body : {};
    const policy = parsePropagationPolicy(request.query.get("propagationPolicy") ?? options.propagationPolicy);
    const preconditions = isRecord(options.preconditions) ? options.preconditions : {};
    const result = this.collector.delete(type, namespace, name!, policy, preconditions);
    if (!result.removed || type.returnsDeletedObject) {
      return result.object;
    }
    const uid = result.object.metadata.uid!;
    return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", details: { name, group: type.group, kind: type.plural, uid } };
  }

  private read(path: ResourcePath): KubeObject {
    const object = this.store.get(path.type, path.namespace, path.name!);
    if (object === undefined) {
      throw notFound(path.type, path.name!);
    }
    return object;
  }

  private writeScale(path: ResourcePath, scale: KubeObject): unknown {
    const current = this.read(path);
    const replicas = isRecord(scale.spec) ? scale.spec.replicas : undefined;
    if (typeof replicas !== "number" || !Number.isInteger(replicas) || replicas < 0) {
      throw invalid(path.type, path.name!, "spec.replicas: Invalid value: must be a non-negative integer");
    }
    const next = cloneObject(current);
    next.spec = { ...(isRecord(current.spec) ? current.spec : {}), replicas };
    next.metadata.resourceVersion = scale.metadata.resourceVersion ?? current.metadata.resourceVersion;
    return scaleOf(this.store.update(path.type, next));
  }
}

/** Builds the `autoscaling/v1` Scale view of an object with a scale subresource. */
function scaleOf(object: KubeObject): KubeObject {
  const spec = isRecord(object.spec) ? object.spec : {};
  const status = isRecord(object.status) ? object.status : {};
  const selector = isRecord(spec.selector) && isRecord(spec.selector.matchLabels) ? formatMatchLabels(spec.selector.matchLabels as Record<string, string>) : "";
  const { name, namespace, uid, resourceVersion, creationTimestamp } = object.metadata;
  return {
    apiVersion: "autoscaling/v1",
    kind: "Scale",
    metadata: { name, namespace, uid, resourceVersion, creationTimestamp },
    spec: { replicas: spec.replicas ?? 0 },
    status: { replicas: status.replicas ?? 0, selector },
  };
}

/** Built-in list items come without apiVersion and kind, a difference clients must tolerate. */
function withoutTypeMeta(object: KubeObject): KubeObject {
  const { apiVersion: _apiVersion, kind: _kind, ...rest } = object;
  return rest;
}

function requireObject(body: unknown): KubeObject {
  if (!isRecord(body) || !isRecord(body.metadata)) {
    throw badRequest("the request body must be a Kubernetes object with metadata");
  }
  return body as KubeObject;
}

function isTrue(value: string | null): boolean {
  return value === "true" || value === "1";
}
