import type { ServerResponse } from "node:http";

import { ApiError, badRequest, type Status } from "./errors.ts";
import type { KubeObject } from "./objects.ts";
import { apiVersionOf, resourceId, type ResourceType } from "./resources.ts";
import { matchesSelector, type Selector } from "./selectors.ts";
import type { ObjectStore, StoreEvent } from "./store.ts";

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "ERROR" | "BOOKMARK";

export interface WatchRequest {
  type: ResourceType;
  /** Undefined watches every namespace. */
  namespace: string | undefined;
  selector: Selector;
  resourceVersion: string | undefined;
  allowBookmarks: boolean;
  timeoutSeconds: number | undefined;
}

interface OpenWatch {
  request: WatchRequest;
  response: ServerResponse;
}

/**
 * Open watch streams: one JSON event per line on a chunked response, as the API server sends them. A watch
 * with a selector receives an object that starts matching as ADDED and one that stops matching as DELETED.
 */
export class WatchHub {
  private readonly watches = new Set<OpenWatch>();
  private readonly unsubscribe: () => void;

  constructor(private readonly store: ObjectStore) {
    this.unsubscribe = store.subscribe((event) => {
      for (const watch of this.watches) {
        this.send(watch, event);
      }
    });
  }

  get openCount(): number {
    return this.watches.size;
  }

  /**
   * Starts a watch. Without a resourceVersion, or with "0", the stream opens with an ADDED event for every
   * existing object. With one, it replays the recorded changes after it. When those are no longer kept, it
   * sends a 410 ERROR event and ends.
   */
  open(request: WatchRequest, response: ServerResponse): void {
    const startVersion = request.resourceVersion === undefined || request.resourceVersion === "" ? 0 : Number(request.resourceVersion);
    if (!Number.isInteger(startVersion) || startVersion < 0) {
      throw badRequest(`invalid resourceVersion '${request.resourceVersion}' for a watch`);
    }
    response.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked", "Cache-Control": "no-cache" });
    // The client's Watch.watch() resolves only once the headers arrive, before any event exists.
    response.flushHeaders();

    const watch: OpenWatch = { request, response };
    try {
      this.replay(watch, startVersion);
    } catch (error) {
      if (error instanceof ApiError) {
        this.endWithError(watch, error.toStatus());
        return;
      }
      throw error;
    }
    this.watches.add(watch);
    const timer = request.timeoutSeconds === undefined ? undefined : setTimeout(() => response.end(), request.timeoutSeconds * 1000);
    response.on("close", () => {
      clearTimeout(timer);
      this.watches.delete(watch);
    });
  }

  /** Sends an ERROR event carrying `status` on every open watch of `resource` (all when undefined), then ends them. */
  injectError(status: Status, resource?: string): void {
    for (const watch of this.matching(resource)) {
      this.endWithError(watch, status);
    }
  }

  /** Sends a BOOKMARK with the latest resourceVersion on every watch that asked for bookmarks. */
  sendBookmarks(): void {
    for (const watch of this.watches) {
      if (watch.request.allowBookmarks) {
        const type = watch.request.type;
        const object = { apiVersion: apiVersionOf(type), kind: type.kind, metadata: { resourceVersion: this.store.resourceVersion } };
        write(watch.response, "BOOKMARK", object);
      }
    }
  }

  /** Cuts the connection under every open watch of `resource` (all when undefined) without a final event. */
  drop(resource?: string): void {
    for (const watch of this.matching(resource)) {
      this.watches.delete(watch);
      watch.response.destroy();
    }
  }

  /** Ends every watch cleanly, as an API server does when it shuts down. */
  close(): void {
    this.unsubscribe();
    for (const watch of this.watches) {
      watch.response.end();
    }
    this.watches.clear();
  }

  private matching(resource: string | undefined): OpenWatch[] {
    return [...this.watches].filter((watch) => resource === undefined || resourceId(watch.request.type) === resource);
  }

  private replay(watch: OpenWatch, startVersion: number): void {
    if (startVersion === 0) {
      for (const object of this.store.list(watch.request.type, watch.request.namespace)) {
        if (matchesSelector(object, watch.request.selector)) {
          write(watch.response, "ADDED", object);
        }
      }
      return;
    }
    for (const event of this.store.eventsAfter(startVersion)) {
      this.send(watch, event);
    }
  }

  private send(watch: OpenWatch, event: StoreEvent): void {
    const { type, namespace, selector } = watch.request;
    if (event.resource !== type || (namespace !== undefined && event.object.metadata.namespace !== namespace)) {
      return;
    }
    const matchesNow = matchesSelector(event.object, selector);
    const matchedBefore = event.previous !== undefined && matchesSelector(event.previous, selector);
    if (event.type !== "MODIFIED") {
      if (matchesNow) write(watch.response, event.type, event.object);
    } else if (matchesNow) {
      write(watch.response, matchedBefore ? "MODIFIED" : "ADDED", event.object);
    } else if (matchedBefore) {
      write(watch.response, "DELETED", event.object);
    }
  }

  private endWithError(watch: OpenWatch, status: Status): void {
    this.watches.delete(watch);
    write(watch.response, "ERROR", status);
    watch.response.end();
  }
}

function write(response: ServerResponse, type: WatchEventType, object: KubeObject | Status | Record<string, unknown>): void {
  response.write(`${JSON.stringify({ type, object })}\n`);
}
