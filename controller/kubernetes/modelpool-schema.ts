import { z } from "zod";

import { poolSchema, requestClasses, variantSchema, type PoolConfig } from "../config/schema.ts";

/**
 * The ModelPool custom resource (`spillway.dev/v1alpha1`). Its spec is the pool configuration of
 * `spillway.yaml` without `name`, because `metadata.name` is the pool name, plus the pod settings of the
 * pool's worker Deployment. scripts/generate-crd.ts turns these schemas into the CRD.
 */

export const modelPoolGroup = "spillway.dev";
export const modelPoolVersion = "v1alpha1";
export const modelPoolApiVersion = `${modelPoolGroup}/${modelPoolVersion}`;

/** The pool name rule of poolSchema, which ModelPools apply to `metadata.name`. */
export const poolNamePattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

const quant = variantSchema.shape.quant;

/** A resource quantity such as `2`, `500m` or `8Gi`: an integer or a string, as in a pod spec. */
const quantity = z.union([z.string().min(1), z.int().min(0)]).meta({ "x-kubernetes-int-or-string": true });

const resourcesSchema = z.strictObject({
  requests: z.record(z.string(), quantity).optional(),
  limits: z.record(z.string(), quantity).optional(),
});

const tolerationSchema = z.strictObject({
  key: z.string().optional(),
  operator: z.enum(["Exists", "Equal"]).optional(),
  value: z.string().optional(),
  effect: z.enum(["NoSchedule", "PreferNoSchedule", "NoExecute"]).optional(),
  tolerationSeconds: z.int().optional(),
});

const modelCacheSchema = z
  .strictObject({
    persistentVolumeClaim: z.strictObject({ claimName: z.string().min(1), readOnly: z.boolean().default(false) }).optional(),
    emptyDir: z.strictObject({ sizeLimit: quantity.optional(), medium: z.enum(["", "Memory"]).default("") }).optional(),
  })
  .refine((cache) => (cache.persistentVolumeClaim === undefined) !== (cache.emptyDir === undefined), {
    message: "set exactly one of persistentVolumeClaim or emptyDir",
  })
  .meta({
    "x-kubernetes-validations": [
      { rule: "has(self.persistentVolumeClaim) != has(self.emptyDir)", message: "modelCache needs exactly one of persistentVolumeClaim or emptyDir" },
    ],
  });

/** Pod settings of the worker Deployment that the controller creates for the pool. */
const podSettingsShape = {
  image: z.string().min(1),
  resources: resourcesSchema.optional(),
  nodeSelector: z.record(z.string(), z.string()).optional(),
  tolerations: z.array(tolerationSchema).optional(),
  modelCache: modelCacheSchema.optional(),
  priorityClassName: z.string().min(1).optional(),
};

const { name: _name, ...poolShape } = poolSchema.shape;

export const modelPoolSpecSchema = z.strictObject({
  ...poolShape,
  // An object with one optional key per request class, where poolSchema has a partial record: Kubernetes
  // schemas cannot restrict map keys, and named properties make an unknown class a validation error.
  qualityFloors: z.strictObject(Object.fromEntries(requestClasses.map((requestClass) => [requestClass, quant.optional()]))).default({}),
  replicas: poolShape.replicas.meta({
    "x-kubernetes-validations": [{ rule: "self.min <= self.max", message: "replicas.min must be less than or equal to replicas.max" }],
  }),
  autoscaling: poolShape.autoscaling.meta({
    "x-kubernetes-validations": [
      { rule: "self.pressureLow < self.pressureHigh", message: "autoscaling.pressureLow must be below autoscaling.pressureHigh" },
    ],
  }),
  ...podSettingsShape,
});

export const conditionTypes = ["Ready", "Progressing", "Degraded"] as const;

/** The reasons the controller sets on each condition type, in the CamelCase form of `metav1.Condition`. */
export const conditionReasons = {
  Ready: ["ReplicasReady", "NoReplicasReady", "BelowMinimum"],
  Progressing: ["RollingOut", "ScalingUp", "ScalingDown", "SteppingDown", "SteppingUp", "Stable"],
  Degraded: ["AsExpected", "InvalidSpec", "WorkersFailing", "ModelLoadFailed", "DeploymentFailed"],
} as const satisfies Record<(typeof conditionTypes)[number], readonly string[]>;

const conditionSchema = z.strictObject({
  type: z.enum(conditionTypes),
  status: z.enum(["True", "False", "Unknown"]),
  observedGeneration: z.int().min(0).optional(),
  lastTransitionTime: z.iso.datetime(),
  reason: z.string().regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/),
  message: z.string().max(32768).optional(),
});

const replicaStatusSchema = z.strictObject({
  name: z.string().min(1),
  variant: quant,
  ready: z.boolean(),
});

export const modelPoolStatusSchema = z.strictObject({
  observedGeneration: z.int().min(0).optional(),
  conditions: z.array(conditionSchema).meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] }).optional(),
  replicas: z.int().min(0).optional(),
  readyReplicas: z.int().min(0).optional(),
  desiredReplicas: z.int().min(0).optional(),
  lowestRung: quant.optional(),
  replicaStatuses: z.array(replicaStatusSchema).meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"] }).optional(),
  lastLadderStep: z.strictObject({ time: z.iso.datetime(), replica: z.string().min(1), fromVariant: quant, toVariant: quant }).optional(),
  lastScale: z.strictObject({ time: z.iso.datetime(), fromReplicas: z.int().min(0), toReplicas: z.int().min(0) }).optional(),
});

/** Converts a ModelPool into the pool configuration the gateway and autoscaler run on, with every default applied. */
export function toPoolConfig(name: string, spec: ModelPoolSpec): PoolConfig {
  return poolSchema.parse({ ...poolFieldsOf(spec), name });
}

/**
 * A whole ModelPool as the API server stores it. Parsing runs poolSchema's own refinements on the spec,
 * such as replicas.min <= replicas.max and unique quants, so a ModelPool is valid exactly when the same
 * pool in `spillway.yaml` is.
 */
export const modelPoolSchema = z
  .object({
    apiVersion: z.literal(modelPoolApiVersion),
    kind: z.literal("ModelPool"),
    metadata: z.looseObject({ name: z.string().regex(new RegExp(poolNamePattern)), namespace: z.string().optional() }),
    spec: modelPoolSpecSchema,
    status: modelPoolStatusSchema.optional(),
  })
  .superRefine((resource, context) => {
    const result = poolSchema.safeParse({ ...poolFieldsOf(resource.spec), name: resource.metadata.name });
    for (const issue of result.error?.issues ?? []) {
      if (issue.code === "custom") {
        context.addIssue({ code: "custom", path: ["spec", ...issue.path], message: issue.message });
      }
    }
  });

/** Returns the spec without the pod settings, which poolSchema does not know. */
function poolFieldsOf(spec: ModelPoolSpec): Record<string, unknown> {
  const pool: Record<string, unknown> = { ...spec };
  for (const key of Object.keys(podSettingsShape)) {
    delete pool[key];
  }
  return pool;
}

export type ModelPoolSpec = z.infer<typeof modelPoolSpecSchema>;
export type ModelPoolStatus = z.infer<typeof modelPoolStatusSchema>;
export type ModelPool = z.infer<typeof modelPoolSchema>;
export type ModelPoolCondition = z.infer<typeof conditionSchema>;

/**
 * Descriptions for `kubectl explain` and editors, by field path in the resource. scripts/generate-crd.ts
 * puts them into the CRD, and test/crd.test.ts checks that every spec and status field has one.
 */
export const fieldDescriptions: Record<string, string> = {
  "": "A pool of llama.cpp workers serving one model through a quality ladder of quantized variants.",
  spec: "The desired pool: its model ladder, scaling limits and the pod settings of its workers.",
  "spec.aliases": "Other model names that clients may send to reach this pool.",
  "spec.variants": "The quality ladder, highest quality first. Under load a replica steps down to the next variant.",
  "spec.variants.quant": "Quantization name of this rung, such as Q4_K_M, Q8_0 or F16. Each rung needs its own.",
  "spec.variants.model": "GGUF file path, or a node-llama-cpp URI such as hf:<user>/<repo>:Q4_K_M.",
  "spec.qualityFloors": "Lowest rung (a quant of spec.variants) each request class may be served from. Classes not listed may use any rung.",
  "spec.qualityFloors.json_schema": "Lowest rung for requests with response_format json_schema.",
  "spec.qualityFloors.json_object": "Lowest rung for requests with response_format json_object.",
  "spec.qualityFloors.tools": "Lowest rung for requests that offer tools.",
  "spec.qualityFloors.default": "Lowest rung for all other requests.",
  "spec.replicas": "Bounds for the pool's autoscaler, which picks the replica count between them.",
  "spec.replicas.min": "Replicas kept even when the pool is idle.",
  "spec.replicas.max": "Most replicas the autoscaler may run.",
  "spec.slotsPerReplica": "Requests one replica decodes at once.",
  "spec.queueSize": "Requests that may wait for a local slot before they overflow or get HTTP 429.",
  "spec.contextSize": "Tokens of context per slot.",
  "spec.threadsPerReplica": "CPU threads per replica. When unset, the machine's CPUs are divided among the replicas.",
  "spec.slo": "Service level objective the autoscaler scales for.",
  "spec.slo.timeToFirstTokenSeconds": "Target seconds from request to first streamed token.",
  "spec.costPerReplicaHourUsd": "What one replica costs per hour in US dollars, GPU or CPU share included. Prices local tokens in usage reports.",
  "spec.autoscaling": "How the control loop scales the pool and moves replicas along the ladder.",
  "spec.autoscaling.pressureHigh": "Pressure (demand over ready slot capacity) above which the pool counts as overloaded.",
  "spec.autoscaling.pressureLow": "Pressure below which the pool counts as idle enough to step up or scale down. Must be below pressureHigh.",
  "spec.autoscaling.scaleUpAfterSeconds": "Seconds of high pressure before a replica is added.",
  "spec.autoscaling.scaleDownAfterSeconds": "Seconds of low pressure before a replica is removed.",
  "spec.autoscaling.stepDownAfterSeconds": "Seconds of high pressure, with no replica to add in time, before one replica steps down a rung.",
  "spec.autoscaling.stepUpAfterSeconds": "Seconds of low pressure before one replica steps back up a rung.",
  "spec.autoscaling.minDwellSeconds": "Least seconds between two ladder steps of the pool.",
  "spec.autoscaling.keepAtOrAboveFloor": "Replicas kept at or above the pool's highest quality floor, so requests bound to that floor keep a local replica.",
  "spec.autoscaling.smoothingSeconds": "Time constant, in seconds, of the pressure moving average.",
  "spec.autoscaling.minStepSpeedup":
    "How much faster, in measured decode tokens per second, a lower rung must be to be worth its quality cost. 1.05 means at least 5% faster.",
  "spec.image": "Container image of the Spillway worker.",
  "spec.resources": "Compute resources of each worker container. Request GPUs with a limit such as nvidia.com/gpu: 1.",
  "spec.resources.requests": "Minimum resources per worker, such as cpu: 2 and memory: 4Gi.",
  "spec.resources.limits": "Maximum resources per worker, such as memory: 6Gi and nvidia.com/gpu: 1.",
  "spec.nodeSelector": "Node labels a worker pod's node must have.",
  "spec.tolerations": "Taints the worker pods tolerate, as in a pod spec.",
  "spec.tolerations.key": "Taint key; empty with operator Exists matches every taint.",
  "spec.tolerations.operator": "Exists matches any value; Equal (the default) matches value.",
  "spec.tolerations.value": "Taint value for operator Equal.",
  "spec.tolerations.effect": "Taint effect to match; empty matches every effect.",
  "spec.tolerations.tolerationSeconds": "For NoExecute taints: seconds the pod stays bound after the taint appears.",
  "spec.modelCache": "Volume that holds the GGUF files the workers download. Set exactly one of persistentVolumeClaim or emptyDir.",
  "spec.modelCache.persistentVolumeClaim": "Keep models in an existing PersistentVolumeClaim that all the pool's pods mount. Replicas on several nodes need a ReadWriteMany or ReadOnlyMany claim.",
  "spec.modelCache.persistentVolumeClaim.claimName": "Name of the PersistentVolumeClaim in the ModelPool's namespace.",
  "spec.modelCache.persistentVolumeClaim.readOnly": "Mount the claim read-only, for models that are already in place.",
  "spec.modelCache.emptyDir": "Keep models in a per-pod emptyDir volume, downloaded again by every new pod.",
  "spec.modelCache.emptyDir.sizeLimit": "Most space the volume may use, such as 20Gi.",
  "spec.modelCache.emptyDir.medium": 'Storage medium: "" for node disk, Memory for tmpfs.',
  "spec.priorityClassName": "PriorityClass of the worker pods.",
  status: "The pool as the controller last observed it.",
  "status.observedGeneration": "The metadata.generation this status describes.",
  "status.conditions": "Ready, Progressing and Degraded conditions of the pool.",
  "status.conditions.type": "Condition type: Ready, Progressing or Degraded.",
  "status.conditions.status": "True, False or Unknown.",
  "status.conditions.observedGeneration": "The metadata.generation the condition was set for.",
  "status.conditions.lastTransitionTime": "When status last changed.",
  "status.conditions.reason": "CamelCase reason for the last transition, such as ReplicasReady or SteppingDown.",
  "status.conditions.message": "Details for people.",
  "status.replicas": "Worker pods that exist.",
  "status.readyReplicas": "Worker pods that are ready to serve.",
  "status.desiredReplicas": "Replica count the autoscaler wants now, between spec.replicas.min and spec.replicas.max.",
  "status.lowestRung": "Lowest rung (quant) any replica serves now.",
  "status.replicaStatuses": "Each replica with the variant it serves.",
  "status.replicaStatuses.name": "Pod name of the replica.",
  "status.replicaStatuses.variant": "Quant of the variant the replica serves.",
  "status.replicaStatuses.ready": "Whether the replica is ready to serve.",
  "status.lastLadderStep": "The latest step of a replica along the ladder.",
  "status.lastLadderStep.time": "When the step happened.",
  "status.lastLadderStep.replica": "Pod name of the replica that stepped.",
  "status.lastLadderStep.fromVariant": "Quant before the step.",
  "status.lastLadderStep.toVariant": "Quant after the step.",
  "status.lastScale": "The latest change of the replica count.",
  "status.lastScale.time": "When the replica count changed.",
  "status.lastScale.fromReplicas": "Replica count before the change.",
  "status.lastScale.toReplicas": "Replica count after the change.",
};
