import { isRecord, type KubeObject } from "./objects.ts";
import type { ResourceType } from "./resources.ts";

/**
 * Applies the defaults and conversions of the real API server that this fake models: a Deployment's
 * `spec.replicas` defaults to 1, and a Secret's `stringData` is merged into `data` as base64.
 */
export function applyDefaults(type: ResourceType, object: KubeObject): void {
  if (type.group === "apps" && type.plural === "deployments" && isRecord(object.spec) && object.spec.replicas === undefined) {
    object.spec.replicas = 1;
  }
  if (type.group === "" && type.plural === "secrets" && isRecord(object.stringData)) {
    const data = isRecord(object.data) ? object.data : {};
    for (const [key, value] of Object.entries(object.stringData)) {
      data[key] = Buffer.from(String(value)).toString("base64");
    }
    object.data = data;
    delete object.stringData;
  }
}
