/** A resource the fake API server serves, described the way discovery describes it. */
export interface ResourceType {
  /** API group; the empty string is the core group (`/api/v1`). */
  group: string;
  version: string;
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  shortNames: string[];
  subresources: ReadonlyArray<"status" | "scale">;
  /** Whether `metadata.generation` counts changes outside metadata and status. */
  tracksGeneration: boolean;
  /**
   * Custom resources differ from built-in ones in small visible ways: an update must name the
   * resourceVersion it replaces, and list items keep their `apiVersion` and `kind`.
   */
  custom: boolean;
  /** Whether a delete that removes the object returns it; otherwise the response is a Success Status. */
  returnsDeletedObject: boolean;
}

function resource(fields: Partial<ResourceType> & Pick<ResourceType, "group" | "version" | "plural" | "kind">): ResourceType {
  return {
    singular: fields.kind.toLowerCase(),
    namespaced: true,
    shortNames: [],
    subresources: [],
    tracksGeneration: false,
    custom: false,
    returnsDeletedObject: false,
    ...fields,
  };
}

export const resourceTypes: readonly ResourceType[] = [
  resource({ group: "", version: "v1", plural: "pods", kind: "Pod", shortNames: ["po"], subresources: ["status"], returnsDeletedObject: true }),
  resource({ group: "", version: "v1", plural: "services", kind: "Service", shortNames: ["svc"], subresources: ["status"], returnsDeletedObject: true }),
  resource({ group: "", version: "v1", plural: "events", kind: "Event", shortNames: ["ev"] }),
  resource({ group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", shortNames: ["cm"] }),
  resource({ group: "", version: "v1", plural: "secrets", kind: "Secret" }),
  resource({
    group: "apps",
    version: "v1",
    plural: "deployments",
    kind: "Deployment",
    shortNames: ["deploy"],
    subresources: ["status", "scale"],
    tracksGeneration: true,
  }),
  resource({ group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease" }),
  resource({
    group: "spillway.dev",
    version: "v1alpha1",
    plural: "modelpools",
    kind: "ModelPool",
    shortNames: ["mp"],
    subresources: ["status"],
    tracksGeneration: true,
    custom: true,
    returnsDeletedObject: true,
  }),
];

/** `deployments.apps`, `pods`: the name kubectl and RBAC use for a resource. */
export function resourceId(type: ResourceType): string {
  return type.group === "" ? type.plural : `${type.plural}.${type.group}`;
}

export function apiVersionOf(type: ResourceType): string {
  return type.group === "" ? type.version : `${type.group}/${type.version}`;
}

export function findResourceType(group: string, version: string, plural: string): ResourceType | undefined {
  return resourceTypes.find((type) => type.group === group && type.version === version && type.plural === plural);
}

export function resourceTypeById(id: string): ResourceType {
  const type = resourceTypes.find((candidate) => resourceId(candidate) === id);
  if (type === undefined) {
    throw new Error(`the fake API server does not serve '${id}'; served: ${resourceTypes.map(resourceId).join(", ")}`);
  }
  return type;
}
