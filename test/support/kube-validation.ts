/**
 * Offline checks of rendered Kubernetes objects. kubernetes-models (and its prometheus-operator
 * package) validate each object against the API's OpenAPI schema, but they accept fields the schema
 * does not know, which the API server rejects or drops. `unknownFields` closes that gap by walking the
 * object against the model's TypeScript interface, the same schema in declared form, through the
 * TypeScript compiler's type checker. ModelPools are validated with ajv against the CRD's schema.
 */
import { readFileSync } from "node:fs";
import path from "node:path";

import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Ajv, type ValidateFunction } from "ajv";
import { CustomResourceDefinition } from "kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { Role } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role";
import { RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { Pod } from "kubernetes-models/v1/Pod";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import ts from "typescript";
import { parse, parseAllDocuments } from "yaml";

export type KubeObject = Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string } & Record<string, unknown> };

interface ModelEntry {
  /** Runs the model's validator, which throws with the schema's errors when the object is invalid. */
  validate: (object: KubeObject) => void;
  /** Module and interface name of the model's declared type, for `unknownFields`. */
  module: string;
  typeName: string;
}

function model(constructor: new (data: never) => { validate(): void }, module: string, typeName: string): ModelEntry {
  return { validate: (object) => new constructor(object as never).validate(), module, typeName };
}

/** Every apiVersion/kind the chart renders, except ModelPool, which `modelPoolValidator` covers. */
const models: Record<string, ModelEntry> = {
  "v1/ConfigMap": model(ConfigMap, "kubernetes-models/v1/ConfigMap", "IConfigMap"),
  "v1/Namespace": model(Namespace, "kubernetes-models/v1/Namespace", "INamespace"),
  "v1/Pod": model(Pod, "kubernetes-models/v1/Pod", "IPod"),
  "v1/Service": model(Service, "kubernetes-models/v1/Service", "IService"),
  "v1/ServiceAccount": model(ServiceAccount, "kubernetes-models/v1/ServiceAccount", "IServiceAccount"),
  "apps/v1/Deployment": model(Deployment, "kubernetes-models/apps/v1/Deployment", "IDeployment"),
  "rbac.authorization.k8s.io/v1/Role": model(Role, "kubernetes-models/rbac.authorization.k8s.io/v1/Role", "IRole"),
  "rbac.authorization.k8s.io/v1/RoleBinding": model(RoleBinding, "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding", "IRoleBinding"),
  "networking.k8s.io/v1/NetworkPolicy": model(NetworkPolicy, "kubernetes-models/networking.k8s.io/v1/NetworkPolicy", "INetworkPolicy"),
  "apiextensions.k8s.io/v1/CustomResourceDefinition": model(
    CustomResourceDefinition,
    "kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition",
    "ICustomResourceDefinition",
  ),
  "monitoring.coreos.com/v1/ServiceMonitor": model(
    ServiceMonitor,
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
    "IServiceMonitor",
  ),
};

export function modelKey(object: KubeObject): string {
  return `${object.apiVersion}/${object.kind}`;
}

export function hasModel(object: KubeObject): boolean {
  return modelKey(object) in models;
}

/** Validates an object with its kubernetes-models model. Throws when it is invalid or has no model. */
export function validateWithModel(object: KubeObject): void {
  const entry = models[modelKey(object)];
  if (entry === undefined) throw new Error(`no model for ${modelKey(object)}; add one to test/support/kube-validation.ts`);
  entry.validate(object);
}

/** Parses a multi-document YAML stream into objects, skipping empty documents. */
export function parseObjects(text: string): KubeObject[] {
  const objects: KubeObject[] = [];
  for (const document of parseAllDocuments(text, { uniqueKeys: true })) {
    if (document.errors.length > 0) throw new Error(`invalid YAML: ${document.errors.map((error) => error.message).join("; ")}`);
    const object = document.toJS() as KubeObject | null;
    if (object !== null) objects.push(object);
  }
  return objects;
}

let typeChecker: { checker: ts.TypeChecker; types: Map<string, ts.Type> } | undefined;

/** Builds, once, a TypeScript program whose only source file imports each model's interface. */
function modelTypes(): { checker: ts.TypeChecker; types: Map<string, ts.Type> } {
  if (typeChecker !== undefined) return typeChecker;
  const fileName = path.join(import.meta.dirname, "__kube_model_types__.ts");
  const entries = Object.entries(models);
  const source = [
    ...entries.map(([, entry], index) => `import type { ${entry.typeName} as T${index} } from "${entry.module}";`),
    `export interface Models { ${entries.map(([key], index) => `"${key}": T${index};`).join(" ")} }`,
  ].join("\n");

  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2023,
    strict: true,
    skipLibCheck: true,
    noEmit: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const readSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (name, languageVersion, ...rest) =>
    name === fileName ? ts.createSourceFile(name, source, languageVersion) : readSourceFile(name, languageVersion, ...rest);
  host.fileExists = (name) => name === fileName || fileExists(name);
  const program = ts.createProgram([fileName], options, host);

  const sourceFile = program.getSourceFile(fileName)!;
  const problems = ts.getPreEmitDiagnostics(program, sourceFile);
  if (problems.length > 0) {
    throw new Error(`cannot load the model types: ${problems.map((problem) => ts.flattenDiagnosticMessageText(problem.messageText, " ")).join("; ")}`);
  }
  const checker = program.getTypeChecker();
  const moduleSymbol = checker.getSymbolAtLocation(sourceFile)!;
  const modelsSymbol = checker.getExportsOfModule(moduleSymbol).find((symbol) => symbol.name === "Models")!;
  const modelsType = checker.getDeclaredTypeOfSymbol(modelsSymbol);
  const types = new Map(entries.map(([key]) => [key, checker.getTypeOfSymbol(checker.getPropertyOfType(modelsType, key)!)]));
  typeChecker = { checker, types };
  return typeChecker;
}

/**
 * Lists the fields of `object` that its model's interface does not declare, as paths such as
 * `spec.template.spec.containers[0].bogus`. Map-typed fields (labels, data) accept any key, and fields the
 * schema leaves free-form accept any value.
 */
export function unknownFields(object: KubeObject): string[] {
  const { checker, types } = modelTypes();
  const rootType = types.get(modelKey(object));
  if (rootType === undefined) throw new Error(`no model for ${modelKey(object)}`);
  const found: string[] = [];

  const walk = (value: unknown, declared: ts.Type, fieldPath: string): void => {
    const type = checker.getNonNullableType(declared);
    if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
    // The OpenAPI schema declares free-form JSON (a CRD's `default`, say) as an object without
    // properties, which the models turn into an empty interface.
    if (isEmptyInterface(type)) return;
    if (Array.isArray(value)) {
      const element = checker.isArrayType(type) ? checker.getTypeArguments(type as ts.TypeReference)[0] : undefined;
      if (element === undefined) found.push(`${fieldPath}: a list, where the model declares ${checker.typeToString(type)}`);
      else value.forEach((item, index) => walk(item, element, `${fieldPath}[${index}]`));
      return;
    }
    if (value === null || typeof value !== "object") return;

    const objectType = (type.isUnion() ? type.types : [type]).find((member) => member.flags & ts.TypeFlags.Object);
    if (objectType === undefined) {
      found.push(`${fieldPath}: a mapping, where the model declares ${checker.typeToString(type)}`);
      return;
    }
    const indexInfo = checker.getIndexInfoOfType(objectType, ts.IndexKind.String);
    for (const [key, child] of Object.entries(value)) {
      const childPath = fieldPath === "" ? key : `${fieldPath}.${key}`;
      const property = checker.getPropertyOfType(objectType, key);
      if (property !== undefined) walk(child, checker.getTypeOfSymbol(property), childPath);
      else if (indexInfo !== undefined) walk(child, indexInfo.type, childPath);
      else found.push(`${childPath}: unknown field of ${checker.typeToString(objectType)}`);
    }
  };

  const isEmptyInterface = (type: ts.Type): boolean =>
    type.isClassOrInterface() && checker.getPropertiesOfType(type).length === 0 && checker.getIndexInfosOfType(type).length === 0;

  walk(object, rootType, "");
  return found;
}

type SchemaNode = Record<string, unknown>;

/**
 * Rewrites a CRD's structural schema into draft-07 JSON Schema the way the API server applies it with
 * strict field validation: unknown fields are errors, int-or-string is an integer or a string, and
 * exclusiveMinimum is OpenAPI 3.0's boolean flag on minimum.
 */
function crdSchemaToDraft7(node: SchemaNode): SchemaNode {
  const result: SchemaNode = {};
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith("x-kubernetes-") || key === "format") continue;
    if (key === "properties") {
      result.properties = Object.fromEntries(Object.entries(value as Record<string, SchemaNode>).map(([name, child]) => [name, crdSchemaToDraft7(child)]));
    } else if (key === "items" || key === "additionalProperties") {
      result[key] = crdSchemaToDraft7(value as SchemaNode);
    } else if (key === "exclusiveMinimum") {
      result.exclusiveMinimum = node.minimum;
      delete result.minimum;
    } else if (key !== "minimum" || node.exclusiveMinimum !== true) {
      result[key] = value;
    }
  }
  if (node["x-kubernetes-int-or-string"] === true) result.anyOf = [{ type: "integer" }, { type: "string" }];
  if (result.properties !== undefined && node["x-kubernetes-preserve-unknown-fields"] !== true) result.additionalProperties = false;
  return result;
}

/** Compiles an ajv validator for ModelPools from the CRD file's openAPIV3Schema. */
export function modelPoolValidator(crdFile: string): ValidateFunction {
  const crd = parse(readFileSync(crdFile, "utf8")) as { spec: { versions: Array<{ schema: { openAPIV3Schema: SchemaNode } }> } };
  const schema = crd.spec.versions[0]!.schema.openAPIV3Schema;
  return new Ajv({ allErrors: true }).compile(crdSchemaToDraft7(schema));
}
