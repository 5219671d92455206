/**
 * Writes charts/spillway/values.schema.json, which `helm install`, `helm template` and `helm lint` check
 * the chart's values against. The `config:` block is `configSchema` from controller/config/schema.ts, the
 * schema of spillway.yaml; the other values are described here. Run `npm run generate:values-schema`
 * after changing either; test/helm-artifacts.test.ts fails while the committed file is stale.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { z } from "zod";

import { configSchema } from "../controller/config/schema.ts";

type SchemaNode = Record<string, unknown>;

export const valuesSchemaPath = path.resolve(import.meta.dirname, "..", "charts", "spillway", "values.schema.json");

/** A DNS-1123 subdomain, the form of most Kubernetes object names. */
const objectName = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, "must be a Kubernetes object name: lowercase letters, digits, '-' and '.'");
/** An optional object name, where "" means "let the chart choose". */
const optionalObjectName = z.union([z.literal(""), objectName]);
const environmentVariableName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name");
/** A key inside a Secret or ConfigMap. */
const secretKey = z.string().regex(/^[-._a-zA-Z0-9]+$/, "must be a Secret key: letters, digits, '-', '_' and '.'");
/** A Kubernetes resource quantity such as 1Gi or 500m, or a plain number. */
const quantity = z.union([z.string().regex(/^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[munkKMGTPE])?$/), z.number().min(0)]);
/** A Prometheus duration such as 30s or 1m30s, the form prometheus-operator accepts. */
const duration = z.string().regex(/^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$/, "must be a Prometheus duration such as 30s");
const stringMap = z.record(z.string(), z.string());
/** A Kubernetes object that the chart copies into a manifest unchecked, because the API server validates it. */
const kubernetesObject = z.record(z.string(), z.unknown());

const labelSelector = z.strictObject({
  matchLabels: stringMap.optional(),
  matchExpressions: z
    .array(
      z.strictObject({
        key: z.string().min(1),
        operator: z.enum(["In", "NotIn", "Exists", "DoesNotExist"]),
        values: z.array(z.string()).optional(),
      }),
    )
    .optional(),
});

const secretReference = z.strictObject({
  secretName: objectName.describe("Name of an existing Secret in the release namespace."),
  key: secretKey.describe("Key inside the Secret."),
  optional: z.boolean().default(false).describe("Start the pod without the variable when the Secret or key is missing."),
});

/** The chart's values, `config` aside. Every key is optional because values.yaml sets each default. */
export const chartValuesSchema = z.strictObject({
  nameOverride: z.string().max(63).default("").describe("Replaces the chart name in object names."),
  fullnameOverride: z.string().max(63).default("").describe("Replaces the whole object name prefix."),
  image: z
    .strictObject({
      repository: z.string().min(1).default("spillway/controller").describe("Image of spillway controller."),
      tag: z.string().default("").describe("Image tag; empty means the chart's appVersion."),
      pullPolicy: z.enum(["Always", "IfNotPresent", "Never"]).default("IfNotPresent"),
    })
    .optional(),
  imagePullSecrets: z.array(z.strictObject({ name: objectName })).default([]),
  replicaCount: z.int().min(0).default(1).describe("Controller pods; each serves gateway traffic, one leader reconciles."),
  controller: z
    .strictObject({
      leaseName: optionalObjectName.default("").describe("Leader election Lease; empty means the controller's default."),
      extraArgs: z.array(z.string()).default([]).describe("Arguments appended to spillway controller's."),
      extraEnv: z.array(kubernetesObject.and(z.object({ name: environmentVariableName }))).default([]),
      extraVolumes: z.array(kubernetesObject).default([]),
      extraVolumeMounts: z.array(kubernetesObject).default([]),
      stateSizeLimit: quantity.default("1Gi").describe("Size limit of the state emptyDir, a Kubernetes quantity."),
    })
    .optional(),
  adminKey: z
    .strictObject({
      existingSecret: objectName.describe("Secret whose key admin-key contains the admin key, shared with the worker pods."),
    })
    .optional(),
  secretEnv: z
    .record(environmentVariableName, secretReference)
    .default({})
    .describe("Environment variables from existing Secrets, keyed by variable name."),
  service: z
    .strictObject({
      port: z.int().min(1).max(65535).default(80).describe("Port of the gateway Service."),
      annotations: stringMap.default({}),
    })
    .optional(),
  serviceAccount: z
    .strictObject({
      create: z.boolean().default(true),
      name: optionalObjectName.default(""),
      annotations: stringMap.default({}),
    })
    .optional(),
  rbac: z.strictObject({ create: z.boolean().default(true) }).optional(),
  resources: kubernetesObject.default({}).describe("Requests and limits of the controller container."),
  podSecurityContext: kubernetesObject.default({}),
  securityContext: kubernetesObject.default({}),
  preStopSleepSeconds: z.int().min(1).default(5).describe("Seconds the preStop hook waits before SIGTERM."),
  terminationGracePeriodSeconds: z.int().min(0).default(45).describe("Seconds Kubernetes waits for a stopping pod."),
  podAnnotations: stringMap.default({}),
  podLabels: stringMap.default({}),
  nodeSelector: stringMap.default({}),
  tolerations: z.array(kubernetesObject).default([]),
  affinity: kubernetesObject.default({}),
  priorityClassName: z.string().default(""),
  serviceMonitor: z
    .strictObject({
      enabled: z.boolean().default(false),
      workers: z.boolean().default(true).describe("Also scrape the worker pods of every pool."),
      interval: duration.default("30s"),
      scrapeTimeout: duration.default("10s"),
      labels: stringMap.default({}),
    })
    .optional(),
  networkPolicy: z
    .strictObject({
      enabled: z.boolean().default(false),
      metricsScraper: z
        .strictObject({
          namespaceSelector: labelSelector.default({}),
          podSelector: labelSelector.default({}),
        })
        .optional(),
    })
    .optional(),
  dashboards: z
    .strictObject({
      enabled: z.boolean().default(true),
      label: z.string().min(1).default("grafana_dashboard").describe("Label Grafana's dashboard sidecar looks for."),
      labelValue: z.string().default("1"),
      namespace: z.string().default("").describe("Namespace of the dashboard ConfigMaps; empty means the release namespace."),
      annotations: stringMap.default({}),
    })
    .optional(),
  samples: z
    .strictObject({
      enabled: z.boolean().default(false),
      files: z.array(z.string().regex(/^[^/]+\.yaml$/, "must be a file name under the chart's samples/ folder")).default([]),
      workerImage: z.string().default("").describe("Worker image the samples run; empty keeps each sample's own."),
    })
    .optional(),
  tests: z
    .strictObject({
      keyEnv: environmentVariableName.describe("The secretEnv variable whose tenant key helm test uses."),
    })
    .optional(),
  config: configSchema.optional().describe("The contents of spillway.yaml; pools come from ModelPool resources."),
});

/** Builds the values schema as draft-07 JSON Schema, the newest draft Helm 3.17's validator reads. */
export function valuesJsonSchema(): SchemaNode {
  const schema = z.toJSONSchema(chartValuesSchema, { target: "draft-7", io: "input", unrepresentable: "throw" }) as SchemaNode;
  const properties = schema.properties as Record<string, SchemaNode>;
  const config = properties.config!;
  const configProperties = config.properties as Record<string, SchemaNode>;
  // `spillway controller` takes its pools from ModelPool resources and rejects pools in its file. Whether
  // configSchema requires `pools` or defaults it to [], the chart's config must leave it out or empty.
  configProperties.pools = {
    ...configProperties.pools,
    description: "Must stay empty: in a cluster each pool is a ModelPool resource.",
    maxItems: 0,
  };
  delete configProperties.pools.minItems;
  if (Array.isArray(config.required)) {
    config.required = (config.required as string[]).filter((key) => key !== "pools");
    if ((config.required as string[]).length === 0) delete config.required;
  }
  return { ...schema, title: "Values of the Spillway Helm chart" };
}

export function renderValuesSchema(): string {
  return `${JSON.stringify(valuesJsonSchema(), null, 2)}\n`;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeFileSync(valuesSchemaPath, renderValuesSchema());
  console.log(`wrote ${path.relative(process.cwd(), valuesSchemaPath)}`);
}
