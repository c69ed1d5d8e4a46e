//! Every `[[aws_credentials]]` source of a config, by name. A reload builds a new set but keeps
//! each source whose settings did not change, so its cached credentials (and its users'
//! `IdentityId`s) survive, as the key stores of unchanged issuers do.

use std::collections::HashMap;
use std::sync::Arc;

use super::settings::SourceSettings;
use super::source::CredentialSource;
use crate::metrics::Metrics;

/// The configured sources, by name.
#[derive(Debug, Default, Clone)]
pub struct CredentialSources {
    by_name: HashMap<Arc<str>, Arc<CredentialSource>>,
}

impl CredentialSources {
    /// Fresh sources for `settings`. Fails only when an HTTP client cannot start.
    pub fn new(
        settings: &[SourceSettings],
        metrics: &Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        Self::default().reload(settings, metrics)
    }

    /// The sources for `settings`, reusing this set's source of the same name when its
    /// settings are identical.
    pub fn reload(
        &self,
        settings: &[SourceSettings],
        metrics: &Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let mut by_name = HashMap::with_capacity(settings.len());
        for s in settings {
            let source = match self.by_name.get(&s.name) {
                Some(old) if old.settings() == s => Arc::clone(old),
                _ => Arc::new(CredentialSource::new(s.clone(), Arc::clone(metrics))?),
            };
            by_name.insert(Arc::clone(&s.name), source);
        }
        Ok(CredentialSources { by_name })
    }

    /// The source named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<CredentialSource>> {
        self.by_name.get(name)
    }

    /// How many sources there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::settings::{DEFAULT_REFRESH_MARGIN, DEFAULT_TIMEOUT, Gateway, SourceKind};

    fn gateway(name: &str, sts: Option<&str>) -> SourceSettings {
        SourceSettings {
            name: name.into(),
            kind: SourceKind::Gateway(Gateway {
                sts_endpoint: sts.map(str::to_owned),
            }),
            timeout: DEFAULT_TIMEOUT,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            cache_max_bytes: 1 << 20,
        }
    }

    #[test]
    fn reload_keeps_unchanged_sources() {
        let metrics = Arc::new(Metrics::new());
        let first = CredentialSources::new(
            &[
                gateway("a", None),
                gateway("b", None),
                gateway("gone", None),
            ],
            &metrics,
        )
        .unwrap();
        assert_eq!(first.len(), 3);
        let second = first
            .reload(
                &[
                    gateway("a", None),
                    gateway("b", Some("http://127.0.0.1:1/")),
                ],
                &metrics,
            )
            .unwrap();
        assert_eq!(second.len(), 2);
        assert!(Arc::ptr_eq(
            first.get("a").unwrap(),
            second.get("a").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            first.get("b").unwrap(),
            second.get("b").unwrap()
        ));
        assert!(second.get("gone").is_none());
        assert!(CredentialSources::default().is_empty());
    }
}
