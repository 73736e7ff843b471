{{/* The chart's name. */}}
{{- define "voicefinetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it contains the chart name. */}}
{{- define "voicefinetune.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "voicefinetune.operatorName" -}}{{ include "voicefinetune.fullname" . }}-operator{{- end }}
{{- define "voicefinetune.facadeName" -}}{{ include "voicefinetune.fullname" . }}-facade{{- end }}
{{- define "voicefinetune.inferenceName" -}}{{ include "voicefinetune.fullname" . }}-inference{{- end }}

{{- define "voicefinetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "voicefinetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: voicefinetune
{{- end }}

{{/* Selector labels of one component: include with (dict "root" . "component" "operator"). */}}
{{- define "voicefinetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicefinetune.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* image reference: include with (dict "root" . "image" .Values.images.operator). */}}
{{- define "voicefinetune.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Fails the render when the S3 keys are missing rather than making a Secret with empty keys. */}}
{{- define "voicefinetune.s3Keys" -}}
{{- $s3 := .Values.s3 }}
{{- if and (not $s3.keyless) (not $s3.existingSecret) (not (and $s3.accessKey $s3.secretKey)) }}
{{- fail "S3 keys missing: set s3.accessKey and s3.secretKey, or s3.existingSecret (a Secret holding them), or s3.keyless=true (the endpoint needs no keys, or the pods get credentials another way)" }}
{{- end }}
{{- end }}

{{- define "voicefinetune.s3SecretName" -}}
{{- default (printf "%s-s3" (include "voicefinetune.fullname" .)) .Values.s3.existingSecret }}
{{- end }}

{{/* The namespaces whose VoiceFinetunes the operator reconciles (when not cluster-wide). */}}
{{- define "voicefinetune.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}{{ join "," .Values.operator.watchNamespaces }}{{ else }}{{ .Release.Namespace }}{{ end }}
{{- end }}

{{/* Non-root, no privilege escalation, no capabilities: every pod of the chart. */}}
{{- define "voicefinetune.podSecurityContext" -}}
runAsNonRoot: true
{{- range $key := list "runAsUser" "runAsGroup" "fsGroup" }}
{{- with index $.Values.podSecurityContext $key }}
{{ $key }}: {{ . }}
{{- end }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "voicefinetune.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/* S3 settings every component shares: keys from the Secret, never as plain values. */}}
{{- define "voicefinetune.s3Env" -}}
{{- if not .Values.s3.keyless }}
- name: E2E_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "voicefinetune.s3SecretName" . }}
      key: {{ .Values.s3.accessKeyKey }}
- name: E2E_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "voicefinetune.s3SecretName" . }}
      key: {{ .Values.s3.secretKeyKey }}
{{- end }}
- name: E2E_BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: E2E_ENDPOINT_URL
  value: {{ .Values.s3.endpointUrl | quote }}
- name: VFT_S3_REGION
  value: {{ .Values.s3.region | quote }}
{{- end }}

{{/* The Secret holding the API key; empty when no API key is configured. */}}
{{- define "voicefinetune.apiKeySecretName" -}}
{{- if .Values.apiKey.existingSecret }}{{ .Values.apiKey.existingSecret }}
{{- else if .Values.apiKey.value }}{{ printf "%s-api-key" (include "voicefinetune.fullname" .) }}
{{- end }}
{{- end }}

{{/* VFT_API_KEY from its Secret (nothing without an API key). */}}
{{- define "voicefinetune.apiKeyEnv" -}}
{{- with include "voicefinetune.apiKeySecretName" . }}
- name: VFT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.apiKey.key }}
{{- end }}
{{- end }}

{{/* VFT_WEBHOOK_SECRET from its Secret (nothing without one: webhooks unsigned). */}}
{{- define "voicefinetune.webhookSecretEnv" -}}
{{- with .Values.webhooks.existingSecret }}
- name: VFT_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.webhooks.key }}
{{- end }}
{{- end }}

{{/* The names of imagePullSecrets, comma-separated: the operator puts them on training Jobs and inference pods. */}}
{{- define "voicefinetune.pullSecretNames" -}}
{{- $names := list }}
{{- range .Values.imagePullSecrets }}{{ $names = append $names .name }}{{ end }}
{{- join "," $names }}
{{- end }}

{{/* The Secret in which the operator keeps its progress-token key (made by the operator, not the chart). */}}
{{- define "voicefinetune.progressKeySecret" -}}
{{ include "voicefinetune.operatorName" . }}-progress-key
{{- end }}

{{/* The labels the operator gives training pods (voicefinetune_operator.jobs.trainer_labels). */}}
{{- define "voicefinetune.trainerLabels" -}}
app.kubernetes.io/name: voicefinetune
app.kubernetes.io/component: trainer
app.kubernetes.io/managed-by: voicefinetune-operator
{{- end }}

{{/* The selector of the inference pods the operator makes (voicefinetune_operator.inference.selector). */}}
{{- define "voicefinetune.inferenceSelector" -}}
app.kubernetes.io/name: voicefinetune
app.kubernetes.io/component: inference
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The inference servers' port (voicefinetune_operator.config.INFERENCE_PORT). */}}
{{- define "voicefinetune.inferencePort" -}}8000{{- end }}

{{/* An ingress rule opening ``port`` to the scraper's namespace (none without one): (dict "root" . "port" P). */}}
{{- define "voicefinetune.metricsIngress" -}}
{{- with .root.Values.networkPolicy.metricsNamespaceLabels -}}
# Prometheus
- ports:
    - port: {{ $.port }}
      protocol: TCP
  from:
    - namespaceSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
{{- end }}
{{- end }}

{{/* Egress to the cluster DNS. */}}
{{- define "voicefinetune.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.namespaceLabels | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
{{- end }}

{{/* Egress to address blocks on TCP ports ({ipBlocks, ports}); nothing when no block is given. */}}
{{- define "voicefinetune.ipEgress" -}}
{{- if .ipBlocks -}}
- ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  to:
    {{- range .ipBlocks }}
    - ipBlock:
        {{- toYaml . | nindent 8 }}
    {{- end }}
{{- end }}
{{- end }}
