{{/*
The chart name, or nameOverride. Kubernetes names are at most 63 characters.
*/}}
{{- define "spillway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name when it already contains the
chart name, else <release>-<chart>.
*/}}
{{- define "spillway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The labels that select the controller pods. They never change after install, because a Deployment's
selector is immutable.
*/}}
{{- define "spillway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spillway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
The labels of every object the chart creates.
*/}}
{{- define "spillway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "spillway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spillway
{{- end }}

{{/*
The labels that the controller puts on every worker pod and worker Service, for any pool.
*/}}
{{- define "spillway.workerSelectorLabels" -}}
app.kubernetes.io/name: spillway-worker
app.kubernetes.io/managed-by: spillway
{{- end }}

{{- define "spillway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spillway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name an existing ServiceAccount" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spillway.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The admin key variable: config.auth.adminKeyEnv, or the configuration schema's default.
*/}}
{{- define "spillway.adminKeyEnv" -}}
{{- $auth := .Values.config.auth | default dict }}
{{- $auth.adminKeyEnv | default "SPILLWAY_ADMIN_KEY" }}
{{- end }}

{{- define "spillway.gatewayPort" -}}
{{- $gateway := .Values.config.gateway | default dict }}
{{- $gateway.port | default 8080 | int }}
{{- end }}

{{/*
Fails with a readable message when the configuration cannot work in a cluster. values.schema.json checks
types and keys; these rules span several values.
*/}}
{{- define "spillway.validate" -}}
{{- $gateway := .Values.config.gateway | default dict }}
{{- $host := $gateway.host | default "127.0.0.1" }}
{{- if has $host (list "127.0.0.1" "localhost" "::1") }}
{{- fail (printf "config.gateway.host is %s, a loopback address, so the gateway Service could not reach the pods: set it to 0.0.0.0" $host) }}
{{- end }}
{{- $auth := .Values.config.auth | default dict }}
{{- $keys := $auth.keys | default list }}
{{- if eq (len $keys) 0 }}
{{- fail "config.auth.keys is empty, and the gateway refuses to listen on a non-loopback address without API keys: add a tenant with keyEnv and a secretEnv entry for it" }}
{{- end }}
{{- $extraEnvNames := list }}
{{- range .Values.controller.extraEnv }}
{{- $extraEnvNames = append $extraEnvNames .name }}
{{- end }}
{{- range $index, $tenant := $keys }}
{{- if and $tenant.keyEnv (not (hasKey $.Values.secretEnv $tenant.keyEnv)) (not (has $tenant.keyEnv $extraEnvNames)) }}
{{- fail (printf "config.auth.keys[%d].keyEnv is %s, but no secretEnv entry or controller.extraEnv variable sets it: add secretEnv.%s with the Secret that contains the key" $index $tenant.keyEnv $tenant.keyEnv) }}
{{- end }}
{{- end }}
{{- $adminKeyEnv := include "spillway.adminKeyEnv" . }}
{{- if hasKey .Values.secretEnv $adminKeyEnv }}
{{- fail (printf "secretEnv.%s is set, but the admin key comes from adminKey.existingSecret: remove the secretEnv entry" $adminKeyEnv) }}
{{- end }}
{{- end }}
