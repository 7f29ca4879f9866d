{{/*
Names, labels and the values derived from several settings. Every check that can fail a render
is here too, so templates stay declarative.
*/}}

{{/* Chart name, overridable. */}}
{{- define "edge-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "edge-agent.fullname" -}}
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

{{- define "edge-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pods; never change them (DaemonSet selectors are immutable). */}}
{{- define "edge-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edge-agent.labels" -}}
helm.sh/chart: {{ include "edge-agent.chart" . }}
{{ include "edge-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "edge-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edge-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap the agent reads (and in api mode watches): the rendered one or an existing one. */}}
{{- define "edge-agent.configMapName" -}}
{{- default (include "edge-agent.fullname" .) .Values.configMap.existingName }}
{{- end }}

{{/* The Secret with the password keys: an existing one, the rendered one, or none (empty). */}}
{{- define "edge-agent.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.data }}
{{- include "edge-agent.fullname" . }}
{{- end }}
{{- end }}

{{- define "edge-agent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where things live inside the container. */}}
{{- define "edge-agent.configDir" -}}/etc/edge-agent{{- end }}
{{- define "edge-agent.dataDir" -}}/var/lib/edge-agent{{- end }}
{{- define "edge-agent.secretsDir" -}}/var/run/secrets/edge-agent{{- end }}

{{- define "edge-agent.spoolHostPath" -}}
{{- default (printf "/var/lib/edge-agent/%s" .Release.Name) .Values.persistence.hostPath.path }}
{{- end }}

{{- define "edge-agent.pvcName" -}}
{{- default (printf "%s-spool" (include "edge-agent.fullname" .)) .Values.persistence.pvc.existingClaim }}
{{- end }}

{{/* terminationGracePeriodSeconds: above the preStop sleep plus the agent's whole shutdown,
which takes at most drainTimeoutSeconds + 5 s (agent.app.SHUTDOWN_MARGIN_SECS: the last
lifecycle events, closing the producer and the spool). */}}
{{- define "edge-agent.terminationGracePeriodSeconds" -}}
{{- $floor := add (int .Values.preStopSleepSeconds) (int .Values.drainTimeoutSeconds) 5 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $floor 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $floor }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed preStopSleepSeconds + drainTimeoutSeconds + 5 (%v): the kubelet would kill the agent in the middle of its shutdown" .Values.terminationGracePeriodSeconds $floor) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Whether the pod template carries the config checksum (a changed config restarts the pods). */}}
{{- define "edge-agent.rollOnConfigChange" -}}
{{- $roll := .Values.rollOnConfigChange | toString }}
{{- if eq $roll "auto" }}
{{- if eq .Values.remoteConfig.mode "none" }}true{{ end }}
{{- else if eq $roll "always" }}true
{{- else if ne $roll "never" }}
{{- fail (printf "rollOnConfigChange must be auto, always or never, not %q" $roll) }}
{{- end }}
{{- end }}

{{/*
Checks that fail the render with a sentence saying what to set instead. Included once, from the
DaemonSet template.
*/}}
{{- define "edge-agent.validate" -}}
{{- if not (has .Values.remoteConfig.mode (list "none" "directory" "api")) }}
{{- fail (printf "remoteConfig.mode must be none, directory or api, not %q" .Values.remoteConfig.mode) }}
{{- end }}
{{- if not (has .Values.persistence.type (list "hostPath" "pvc" "emptyDir")) }}
{{- fail (printf "persistence.type must be hostPath, pvc or emptyDir, not %q" .Values.persistence.type) }}
{{- end }}
{{- if le (int .Values.drainTimeoutSeconds) 0 }}
{{- fail "drainTimeoutSeconds must be a positive number of seconds" }}
{{- end }}
{{- $cfg := .Values.config | default dict }}
{{- $owned := dict "drain_timeout_secs" "drainTimeoutSeconds" "gateway_id" "gatewayId" }}
{{- range $key, $instead := $owned }}
{{- if hasKey $cfg $key }}
{{- fail (printf "config.%s is set by the chart; set %s instead" $key $instead) }}
{{- end }}
{{- end }}
{{- $remote := get $cfg "remote_config" | default dict }}
{{- range $key := list "mode" "directory" "config_key" "configmap_name" "namespace" }}
{{- if hasKey $remote $key }}
{{- fail (printf "config.remote_config.%s is set by the chart; set remoteConfig.mode instead (the other remote_config options may stay in config)" $key) }}
{{- end }}
{{- end }}
{{- if hasKey (get $cfg "spool" | default dict) "directory" }}
{{- fail "config.spool.directory is set by the chart (the spool volume); choose the storage with persistence.*" }}
{{- end }}
{{- $http := get $cfg "http" | default dict }}
{{- if or (hasKey $http "port") (hasKey $http "listen_host") }}
{{- fail "config.http.port and config.http.listen_host are set by the chart; set http.port instead" }}
{{- end }}
{{- $mqtt := get $cfg "mqtt" | default dict }}
{{- range $key := list "password_file" "ca_file" "cert_file" "key_file" }}
{{- if hasKey $mqtt $key }}
{{- fail (printf "config.mqtt.%s is set by the chart from a mounted Secret; use secrets.mqttPasswordKey or tls.mqtt.*" $key) }}
{{- end }}
{{- end }}
{{- $kafka := get $cfg "kafka" | default dict }}
{{- range $key := list "sasl_password_file" "ssl_ca_file" "ssl_cert_file" "ssl_key_file" }}
{{- if hasKey $kafka $key }}
{{- fail (printf "config.kafka.%s is set by the chart from a mounted Secret; use secrets.kafkaSaslPasswordKey or tls.kafka.*" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.tls.kafka.secretName (not .Values.configMap.existingName) }}
{{- if not (has (get $kafka "security_protocol" | default "PLAINTEXT") (list "SSL" "SASL_SSL")) }}
{{- fail "tls.kafka.secretName needs config.kafka.security_protocol SSL or SASL_SSL" }}
{{- end }}
{{- end }}
{{- if and .Values.secrets.data (not .Values.secrets.existingSecret) }}
{{- range $key := list .Values.secrets.mqttPasswordKey .Values.secrets.kafkaSaslPasswordKey }}
{{- if and $key (not (hasKey $.Values.secrets.data $key)) }}
{{- fail (printf "secrets.data has no key %q; add it or fix secrets.mqttPasswordKey / secrets.kafkaSaslPasswordKey" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (or .Values.secrets.mqttPasswordKey .Values.secrets.kafkaSaslPasswordKey) (not (include "edge-agent.secretName" .)) }}
{{- fail "secrets.mqttPasswordKey / secrets.kafkaSaslPasswordKey need secrets.existingSecret or secrets.data" }}
{{- end }}
{{- end }}

{{/*
The chart-owned settings, as EDGE_AGENT_* environment variables: they win over agent.yaml and so
always agree with the pod spec (ports, mounts, grace period), even with an existing ConfigMap.
*/}}
{{- define "edge-agent.env" -}}
- name: EDGE_AGENT_GATEWAY_ID
{{- if .Values.gatewayId }}
  value: {{ .Values.gatewayId | quote }}
{{- else }}
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}
{{- if .Values.mqttHostFromNode }}
- name: EDGE_AGENT_MQTT__HOST
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end }}
- name: EDGE_AGENT_DRAIN_TIMEOUT_SECS
  value: {{ .Values.drainTimeoutSeconds | quote }}
- name: EDGE_AGENT_SPOOL__DIRECTORY
  value: {{ printf "%s/spool" (include "edge-agent.dataDir" .) | quote }}
- name: EDGE_AGENT_HTTP__LISTEN_HOST
  value: "0.0.0.0"
- name: EDGE_AGENT_HTTP__PORT
  value: {{ .Values.http.port | quote }}
- name: EDGE_AGENT_REMOTE_CONFIG__MODE
  value: {{ .Values.remoteConfig.mode | quote }}
{{- if eq .Values.remoteConfig.mode "directory" }}
- name: EDGE_AGENT_REMOTE_CONFIG__DIRECTORY
  value: {{ include "edge-agent.configDir" . | quote }}
{{- else if eq .Values.remoteConfig.mode "api" }}
- name: EDGE_AGENT_REMOTE_CONFIG__CONFIGMAP_NAME
  value: {{ include "edge-agent.configMapName" . | quote }}
- name: EDGE_AGENT_REMOTE_CONFIG__NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
{{- $dir := include "edge-agent.secretsDir" . }}
{{- if .Values.secrets.mqttPasswordKey }}
- name: EDGE_AGENT_MQTT__PASSWORD_FILE
  value: {{ printf "%s/mqtt-password" $dir | quote }}
{{- end }}
{{- if .Values.secrets.kafkaSaslPasswordKey }}
- name: EDGE_AGENT_KAFKA__SASL_PASSWORD_FILE
  value: {{ printf "%s/kafka-sasl-password" $dir | quote }}
{{- end }}
{{- with .Values.tls.mqtt }}
{{- if .secretName }}
- name: EDGE_AGENT_MQTT__TLS
  value: "true"
- name: EDGE_AGENT_MQTT__CA_FILE
  value: {{ printf "%s/mqtt/ca.crt" $dir | quote }}
{{- if .clientCert }}
- name: EDGE_AGENT_MQTT__CERT_FILE
  value: {{ printf "%s/mqtt/tls.crt" $dir | quote }}
- name: EDGE_AGENT_MQTT__KEY_FILE
  value: {{ printf "%s/mqtt/tls.key" $dir | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.tls.kafka }}
{{- if .secretName }}
- name: EDGE_AGENT_KAFKA__SSL_CA_FILE
  value: {{ printf "%s/kafka/ca.crt" $dir | quote }}
{{- if .clientCert }}
- name: EDGE_AGENT_KAFKA__SSL_CERT_FILE
  value: {{ printf "%s/kafka/tls.crt" $dir | quote }}
- name: EDGE_AGENT_KAFKA__SSL_KEY_FILE
  value: {{ printf "%s/kafka/tls.key" $dir | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Sources of the projected secrets volume; empty when there is nothing to mount. */}}
{{- define "edge-agent.secretSources" -}}
{{- $secret := include "edge-agent.secretName" . }}
{{- if and $secret (or .Values.secrets.mqttPasswordKey .Values.secrets.kafkaSaslPasswordKey) }}
- secret:
    name: {{ $secret }}
    items:
{{- if .Values.secrets.mqttPasswordKey }}
      - key: {{ .Values.secrets.mqttPasswordKey }}
        path: mqtt-password
{{- end }}
{{- if .Values.secrets.kafkaSaslPasswordKey }}
      - key: {{ .Values.secrets.kafkaSaslPasswordKey }}
        path: kafka-sasl-password
{{- end }}
{{- end }}
{{- range $name := list "mqtt" "kafka" }}
{{- $tls := get $.Values.tls $name }}
{{- if $tls.secretName }}
- secret:
    name: {{ $tls.secretName }}
    items:
      - key: {{ $tls.caKey }}
        path: {{ $name }}/ca.crt
{{- if $tls.clientCert }}
      - key: {{ $tls.certKey }}
        path: {{ $name }}/tls.crt
      - key: {{ $tls.keyKey }}
        path: {{ $name }}/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end }}
