{{/* Release-scoped name prefix: "octollm" for a release named octollm, else "<release>-octollm". */}}
{{- define "octollm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: <fullname>-<component>. Call with (list $ "component"). */}}
{{- define "octollm.name" -}}
{{- printf "%s-%s" (include "octollm.fullname" (index . 0)) (index . 1) -}}
{{- end -}}

{{/* Selector labels of one component. Call with (list $ "component"). */}}
{{- define "octollm.selectorLabels" -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/part-of: octollm
{{- end -}}

{{/* All labels of one component. Call with (list $ "component"). */}}
{{- define "octollm.labels" -}}
{{ include "octollm.selectorLabels" . }}
app.kubernetes.io/version: {{ (index . 0).Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ (index . 0).Release.Service }}
helm.sh/chart: {{ printf "%s-%s" (index . 0).Chart.Name (index . 0).Chart.Version }}
environment: {{ (index . 0).Values.environment }}
{{- end -}}

{{- define "octollm.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{- define "octollm.modelImage" -}}
{{- $image := .Values.models.image -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ $image.tag }}
{{- end -}}
{{- end -}}

{{/* The model files a component's pod needs in /models, copied by its init container from the model image: the
     retriever's embedder, and the LLM for the arms that call a model (planner, coder, judge) with the local provider.
     Call with (list $ "component"); prints a comma-separated list (empty: no model). */}}
{{- define "octollm.models" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $models := list -}}
{{- if eq $component "retriever-arm" -}}
{{- $models = append $models "all-MiniLM-L6-v2" -}}
{{- end -}}
{{- if and (has $component (list "planner-arm" "coder-arm" "judge-arm")) (eq (toString (index $root.Values.config "OCTOLLM_LLM_PROVIDER" | default "")) "local") -}}
{{- $models = append $models "SmolLM2-135M-Instruct.Q4_1.gguf" -}}
{{- end -}}
{{- join "," $models -}}
{{- end -}}

{{/* Container security context: non-root, read-only root, nothing to escalate. Call with the uid. */}}
{{- define "octollm.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod security context of a datastore running as uid/gid . */}}
{{- define "octollm.storePodSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "octollm.secretEnv" -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ (index . 0).Values.secrets.name }}
      key: {{ index . 2 }}
{{- end -}}

{{/* Writable scratch space: the root file system is read-only. */}}
{{- define "octollm.scratchMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "octollm.scratchVolumes" -}}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- end -}}

{{/* HTTP probes on SPEC §3's paths. Call with (dict "live" PATH "ready" PATH). */}}
{{- define "octollm.probes" -}}
livenessProbe:
  httpGet:
    path: {{ .live }}
    port: http
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: {{ .ready }}
    port: http
  initialDelaySeconds: 5
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{- define "octollm.orchestratorUrl" -}}
http://{{ include "octollm.name" (list . "orchestrator") }}:{{ .Values.orchestrator.port }}
{{- end -}}

{{- define "octollm.qdrantUrl" -}}
{{- if .Values.qdrant.bundled -}}
http://{{ include "octollm.name" (list . "qdrant") }}:6334
{{- else -}}
{{ .Values.qdrant.external.url }}
{{- end -}}
{{- end -}}
