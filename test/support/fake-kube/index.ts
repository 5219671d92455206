/**
 * # Fake Kubernetes API server
 *
 * A model of the Kubernetes API for tests, not a Kubernetes: no kube-apiserver, etcd or controller runs
 * here. It serves plain HTTP on 127.0.0.1 and is meant to be driven through the real
 * `@kubernetes/client-node`, so that code written against it also works against a cluster.
 *
 * Implemented:
 * - Resources: core/v1 pods, services, events, configmaps and secrets; apps/v1 deployments with the
 *   `status` and `scale` (autoscaling/v1 Scale) subresources; coordination.k8s.io/v1 leases;
 *   spillway.dev/v1alpha1 modelpools with the `status` subresource. All are namespaced; namespaces
 *   exist implicitly.
 * - Discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`) and `/version`.
 * - get, list, create, update (PUT), patch and delete. Lists carry the latest resourceVersion and
 *   accept `labelSelector` (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and `fieldSelector` on
 *   `metadata.name` and `metadata.namespace`.
 * - Metadata: uid, creationTimestamp, `generateName`, and one global resourceVersion counter. Deployments
 *   and ModelPools track `generation`, which counts changes outside metadata and status.
 * - Optimistic concurrency: an update with a stale resourceVersion is a 409 Conflict, and a custom
 *   resource update without one is a 422. A create of an existing name is a 409 AlreadyExists. Errors are
 *   `meta/v1` Status objects with the reasons Kubernetes uses.
 * - Patches: `application/json-patch+json` (RFC 6902) and `application/merge-patch+json` (RFC 7386).
 *   `application/strategic-merge-patch+json` is applied as a merge patch, so lists with a patch merge key
 *   are replaced, not merged. Server-side apply is a 415.
 * - Subresources: `/status` writes only status and leaves spec and generation alone, and main-resource
 *   writes leave status alone. `/scale` reads and writes `spec.replicas`.
 * - Watches (`?watch=true`): one JSON event per line, starting with ADDED events when no resourceVersion
 *   is given, replaying recorded changes after a given one, or a 410 ERROR event when the history before
 *   it was expired. Also `timeoutSeconds`, `allowWatchBookmarks` and selectors, with objects entering or
 *   leaving a selector seen as ADDED or DELETED.
 * - Deletion: finalizers keep an object, marked with a deletionTimestamp, until an update removes the
 *   last one. Deletes accept `preconditions` and a `propagationPolicy` over owner references: Background
 *   (the default), Foreground and Orphan. GarbageCollector explains how Foreground differs.
 * - Defaults: a Deployment's `spec.replicas` is 1 and a Secret's `stringData` is merged into `data`.
 * - Authentication: every request must carry `Authorization: Bearer <token>` with the server's token.
 *
 * Not implemented: admission webhooks and admission plugins, RBAC and authorization, server-side apply
 * and managedFields, CRD schema validation, defaulting and pruning (a ModelPool is stored as sent),
 * defaulting beyond the two cases above, any controller (a Deployment never gets ReplicaSets, Pods or
 * status unless a test writes them), namespaces as objects, cluster-scoped resources, deletecollection,
 * pagination (`limit` is ignored and every list is complete), lists at an older resourceVersion, `dryRun`,
 * graceful pod termination, protobuf and CBOR, TLS, and the `watch/` path prefix.
 *
 * Test hooks: `store` reads and writes objects without HTTP (writes still reach watches),
 * `expireWatchHistoryBefore`, `injectWatchError`, `dropWatches`, `sendBookmarks`, `collectGarbage`,
 * `stallRequests` and the `requests` log.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import { KubeConfig } from "@kubernetes/client-node";

import { apiGroups, apiResources, apiVersions, fakeServerVersion } from "./discovery.ts";
import { ApiError, badRequest, type Status } from "./errors.ts";
import { GarbageCollector } from "./garbage-collector.ts";
import { ResourceHandlers, type Reply } from "./handlers.ts";
import { notServed, parseRoute } from "./routes.ts";
import { ObjectStore } from "./store.ts";
import { WatchHub } from "./watch.ts";

export { ObjectStore } from "./store.ts";
export type { KubeObject, ObjectMeta, OwnerReference } from "./objects.ts";
export type { Status } from "./errors.ts";

/** One request the server received, in arrival order. */
export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  contentType: string | undefined;
  /** The response code; 0 until the response starts. */
  code: number;
}

const token = "spillway-fake-token";

export class FakeKubeApiServer {
  readonly store = new ObjectStore();
  readonly requests: RecordedRequest[] = [];
  private readonly watches = new WatchHub(this.store);
  private readonly collector = new GarbageCollector(this.store);
  private readonly handlers = new ResourceHandlers(this.store, this.watches, this.collector);
  private readonly server: Server;
  private stallMatcher: ((request: RecordedRequest) => boolean) | undefined;
  private readonly stalled: Array<() => void> = [];

  private constructor() {
    this.server = createServer((request, response) => {
      this.serve(request, response).catch((error: unknown) => {
        response.destroy(error instanceof Error ? error : new Error(String(error)));
      });
    });
  }

  static async start(): Promise<FakeKubeApiServer> {
    const fake = new FakeKubeApiServer();
    await new Promise<void>((resolve, reject) => {
      fake.server.once("error", reject);
      fake.server.listen(0, "127.0.0.1", resolve);
    });
    return fake;
  }

  get url(): string {
    const address = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${address.port}`;
  }

  /** Watches open right now. */
  get openWatchCount(): number {
    return this.watches.openCount;
  }

  /** Returns a client configuration for this server: plain HTTP, a bearer token, namespace `default`. */
  kubeConfig(): KubeConfig {
    const config = new KubeConfig();
    config.loadFromOptions({
      clusters: [{ name: "fake", server: this.url, skipTLSVerify: true }],
      users: [{ name: "test", token }],
      contexts: [{ name: "fake", cluster: "fake", user: "test", namespace: "default" }],
      currentContext: "fake",
    });
    return config;
  }

  /** Makes a watch from any resourceVersion older than `resourceVersion` fail with 410 Gone. */
  expireWatchHistoryBefore(resourceVersion: number | string): void {
    this.store.expireHistoryBefore(Number(resourceVersion));
  }

  /**
   * Sends an ERROR event on every open watch of `resource` (such as `deployments.apps`; all when
   * undefined) and ends those watches. The default status is a 500 InternalError.
   */
  injectWatchError(status: Partial<Pick<Status, "code" | "reason" | "message">> = {}, resource?: string): void {
    const error = new ApiError(status.code ?? 500, status.reason ?? "InternalError", status.message ?? "injected watch error");
    this.watches.injectError(error.toStatus(), resource);
  }

  /** Cuts the connection of every open watch of `resource` (all when undefined), with no final event. */
  dropWatches(resource?: string): void {
    this.watches.drop(resource);
  }

  sendBookmarks(): void {
    this.watches.sendBookmarks();
  }

  /**
   * Holds every later request that `matches` accepts without a response until `releaseStalled()`, as an API
   * server that hangs does. Requests already responded to are not affected.
   */
  stallRequests(matches: (request: RecordedRequest) => boolean): void {
    this.stallMatcher = matches;
  }

  /** Stops stalling and lets the held requests go on. */
  releaseStalled(): void {
    this.stallMatcher = undefined;
    for (const release of this.stalled.splice(0)) release();
  }

  /** Resolves once background deletion has removed the dependents of every owner deleted so far. */
  collectGarbage(): Promise<void> {
    return this.collector.idle();
  }

  async stop(): Promise<void> {
    this.releaseStalled();
    this.watches.close();
    this.collector.stop();
    this.server.closeAllConnections();
    await new Promise<void>((resolve, reject) => this.server.close((error) => (error ? reject(error) : resolve())));
  }

  private async serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", this.url);
    const record: RecordedRequest = { method: request.method ?? "GET", path: url.pathname, query: url.searchParams, contentType: request.headers["content-type"], code: 0 };
    this.requests.push(record);
    response.on("close", () => {
      record.code = response.statusCode;
    });

    if (this.stallMatcher?.(record) === true) {
      await new Promise<void>((resolve) => this.stalled.push(resolve));
    }
    try {
      if (request.headers.authorization !== `Bearer ${token}`) {
        throw new ApiError(401, "Unauthorized", "Unauthorized");
      }
      const body = await readJson(request);
      const reply = this.route(record, body, response);
      if (reply !== undefined) {
        sendJson(response, reply.code, reply.body);
      }
    } catch (error) {
      if (!(error instanceof ApiError)) {
        throw error;
      }
      if (response.headersSent) {
        response.end();
      } else {
        sendJson(response, error.code, error.toStatus());
      }
    }
  }

  private route(record: RecordedRequest, body: unknown, response: ServerResponse): Reply | undefined {
    const route = parseRoute(record.path);
    if (route.kind !== "resource" && record.method !== "GET") {
      throw new ApiError(405, "MethodNotAllowed", `${record.method} is not supported on ${record.path}`);
    }
    switch (route.kind) {
      case "version":
        return { code: 200, body: fakeServerVersion };
      case "apiVersions":
        return { code: 200, body: apiVersions() };
      case "apiGroups":
        return { code: 200, body: apiGroups() };
      case "apiResources": {
        const resources = apiResources(route.group, route.version);
        if (resources === undefined) throw notServed();
        return { code: 200, body: resources };
      }
      case "resource":
        return this.handlers.handle({ method: record.method, path: route.path, query: record.query, contentType: record.contentType ?? "", body }, response);
    }
  }
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) {
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") {
    return undefined;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw badRequest("the request body is not valid JSON");
  }
}

function sendJson(response: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  response.end(text);
}
