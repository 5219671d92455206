import { invalidRequest } from "../api/errors.ts";

/**
 * Checks that a JSON schema uses only keywords node-llama-cpp's grammar (3.21) can enforce while decoding,
 * and returns the schema that the grammar is built from. A keyword outside that set would let the model
 * produce output the schema forbids, so it is a 400 naming the keyword, never unconstrained text.
 *
 * `anyOf` becomes the grammar's `oneOf`: a grammar alternative only needs one branch to match, so both
 * keywords decode the same way, and the original schema still validates the result.
 */
export function toGrammarSchema(schema: unknown, param: string): Record<string, unknown> {
  if (!isObject(schema)) throw invalidRequest(`'${param}' must be a JSON schema object.`, param);
  const definitions = isObject(schema.$defs) ? Object.keys(schema.$defs) : [];
  return convert(schema, param, new Set(definitions)) as Record<string, unknown>;
}

const annotationKeywords = new Set([
  "$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
]);
const structuralKeywords = new Set([
  "type", "const", "enum", "oneOf", "anyOf", "$defs", "$ref", "properties", "additionalProperties", "required",
  "minProperties", "maxProperties", "items", "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "format",
]);
const grammarFormats = new Set(["date-time", "time", "date"]);
const schemaTypes = new Set(["string", "number", "integer", "boolean", "null", "object", "array"]);

function convert(schema: unknown, param: string, definitions: ReadonlySet<string>): unknown {
  if (schema === true || (isObject(schema) && Object.keys(schema).length === 0)) {
    return {
      oneOf: [{ type: ["string", "number", "boolean", "null"] }, { type: "object" }, { type: "array" }],
    };
  }
  if (!isObject(schema)) throw invalidRequest(`'${param}' must be a JSON schema object.`, param);

  const converted: Record<string, unknown> = {};
  for (const [keyword, value] of Object.entries(schema)) {
    const keywordParam = `${param}.${keyword}`;
    if (annotationKeywords.has(keyword)) {
      if (keyword === "description") converted[keyword] = value;
      continue;
    }
    if (!structuralKeywords.has(keyword)) throw unsupportedKeyword(keyword, keywordParam);
    converted[keyword === "anyOf" ? "oneOf" : keyword] = convertKeyword(keyword, value, keywordParam, definitions);
  }
  if (isObject(converted.properties) && converted.type === undefined) converted.type = "object";
  return converted;
}

function convertKeyword(keyword: string, value: unknown, param: string, definitions: ReadonlySet<string>): unknown {
  switch (keyword) {
    case "type":
      return checkType(value, param);
    case "format":
      if (typeof value !== "string" || !grammarFormats.has(value)) {
        throw invalidRequest(
          `'${param}' is ${JSON.stringify(value)}, which decoding cannot enforce. Supported formats: date-time, time, date.`,
          param,
        );
      }
      return value;
    case "$ref":
      return checkReference(value, param, definitions);
    case "oneOf":
    case "anyOf":
    case "prefixItems":
      return mapArray(value, param, definitions);
    case "properties":
    case "$defs":
      return mapObject(value, param, definitions);
    case "items":
      return convert(value, param, definitions);
    case "additionalProperties":
      if (value === false) return undefined;
      return convert(value, param, definitions);
    default:
      return value;
  }
}

function checkType(value: unknown, param: string): unknown {
  const types = Array.isArray(value) ? value : [value];
  for (const type of types) {
    if (typeof type !== "string" || !schemaTypes.has(type)) {
      throw invalidRequest(`'${param}' contains ${JSON.stringify(type)}, which is not a JSON schema type.`, param);
    }
  }
  const structured = types.filter((type) => type === "object" || type === "array");
  if (Array.isArray(value) && structured.length > 0) {
    throw invalidRequest(
      `'${param}' lists "object" or "array" among several types, which decoding cannot enforce. Use anyOf with one schema per type.`,
      param,
    );
  }
  return value;
}

function checkReference(value: unknown, param: string, definitions: ReadonlySet<string>): string {
  const prefix = "#/$defs/";
  if (typeof value !== "string" || !value.startsWith(prefix) || !definitions.has(value.slice(prefix.length))) {
    throw invalidRequest(
      `'${param}' is ${JSON.stringify(value)}. Only references to the root schema's $defs ("#/$defs/<name>") are supported.`,
      param,
    );
  }
  return value;
}

function mapArray(value: unknown, param: string, definitions: ReadonlySet<string>): unknown[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw invalidRequest(`'${param}' must be a non-empty array of schemas.`, param);
  }
  return value.map((item, index) => convert(item, `${param}[${index}]`, definitions));
}

function mapObject(value: unknown, param: string, definitions: ReadonlySet<string>): Record<string, unknown> {
  if (!isObject(value)) throw invalidRequest(`'${param}' must be an object of schemas.`, param);
  const result: Record<string, unknown> = {};
  for (const [name, child] of Object.entries(value)) result[name] = convert(child, `${param}.${name}`, definitions);
  return result;
}

function unsupportedKeyword(keyword: string, param: string) {
  return invalidRequest(
    `'${param}': the keyword '${keyword}' cannot be enforced while decoding, so the output could break it. ` +
      "Remove it from the schema and check that rule in your code. Supported: type, const, enum, anyOf, oneOf, " +
      "$defs, $ref, properties, additionalProperties, required, min/maxProperties, items, prefixItems, " +
      "min/maxItems, min/maxLength, format (date-time, time, date).",
    param,
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
