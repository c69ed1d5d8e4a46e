{{/* Names and labels. */}}
{{- define "jwtgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "jwtgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "jwtgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jwtgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "jwtgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "jwtgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "jwtgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "jwtgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "jwtgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "jwtgate.redisName" -}}
{{- printf "%s-redis" (include "jwtgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
A TOML value from a values entry: strings are quoted (JSON escapes are valid TOML), numbers
are integers (every numeric jwtgate key is one), lists are arrays, maps are inline tables.
*/}}
{{- define "jwtgate.tomlValue" -}}
{{- if kindIs "map" . -}}
{ {{- $first := true -}}
{{- range $k, $v := . -}}
{{- if not $first }}, {{ else }} {{ end -}}
{{- $first = false -}}
{{ toJson $k }} = {{ include "jwtgate.tomlValue" $v }}
{{- end }} }
{{- else if kindIs "slice" . -}}
[
{{- range $i, $v := . -}}
{{- if $i }}, {{ end -}}
{{ include "jwtgate.tomlValue" $v }}
{{- end -}}
]
{{- else if kindIs "string" . -}}
{{ toJson . }}
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if kindIs "invalid" . -}}
{{ fail "jwtgate: null values cannot be written to TOML" }}
{{- else -}}
{{ int64 . }}
{{- end -}}
{{- end -}}

{{/* The keys of a table, one `key = value` line each, in sorted order. */}}
{{- define "jwtgate.tomlTable" -}}
{{- range $k, $v := . }}
{{ $k }} = {{ include "jwtgate.tomlValue" $v }}
{{- end -}}
{{- end -}}

{{/* The jwtgate.toml the pods run: config.toml verbatim, or rendered from the tables. */}}
{{- define "jwtgate.config" -}}
{{- if .Values.config.toml -}}
{{ .Values.config.toml }}
{{- else -}}
{{- $c := .Values.config -}}
{{- $upstream := $c.upstream | default dict -}}
{{- if not (or $upstream.url $c.upstreams) -}}
{{- fail "jwtgate: set config.upstream.url, or config.upstreams (one of them named default, or a route upstream on every route)" -}}
{{- end -}}
# Rendered by the jwtgate Helm chart from values.yaml (config.*).
[server]
listen = "0.0.0.0:{{ .Values.ports.http }}"
admin_listen = "0.0.0.0:{{ .Values.ports.admin }}"
{{- include "jwtgate.tomlTable" (omit ($c.server | default dict) "listen" "admin_listen") }}
{{- if $upstream.url }}

[upstream]
{{- include "jwtgate.tomlTable" $upstream }}
{{- end }}
{{- range $c.upstreams }}

[[upstreams]]
{{- include "jwtgate.tomlTable" . }}
{{- end }}
{{- if $c.paths }}

[paths]
{{- include "jwtgate.tomlTable" $c.paths }}
{{- end }}
{{- range $c.issuers }}

[[issuers]]
{{- include "jwtgate.tomlTable" . }}
{{- end }}
{{- range $c.aws_credentials }}

[[aws_credentials]]
{{- include "jwtgate.tomlTable" . }}
{{- end }}
{{- if $c.login }}

[login]
{{- include "jwtgate.tomlTable" (include "jwtgate.loginDefaults" (list $ $c.login) | fromJson) }}
{{- end }}
{{- range $c.logins }}

[[logins]]
{{- include "jwtgate.tomlTable" (include "jwtgate.loginDefaults" (list $ .) | fromJson) }}
{{- end }}
{{- range $c.routes }}

[[routes]]
{{- include "jwtgate.tomlTable" . }}
{{- end }}
{{- range $table := list "headers" "cors" "forward_auth" "tracing" "token_cache" }}
{{- with get $c $table }}

[{{ $table }}]
{{- include "jwtgate.tomlTable" . }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
A [login] or [[logins]] table with the chart's defaults (as JSON): with session_store = "redis"
and redis.enabled, redis_url is the chart's Redis. Called with (list $root $table).
*/}}
{{- define "jwtgate.loginDefaults" -}}
{{- $root := index . 0 -}}
{{- $login := deepCopy (index . 1) -}}
{{- if and $root.Values.redis.enabled (eq (toString (get $login "session_store")) "redis") (not (hasKey $login "redis_url")) -}}
{{- $_ := set $login "redis_url" (printf "redis://%s:6379/0" (include "jwtgate.redisName" $root)) -}}
{{- end -}}
{{- toJson $login -}}
{{- end -}}
