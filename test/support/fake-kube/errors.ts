import type { ResourceType } from "./resources.ts";
import { resourceId } from "./resources.ts";

/** A `meta/v1` Status, the body of every failed request and of watch ERROR events. */
export interface Status {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, never>;
  status: "Failure" | "Success";
  message: string;
  reason: string;
  details?: { name?: string; group?: string; kind?: string; uid?: string };
  code: number;
}

/** A failed request, carrying the HTTP code and the `reason` Kubernetes sends with it. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Status["details"],
  ) {
    super(message);
  }

  toStatus(): Status {
    const status: Status = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: this.message, reason: this.reason, code: this.code };
    if (this.details !== undefined) {
      status.details = this.details;
    }
    return status;
  }
}

function detailsOf(type: ResourceType, name: string): Status["details"] {
  return { name, group: type.group, kind: type.plural };
}

export function notFound(type: ResourceType, name: string): ApiError {
  return new ApiError(404, "NotFound", `${resourceId(type)} "${name}" not found`, detailsOf(type, name));
}

export function alreadyExists(type: ResourceType, name: string): ApiError {
  return new ApiError(409, "AlreadyExists", `${resourceId(type)} "${name}" already exists`, detailsOf(type, name));
}

export function conflict(type: ResourceType, name: string, cause = "the object has been modified"): ApiError {
  const message = `Operation cannot be fulfilled on ${resourceId(type)} "${name}": ${cause}; please apply your changes to the latest version and try again`;
  return new ApiError(409, "Conflict", message, detailsOf(type, name));
}

export function invalid(type: ResourceType, name: string, message: string): ApiError {
  return new ApiError(422, "Invalid", `${type.kind}.${type.group || "core"} "${name}" is invalid: ${message}`, detailsOf(type, name));
}

export function badRequest(message: string): ApiError {
  return new ApiError(400, "BadRequest", message);
}

export function resourceVersionTooOld(requested: number, oldest: number): ApiError {
  return new ApiError(410, "Expired", `too old resource version: ${requested} (${oldest})`);
}
