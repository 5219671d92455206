import { ApiError, badRequest } from "./errors.ts";
import { cloneObject, isRecord, jsonEqual } from "./objects.ts";

export const patchTypes = {
  json: "application/json-patch+json",
  merge: "application/merge-patch+json",
  strategicMerge: "application/strategic-merge-patch+json",
  apply: "application/apply-patch+yaml",
} as const;

/**
 * Applies a PATCH body of the given content type. A strategic merge patch is applied as a JSON merge patch:
 * the two agree except on lists with a patch merge key (containers, ports, conditions...), which a
 * strategic merge patch merges by key and this fake replaces whole.
 */
export function applyPatch(target: unknown, contentType: string, patch: unknown): unknown {
  const mediaType = contentType.split(";")[0]!.trim();
  switch (mediaType) {
    case patchTypes.json:
      return applyJsonPatch(target, patch);
    case patchTypes.merge:
    case patchTypes.strategicMerge:
      return applyMergePatch(target, patch);
    default:
      throw new ApiError(415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: ${patchTypes.json}, ${patchTypes.merge}, ${patchTypes.strategicMerge}`);
  }
}

/** RFC 7386: objects merge key by key, `null` removes a key, anything else replaces. */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) {
    return cloneObject(patch);
  }
  const result: Record<string, unknown> = isRecord(target) ? cloneObject(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete result[key];
    } else {
      result[key] = applyMergePatch(result[key], value);
    }
  }
  return result;
}

interface Operation {
  op: "add" | "remove" | "replace" | "move" | "copy" | "test";
  path: string;
  from?: string;
  value?: unknown;
}

/** RFC 6902. A failed `test` operation is a 422, as in Kubernetes. */
export function applyJsonPatch(target: unknown, operations: unknown): unknown {
  if (!Array.isArray(operations)) {
    throw badRequest("a JSON patch must be an array of operations");
  }
  let document = cloneObject(target);
  for (const operation of operations as Operation[]) {
    document = applyOperation(document, operation);
  }
  return document;
}

function applyOperation(document: unknown, operation: Operation): unknown {
  switch (operation.op) {
    case "add":
      return addValue(document, parsePointer(operation.path), cloneObject(operation.value));
    case "remove":
      return removeValue(document, parsePointer(operation.path));
    case "replace":
      return addValue(removeValue(document, parsePointer(operation.path)), parsePointer(operation.path), cloneObject(operation.value));
    case "move": {
      const from = parsePointer(requireFrom(operation));
      const value = readValue(document, from);
      return addValue(removeValue(document, from), parsePointer(operation.path), value);
    }
    case "copy":
      return addValue(document, parsePointer(operation.path), cloneObject(readValue(document, parsePointer(requireFrom(operation)))));
    case "test":
      if (!jsonEqual(readValue(document, parsePointer(operation.path)), operation.value)) {
        throw new ApiError(422, "Invalid", `the server rejected our request due to an error in our request: testing value ${operation.path} failed`);
      }
      return document;
    default:
      throw badRequest(`unknown JSON patch operation '${String((operation as { op: unknown }).op)}'`);
  }
}

function requireFrom(operation: Operation): string {
  if (operation.from === undefined) {
    throw badRequest(`JSON patch operation '${operation.op}' needs 'from'`);
  }
  return operation.from;
}

function parsePointer(pointer: string): string[] {
  if (pointer === "") {
    return [];
  }
  if (!pointer.startsWith("/")) {
    throw badRequest(`invalid JSON pointer '${pointer}'`);
  }
  return pointer
    .slice(1)
    .split("/")
    .map((token) => token.replaceAll("~1", "/").replaceAll("~0", "~"));
}

function readValue(document: unknown, tokens: string[]): unknown {
  let current = document;
  for (const token of tokens) {
    const next = childOf(current, token);
    if (next === undefined) {
      throw new ApiError(422, "Invalid", `the server rejected our request: path /${tokens.join("/")} does not exist`);
    }
    current = next;
  }
  return current;
}

function childOf(container: unknown, token: string): unknown {
  if (Array.isArray(container)) {
    return container[Number(token)];
  }
  return isRecord(container) ? container[token] : undefined;
}

function addValue(document: unknown, tokens: string[], value: unknown): unknown {
  if (tokens.length === 0) {
    return value;
  }
  const parent = readValue(document, tokens.slice(0, -1));
  const key = tokens[tokens.length - 1]!;
  if (Array.isArray(parent)) {
    const index = key === "-" ? parent.length : Number(key);
    if (!Number.isInteger(index) || index < 0 || index > parent.length) {
      throw new ApiError(422, "Invalid", `the server rejected our request: array index ${key} is out of range`);
    }
    parent.splice(index, 0, value);
  } else if (isRecord(parent)) {
    parent[key] = value;
  } else {
    throw new ApiError(422, "Invalid", `the server rejected our request: cannot add to a value that is not an object or array`);
  }
  return document;
}

function removeValue(document: unknown, tokens: string[]): unknown {
  readValue(document, tokens);
  if (tokens.length === 0) {
    return undefined;
  }
  const parent = readValue(document, tokens.slice(0, -1));
  const key = tokens[tokens.length - 1]!;
  if (Array.isArray(parent)) {
    parent.splice(Number(key), 1);
  } else if (isRecord(parent)) {
    delete parent[key];
  }
  return document;
}
