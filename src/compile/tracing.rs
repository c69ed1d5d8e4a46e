//! `[tracing]`: sampling and OpenTelemetry export, over the `OTEL_*` environment variables.

use toml::Spanned;

use super::diags::{Diags, is_http_url};
use crate::config::RawTracing;
use crate::settings::TracingSettings;
use crate::trace::{self, ExportSettings, OtelEnv, Protocol, Ratio, Sampler, SamplerKind};

/// `[tracing]` merged with the environment: each key of the file wins over its variable.
pub(super) fn compile(
    d: &mut Diags<'_>,
    raw: Option<&Spanned<RawTracing>>,
    env: OtelEnv,
) -> TracingSettings {
    for warning in &env.warnings {
        ::tracing::warn!("{warning}");
    }
    let t = raw.map(Spanned::get_ref);
    let pick = |f: fn(&RawTracing) -> &Option<Spanned<String>>| t.and_then(|t| f(t).as_ref());

    let kind = match pick(|t| &t.sampler) {
        Some(v) => SamplerKind::parse(v.get_ref()).unwrap_or_else(|| {
            let names: Vec<&str> = SamplerKind::ALL.iter().map(|(n, _)| *n).collect();
            d.err(
                v.span(),
                "tracing.sampler",
                format!("{:?} must be {}", v.get_ref(), names.join(", ")),
            );
            SamplerKind::ParentBasedAlwaysOn
        }),
        None => env.sampler.unwrap_or(SamplerKind::ParentBasedAlwaysOn),
    };
    let ratio = match t.and_then(|t| t.sampler_ratio.as_ref()) {
        Some(v) => Ratio::new(*v.get_ref()).unwrap_or_else(|| {
            d.err(v.span(), "tracing.sampler_ratio", "must be from 0 to 1");
            Ratio::ONE
        }),
        None => env.sampler_ratio.unwrap_or(Ratio::ONE),
    };
    let sampler = Sampler { kind, ratio };

    let protocol = match pick(|t| &t.protocol) {
        Some(v) => Protocol::parse(v.get_ref()).unwrap_or_else(|| {
            d.err(
                v.span(),
                "tracing.protocol",
                format!("{:?} must be http/protobuf or http/json", v.get_ref()),
            );
            Protocol::HttpProtobuf
        }),
        None => env.protocol.unwrap_or(Protocol::HttpProtobuf),
    };

    let url = match pick(|t| &t.otlp_endpoint) {
        Some(v) if !is_http_url(v.get_ref()) => {
            d.err(
                v.span(),
                "tracing.otlp_endpoint",
                "must be an http(s) URL like http://otel-collector:4318",
            );
            None
        }
        Some(v) if !cfg!(feature = "otlp") => {
            d.err(
                v.span(),
                "tracing.otlp_endpoint",
                "this build has no OTLP export (cargo feature otlp)",
            );
            None
        }
        Some(v) => Some(format!("{}/v1/traces", v.get_ref().trim_end_matches('/'))),
        None if env.traces_endpoint.is_some() && !cfg!(feature = "otlp") => {
            ::tracing::warn!("OTEL_EXPORTER_OTLP_*ENDPOINT ignored: this build has no OTLP export");
            None
        }
        None => env.traces_endpoint,
    };

    // service.name: the file's, OTEL_SERVICE_NAME, service.name in OTEL_RESOURCE_ATTRIBUTES,
    // then jwtgate. Other attributes: the environment's, then the file's over them by key.
    let mut attributes = env.resource_attributes;
    let from_attributes = attributes
        .iter()
        .rposition(|(k, _)| k == "service.name")
        .map(|i| attributes.remove(i).1);
    attributes.retain(|(k, _)| k != "service.name");
    let file_attributes = t.and_then(|t| t.resource_attributes.as_ref());
    for (key, value) in file_attributes
        .map(|a| a.get_ref().iter())
        .into_iter()
        .flatten()
    {
        if key == "service.name" {
            d.err(
                value.span(),
                "tracing.resource_attributes",
                "set service.name with service_name",
            );
            continue;
        }
        attributes.retain(|(k, _)| k != key);
        attributes.push((key.clone(), value.get_ref().clone()));
    }
    let service_name = pick(|t| &t.service_name)
        .map(|v| v.get_ref().clone())
        .or(env.service_name)
        .or(from_attributes)
        .unwrap_or_else(|| "jwtgate".to_owned());
    let mut resource = vec![("service.name".to_owned(), service_name)];
    resource.extend(attributes);
    if !resource.iter().any(|(k, _)| k == "service.version") {
        resource.push((
            "service.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ));
    }

    let max_queue = env.max_queue.unwrap_or(trace::DEFAULT_MAX_QUEUE);
    let export = url.filter(|_| !env.sdk_disabled).map(|url| ExportSettings {
        url,
        protocol,
        headers: env.headers,
        resource,
        max_queue,
        // The batch never exceeds the queue (as OTEL_BSP_MAX_EXPORT_BATCH_SIZE says).
        max_batch: env
            .max_batch
            .unwrap_or(trace::DEFAULT_MAX_BATCH)
            .min(max_queue),
        schedule_delay: env.schedule_delay.unwrap_or(trace::DEFAULT_SCHEDULE_DELAY),
        timeout: env.timeout.unwrap_or(trace::DEFAULT_EXPORT_TIMEOUT),
    });
    TracingSettings { sampler, export }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::tests::GOOD;
    use crate::compile::{ConfigErrors, compile_with_env};
    use crate::settings::Config;

    fn with_env(extra: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        compile_with_env("t.toml", &format!("{GOOD}\n{extra}"), |k| {
            vars.get(k).cloned()
        })
    }

    #[cfg(feature = "otlp")] // without it, nothing is exported
    #[test]
    fn trace_settings_come_from_the_environment_when_the_file_is_silent() {
        let c = with_env("", &[]).unwrap();
        assert_eq!(c.tracing.sampler, Sampler::default());
        assert!(c.tracing.export.is_none(), "no endpoint, no export");

        let c = with_env(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_SERVICE_NAME", "edge"),
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=ignored,env=prod"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=k"),
            ],
        )
        .unwrap();
        assert_eq!(c.tracing.sampler.kind, SamplerKind::TraceIdRatio);
        assert_eq!(c.tracing.sampler.ratio.get(), 0.1);
        let e = c.tracing.export.unwrap();
        assert_eq!(e.url, "http://collector:4318/v1/traces");
        assert_eq!(e.protocol, Protocol::HttpJson);
        assert_eq!(e.headers.len(), 1);
        assert_eq!(e.resource[0], ("service.name".into(), "edge".into()));
        assert!(e.resource.contains(&("env".into(), "prod".into())));
        assert!(e.resource.iter().any(|(k, _)| k == "service.version"));
        assert_eq!(e.max_queue, trace::DEFAULT_MAX_QUEUE);

        // service.name from OTEL_RESOURCE_ATTRIBUTES when nothing else names it.
        let c = with_env(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:1/t"),
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ],
        )
        .unwrap();
        let e = c.tracing.export.unwrap();
        assert_eq!(e.url, "http://c:1/t");
        assert_eq!(e.protocol, Protocol::HttpProtobuf, "the spec's default");
        assert_eq!(e.resource[0].1, "from-attrs");
    }

    #[cfg(feature = "otlp")] // without it, nothing is exported
    #[test]
    fn trace_settings_in_the_file_win_over_the_environment() {
        let file = r#"
[tracing]
otlp_endpoint = "http://file:4318"
protocol = "http/protobuf"
service_name = "from-file"
sampler = "parentbased_traceidratio"
sampler_ratio = 0.5
resource_attributes = { env = "staging", region = "eu" }
"#;
        let c = with_env(
            file,
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://env:1/v1/traces",
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_SERVICE_NAME", "from-env"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.9"),
                ("OTEL_RESOURCE_ATTRIBUTES", "env=prod,team=core"),
            ],
        )
        .unwrap();
        assert_eq!(c.tracing.sampler.kind, SamplerKind::ParentBasedTraceIdRatio);
        assert_eq!(c.tracing.sampler.ratio.get(), 0.5);
        let e = c.tracing.export.unwrap();
        assert_eq!(e.url, "http://file:4318/v1/traces");
        assert_eq!(e.protocol, Protocol::HttpProtobuf);
        assert_eq!(e.resource[0].1, "from-file");
        let get = |key: &str| {
            e.resource
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("env"), Some("staging"), "the file's value, key by key");
        assert_eq!(get("team"), Some("core"));
        assert_eq!(get("region"), Some("eu"));

        // The environment fills what the file leaves out.
        let c = with_env(
            "[tracing]\nsampler = \"traceidratio\"\n",
            &[
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ],
        )
        .unwrap();
        assert_eq!(c.tracing.sampler.ratio.get(), 0.25);
        assert_eq!(c.tracing.export.unwrap().url, "http://env:4318/v1/traces");

        // OTEL_SDK_DISABLED is the off switch, even for the file's endpoint.
        let c = with_env(file, &[("OTEL_SDK_DISABLED", "true")]).unwrap();
        assert!(c.tracing.export.is_none());
    }

    #[test]
    fn trace_settings_errors_in_the_file_point_at_the_spot() {
        let errors = with_env(
            r#"
[tracing]
sampler = "sometimes"
sampler_ratio = 2.0
protocol = "grpc"
otlp_endpoint = "collector:4318"
resource_attributes = { "service.name" = "x" }
"#,
            // Unknown values in the environment are warnings, not errors.
            &[("OTEL_TRACES_SAMPLER", "sometimes")],
        )
        .unwrap_err()
        .0;
        let joined = errors.join("\n");
        for key in [
            "tracing.sampler: \"sometimes\" must be always_on",
            "tracing.sampler_ratio: must be from 0 to 1",
            "tracing.protocol",
            "tracing.otlp_endpoint",
            "tracing.resource_attributes: set service.name with service_name",
        ] {
            assert!(joined.contains(key), "{key} in {joined}");
        }
        assert!(errors.iter().all(|e| e.starts_with("t.toml:")), "{joined}");
        assert!(with_env("", &[("OTEL_TRACES_SAMPLER", "sometimes")]).is_ok());
    }
}
