import { badRequest } from "./errors.ts";
import type { KubeObject } from "./objects.ts";

type Requirement =
  | { key: string; operator: "in" | "notin"; values: string[] }
  | { key: string; operator: "exists" | "doesnotexist" };

/** A parsed `labelSelector` and `fieldSelector` pair; an empty selector matches every object. */
export interface Selector {
  labels: Requirement[];
  fields: Array<{ path: "metadata.name" | "metadata.namespace"; value: string; negated: boolean }>;
}

/**
 * Parses the label selector syntax: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)` and `a notin (x,y)`,
 * joined by commas.
 */
export function parseLabelSelector(text: string): Requirement[] {
  return splitTerms(text).map((term) => {
    const set = /^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term);
    if (set !== null) {
      const values = set[3]!.split(",").map((value) => value.trim()).filter((value) => value !== "");
      return { key: set[1]!, operator: set[2] as "in" | "notin", values };
    }
    const equality = /^([^\s!=]+)\s*(==|=|!=)\s*([^\s,]*)$/.exec(term);
    if (equality !== null) {
      return { key: equality[1]!, operator: equality[2] === "!=" ? "notin" : "in", values: [equality[3]!] };
    }
    if (/^![^\s!=]+$/.test(term)) {
      return { key: term.slice(1), operator: "doesnotexist" };
    }
    if (/^[^\s!=(),]+$/.test(term)) {
      return { key: term, operator: "exists" };
    }
    throw badRequest(`unable to parse requirement: invalid label selector term '${term}'`);
  });
}

/** Splits on the commas that separate terms, not on those inside `in (...)` value lists. */
function splitTerms(text: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let current = "";
  for (const character of text) {
    if (character === "(") depth += 1;
    if (character === ")") depth -= 1;
    if (character === "," && depth === 0) {
      terms.push(current);
      current = "";
    } else {
      current += character;
    }
  }
  terms.push(current);
  return terms.map((term) => term.trim()).filter((term) => term !== "");
}

/** Parses a field selector; like most resources in Kubernetes, only metadata.name and metadata.namespace are supported. */
export function parseFieldSelector(text: string): Selector["fields"] {
  return splitTerms(text).map((term) => {
    const match = /^([^!=]+)(==|=|!=)(.*)$/.exec(term);
    if (match === null) {
      throw badRequest(`invalid field selector term '${term}'`);
    }
    const path = match[1]!.trim();
    if (path !== "metadata.name" && path !== "metadata.namespace") {
      throw badRequest(`field label not supported: ${path}`);
    }
    return { path, value: match[3]!.trim(), negated: match[2] === "!=" };
  });
}

export function parseSelector(query: URLSearchParams): Selector {
  return {
    labels: parseLabelSelector(query.get("labelSelector") ?? ""),
    fields: parseFieldSelector(query.get("fieldSelector") ?? ""),
  };
}

export function matchesSelector(object: KubeObject, selector: Selector): boolean {
  const labels = object.metadata.labels ?? {};
  const labelsMatch = selector.labels.every((requirement) => {
    const value = labels[requirement.key];
    switch (requirement.operator) {
      case "exists":
        return value !== undefined;
      case "doesnotexist":
        return value === undefined;
      case "in":
        return value !== undefined && requirement.values.includes(value);
      case "notin":
        return value === undefined || !requirement.values.includes(value);
    }
  });
  const fieldsMatch = selector.fields.every((field) => {
    const value = field.path === "metadata.name" ? object.metadata.name : (object.metadata.namespace ?? "");
    return (value === field.value) !== field.negated;
  });
  return labelsMatch && fieldsMatch;
}

/** Formats `matchLabels` the way a Scale's `status.selector` carries it. */
export function formatMatchLabels(matchLabels: Record<string, string>): string {
  return Object.entries(matchLabels)
    .map(([key, value]) => `${key}=${value}`)
    .join(",");
}
