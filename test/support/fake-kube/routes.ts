import { ApiError } from "./errors.ts";
import { findResourceType, type ResourceType } from "./resources.ts";

/** A request path under `/api/v1` or `/apis/<group>/<version>` that names a served resource. */
export interface ResourcePath {
  type: ResourceType;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
}

export type Route =
  | { kind: "version" }
  | { kind: "apiVersions" }
  | { kind: "apiGroups" }
  | { kind: "apiResources"; group: string; version: string }
  | { kind: "resource"; path: ResourcePath };

export function notServed(): ApiError {
  return new ApiError(404, "NotFound", "the server could not find the requested resource");
}

/**
 * Maps a URL path to what it addresses: discovery documents, or a collection, an object or a subresource.
 * Namespaces themselves are not a served resource, so `/api/v1/namespaces/<name>` is a 404.
 */
export function parseRoute(pathname: string): Route {
  const segments = pathname.split("/").filter((segment) => segment !== "").map(decodeURIComponent);
  if (segments.length === 1 && segments[0] === "version") return { kind: "version" };
  if (segments.length === 1 && segments[0] === "api") return { kind: "apiVersions" };
  if (segments.length === 1 && segments[0] === "apis") return { kind: "apiGroups" };

  let group: string;
  let rest: string[];
  if (segments[0] === "api" && segments[1] === "v1") {
    group = "";
    rest = segments.slice(1);
  } else if (segments[0] === "apis" && segments.length >= 3) {
    group = segments[1]!;
    rest = segments.slice(2);
  } else {
    throw notServed();
  }
  const version = rest[0]!;
  if (rest.length === 1) {
    return { kind: "apiResources", group, version };
  }

  let namespace: string | undefined;
  let names = rest.slice(1);
  if (names[0] === "namespaces" && names.length >= 3) {
    namespace = names[1];
    names = names.slice(2);
  }
  const type = findResourceType(group, version, names[0]!);
  if (type === undefined || names.length > 3 || (namespace !== undefined && !type.namespaced)) {
    throw notServed();
  }
  const subresource = names[2];
  if (subresource !== undefined && !type.subresources.includes(subresource as "status" | "scale")) {
    throw notServed();
  }
  return { kind: "resource", path: { type, namespace, name: names[1], subresource } };
}
