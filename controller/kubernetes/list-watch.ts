import { Watch, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";

import { statusCodeOf } from "./api-errors.ts";

export type ChangeType = "ADDED" | "MODIFIED" | "DELETED";

export interface ListedObject {
  metadata?: { name?: string; resourceVersion?: string; labels?: Record<string, string> };
}

export interface ListResult<Resource> {
  items: Resource[];
  resourceVersion: string;
}

export interface ListWatchOptions<Resource> {
  kubeConfig: KubeConfig;
  /** The collection's URL path, such as `/apis/apps/v1/namespaces/default/deployments`. */
  path: string;
  labelSelector?: string;
  list: () => Promise<ListResult<Resource>>;
  onChange: (type: ChangeType, object: Resource) => void;
  logger: Logger;
  /** Pause before opening a watch again after an error, so a failing API server is not flooded. */
  retryDelayMs?: number;
  /** Server-side end of each watch; a new one starts from the last resourceVersion. */
  watchTimeoutSeconds?: number;
}

/**
 * Keeps up with one collection: lists it, then watches from the list's resourceVersion. A watch that ends
 * or fails opens again from the last resourceVersion seen; a 410 Gone lists again, and a relist reports
 * objects deleted while no watch was open.
 */
export class ListWatch<Resource extends ListedObject> {
  private readonly known = new Set<string>();
  private resourceVersion: string | undefined;
  private abort: AbortController | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(private readonly options: ListWatchOptions<Resource>) {}

  /** Resolves after the first list, with its objects reported; watching goes on in the background. */
  async start(): Promise<void> {
    await this.relist();
    this.loop = this.watchUntilStopped();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    await this.loop;
  }

  private async watchUntilStopped(): Promise<void> {
    while (!this.stopped) {
      try {
        if (this.resourceVersion === undefined) await this.relist();
        await this.watchOnce();
      } catch (error) {
        if (this.stopped) return;
        if (watchStatusCode(error) === 410) this.resourceVersion = undefined;
        this.options.logger.warn({ err: error, path: this.options.path }, "watch failed; retrying");
        await delay(this.options.retryDelayMs ?? 1000);
      }
    }
  }

  private async relist(): Promise<void> {
    const { items, resourceVersion } = await this.options.list();
    const names = new Set<string>();
    for (const item of items) {
      const name = item.metadata?.name ?? "";
      names.add(name);
      this.options.onChange(this.known.has(name) ? "MODIFIED" : "ADDED", item);
    }
    for (const name of this.known) {
      if (!names.has(name)) this.options.onChange("DELETED", { metadata: { name } } as Resource);
    }
    this.known.clear();
    for (const name of names) this.known.add(name);
    this.resourceVersion = resourceVersion;
  }

  private async watchOnce(): Promise<void> {
    let finish: (error: unknown) => void = () => undefined;
    const finished = new Promise<unknown>((resolve) => (finish = resolve));
    const query: Record<string, string | number | boolean> = {
      resourceVersion: this.resourceVersion ?? "",
      allowWatchBookmarks: true,
      timeoutSeconds: this.options.watchTimeoutSeconds ?? 300,
    };
    if (this.options.labelSelector !== undefined) query.labelSelector = this.options.labelSelector;
    this.abort = await new Watch(this.options.kubeConfig).watch(this.options.path, query, (type, object) => this.receive(type, object), finish);
    // stop() may have run while the watch was opening, when there was nothing yet to abort.
    if (this.stopped) this.abort.abort();
    const error = await finished;
    if (watchStatusCode(error) === 410) this.resourceVersion = undefined;
    if (error !== null && error !== undefined && !this.stopped) {
      this.options.logger.debug({ err: error, path: this.options.path }, "watch ended with an error");
      await delay(this.options.retryDelayMs ?? 1000);
    }
  }

  private receive(type: string, object: unknown): void {
    if (type === "ERROR") {
      const status = object as { code?: number; message?: string };
      // 410 Gone: the history after our resourceVersion is gone, so only a new list can catch up.
      if (status.code === 410) this.resourceVersion = undefined;
      this.options.logger.info({ code: status.code, problem: status.message, path: this.options.path }, "watch error event");
      this.abort?.abort();
      return;
    }
    const resource = object as Resource;
    const version = resource.metadata?.resourceVersion;
    if (version !== undefined) this.resourceVersion = version;
    if (type === "BOOKMARK") return;
    const name = resource.metadata?.name ?? "";
    if (type === "DELETED") this.known.delete(name);
    else this.known.add(name);
    this.options.onChange(type as ChangeType, resource);
  }
}

/** The HTTP status of a watch request the API server refused, which the client reports as `statusCode`. */
function watchStatusCode(error: unknown): number | undefined {
  const code = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === "number" ? code : statusCodeOf(error);
}

/** Retries the first list of a watch until it succeeds or the session ends. */
export async function startWithRetry(start: () => Promise<void>, ended: () => boolean, logger: Logger): Promise<void> {
  for (let delayMs = 200; !ended(); delayMs = Math.min(delayMs * 2, 30_000)) {
    try {
      await start();
      return;
    } catch (error) {
      logger.warn({ err: error }, "listing failed; retrying");
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}
