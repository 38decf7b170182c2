//! The resource every signal carries: who emitted it, where.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

/// Downward-API environment variables and the resource attributes they
/// become (set them in the pod spec from `metadata.name`,
/// `metadata.namespace` and `spec.nodeName`).
pub const KUBERNETES_ENV: [(&str, &str); 3] = [
    ("POD_NAME", "k8s.pod.name"),
    ("POD_NAMESPACE", "k8s.namespace.name"),
    ("NODE_NAME", "k8s.node.name"),
];

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The resource of a process running `service` (e.g. `testbed-ingest`).
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` still apply (the SDK's
/// environment detectors run first; `service` is only the default name).
pub fn build(service: &str) -> Resource {
    let host = host_name();
    let mut attributes = vec![
        KeyValue::new("service.version", testbed_build_info::VERSION),
        KeyValue::new(
            "service.instance.id",
            format!("{host}-{}", std::process::id()),
        ),
        KeyValue::new("host.name", host),
        KeyValue::new("host.arch", testbed_build_info::arch()),
        KeyValue::new("os.type", std::env::consts::OS),
        KeyValue::new("vcs.revision", testbed_build_info::GIT_REVISION),
    ];
    for (var, key) in KUBERNETES_ENV {
        if let Ok(value) = std::env::var(var)
            && !value.is_empty()
        {
            attributes.push(KeyValue::new(key, value));
        }
    }
    let builder = Resource::builder().with_attributes(attributes);
    // An explicit OTEL_SERVICE_NAME wins over the role's default name.
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|n| !n.is_empty()) {
        builder.build()
    } else {
        builder.with_service_name(service.to_owned()).build()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::Key;

    use super::*;

    /// The resource names the service, version, host and architecture.
    #[test]
    fn resource_has_service_host_and_arch() {
        let r = build("testbed-query");
        let get = |k: &'static str| r.get(&Key::from_static_str(k)).map(|v| v.to_string());
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            assert_eq!(get("service.name").as_deref(), Some("testbed-query"));
        }
        assert_eq!(
            get("service.version").as_deref(),
            Some(testbed_build_info::VERSION)
        );
        assert_eq!(
            get("host.arch").as_deref(),
            Some(testbed_build_info::arch())
        );
        assert!(get("host.name").is_some() && get("service.instance.id").is_some());
    }
}
