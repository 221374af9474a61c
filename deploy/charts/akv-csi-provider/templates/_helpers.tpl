{{/* Chart name, overridable. */}}
{{- define "akv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: fullnameOverride, else the release name when it already contains the chart name, else both. */}}
{{- define "akv.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "akv.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods; never change them after a release exists (selectors are immutable). */}}
{{- define "akv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "akv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "akv.labels" -}}
{{ include "akv.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: csi-provider
app.kubernetes.io/part-of: secrets-store-csi-driver
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "akv.serviceAccountName" -}}
{{- if .Values.rbac.serviceAccountName -}}
{{- .Values.rbac.serviceAccountName -}}
{{- else if .Values.rbac.install -}}
{{- include "akv.fullname" . -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{- define "akv.image" -}}
{{- $image := .Values.linux.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Port of metricsAddr (":8898" -> 8898); the schema allows only ":<port>". */}}
{{- define "akv.metricsPort" -}}
{{- $port := regexReplaceAll "^.*:" .Values.metricsAddr "" | atoi -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail (printf "metricsAddr %q: the port must be 1-65535" .Values.metricsAddr) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/*
Whole seconds of a duration made of hours, minutes and seconds ("1m30s" -> 90).
Call with (list "valueName" "value"); the schema restricts the value to that form.
*/}}
{{- define "akv.seconds" -}}
{{- $name := index . 0 -}}
{{- $value := index . 1 | toString -}}
{{- if not (regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$" $value) -}}
{{- fail (printf "%s %q: use whole hours, minutes and seconds, e.g. 20s or 1m30s" $name $value) -}}
{{- end -}}
{{- $h := regexFind "[0-9]+h" $value | trimSuffix "h" | atoi -}}
{{- $m := regexFind "[0-9]+m" $value | trimSuffix "m" | atoi -}}
{{- $s := regexFind "[0-9]+s" $value | trimSuffix "s" | atoi -}}
{{- add (mul $h 3600) (mul $m 60) $s -}}
{{- end -}}
