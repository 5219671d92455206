import type { CoreV1Api } from "@kubernetes/client-node";
import type { Logger } from "pino";

import { modelPoolApiVersion } from "./modelpool-schema.ts";

export interface EventSubject {
  name: string;
  namespace: string;
  uid: string;
}

export const controllerComponent = "spillway-controller";

/** Records core/v1 Events on ModelPools, which `kubectl describe modelpool` shows. */
export class EventRecorder {
  constructor(
    private readonly core: CoreV1Api,
    private readonly identity: string,
    private readonly logger: Logger,
  ) {}

  normal(pool: EventSubject, reason: string, message: string): Promise<void> {
    return this.record(pool, "Normal", reason, message);
  }

  warning(pool: EventSubject, reason: string, message: string): Promise<void> {
    return this.record(pool, "Warning", reason, message);
  }

  /** Failing to record an Event must not fail a reconcile, so errors are logged only. */
  private async record(pool: EventSubject, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const now = new Date();
    try {
      await this.core.createNamespacedEvent({
        namespace: pool.namespace,
        body: {
          metadata: { generateName: `${pool.name}.`, namespace: pool.namespace },
          involvedObject: { apiVersion: modelPoolApiVersion, kind: "ModelPool", name: pool.name, namespace: pool.namespace, uid: pool.uid },
          type,
          reason,
          message,
          count: 1,
          firstTimestamp: now,
          lastTimestamp: now,
          source: { component: controllerComponent },
          reportingComponent: controllerComponent,
          reportingInstance: this.identity,
        },
      });
    } catch (error) {
      this.logger.warn({ err: error, pool: pool.name, reason }, "recording an event failed");
    }
  }
}
