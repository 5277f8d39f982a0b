{{- define "rewind.labels" -}}
app.kubernetes.io/name: rewind
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "rewind.selector" -}}
app.kubernetes.io/name: rewind
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{/* The operator's name: its ServiceAccount, ClusterRole, bindings and Deployment. */}}
{{- define "rewind.operator" -}}
{{ .Release.Name }}-operator
{{- end -}}

{{/* A map as key=value,key=value (sorted), for the operator's list flags. */}}
{{- define "rewind.keyValues" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%v" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
