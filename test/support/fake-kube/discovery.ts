import { apiVersionOf, resourceTypes, type ResourceType } from "./resources.ts";

/** The Kubernetes version the fake reports; it models the API of that release as far as it goes. */
export const fakeServerVersion = {
  major: "1",
  minor: "33",
  gitVersion: "v1.33.0-spillway-fake",
  gitCommit: "0000000000000000000000000000000000000000",
  gitTreeState: "clean",
  buildDate: "2025-01-01T00:00:00Z",
  goVersion: "go1.24.0",
  compiler: "gc",
  platform: "linux/amd64",
};

export function apiVersions(): unknown {
  return { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1" }] };
}

export function apiGroups(): unknown {
  const groups = [...new Set(resourceTypes.filter((type) => type.group !== "").map((type) => apiVersionOf(type)))].map((groupVersion) => {
    const [name, version] = groupVersion.split("/") as [string, string];
    const preferred = { groupVersion, version };
    return { name, versions: [preferred], preferredVersion: preferred };
  });
  return { kind: "APIGroupList", apiVersion: "v1", groups };
}

/** The APIResourceList of one group version, or undefined when the fake serves nothing there. */
export function apiResources(group: string, version: string): unknown {
  const types = resourceTypes.filter((type) => type.group === group && type.version === version);
  if (types.length === 0) {
    return undefined;
  }
  const groupVersion = group === "" ? version : `${group}/${version}`;
  return { kind: "APIResourceList", apiVersion: "v1", groupVersion, resources: types.flatMap(describe) };
}

function describe(type: ResourceType): unknown[] {
  const verbs = ["create", "delete", "get", "list", "patch", "update", "watch"];
  const main = { name: type.plural, singularName: type.singular, namespaced: type.namespaced, kind: type.kind, verbs, shortNames: type.shortNames };
  const subresources = type.subresources.map((subresource) => ({
    name: `${type.plural}/${subresource}`,
    singularName: "",
    namespaced: type.namespaced,
    kind: subresource === "scale" ? "Scale" : type.kind,
    ...(subresource === "scale" ? { group: "autoscaling", version: "v1" } : {}),
    verbs: ["get", "patch", "update"],
  }));
  return [main, ...subresources];
}
