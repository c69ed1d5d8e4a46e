//! `[policies]` and `[[policy_sets]]`: Cedar policy files, their schema, and the routes that
//! opt in with `policy = …`. Problems in a policy or schema file are reported at that file's
//! `line:col`, with the policy id.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use cedar_policy::{PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode, Validator};
use miette::Diagnostic;
use toml::Spanned;

use super::diags::Diags;
use crate::config::{PolicyChoice, RawPolicies, RawRoute};
use crate::policy::{self, DEFAULT_CACHE_ENTRIES, PolicyStore, StoreParts};

/// The set `[policies]` compiles to, and `policy = true` names.
pub const DEFAULT_SET: &str = "default";

/// Every policy set: `[policies]` (named `default`) first, then `[[policy_sets]]`.
pub(super) fn compile(
    d: &mut Diags<'_>,
    default: Option<&Spanned<RawPolicies>>,
    named: &[Spanned<RawPolicies>],
) -> Vec<Arc<PolicyStore>> {
    let base = Path::new(d.file())
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut stores = Vec::new();
    let mut names = HashSet::new();
    if let Some(raw) = default {
        if let Some(name) = &raw.get_ref().name {
            d.err(
                name.span(),
                "policies.name",
                "[policies] is the set named \"default\"; name [[policy_sets]] instead",
            );
        }
        names.insert(DEFAULT_SET.to_owned());
        stores.extend(set(d, "policies", DEFAULT_SET, raw.get_ref(), &base));
    }
    for (i, raw) in named.iter().enumerate() {
        let key = format!("policy_sets[{i}]");
        let Some(name) = &raw.get_ref().name else {
            d.err(raw.span(), format!("{key}.name"), "missing");
            continue;
        };
        let text = name.get_ref();
        if text.is_empty() || !names.insert(text.clone()) {
            d.err(
                name.span(),
                format!("{key}.name"),
                format!("{text:?} is empty or names another set (\"default\" is [policies])"),
            );
            continue;
        }
        stores.extend(set(d, &key, text, raw.get_ref(), &base));
    }
    stores
}

/// The names of the configured sets, whether they compiled or not.
pub(super) fn names<'a>(
    default: Option<&Spanned<RawPolicies>>,
    named: &'a [Spanned<RawPolicies>],
) -> HashSet<&'a str> {
    let mut names: HashSet<&str> = named
        .iter()
        .filter_map(|s| s.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    if default.is_some() {
        names.insert(DEFAULT_SET);
    }
    names
}

/// A configured file name, relative to the config file's directory.
fn resolve(base: &Path, name: &str) -> PathBuf {
    let path = Path::new(name);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// One set: its files read, parsed, named and validated.
fn set(
    d: &mut Diags<'_>,
    key: &str,
    name: &str,
    raw: &RawPolicies,
    base: &Path,
) -> Option<Arc<PolicyStore>> {
    let before = d.count();
    let namespace = raw
        .namespace
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_default();
    if policy::Types::new(&namespace).is_none() {
        let span = raw.namespace.as_ref().map_or(0..0, Spanned::span);
        d.err(
            span,
            format!("{key}.namespace"),
            format!("{namespace:?} is not a Cedar namespace (like PetStore or Acme::Api)"),
        );
    }
    let application = raw
        .application
        .as_ref()
        .map_or_else(|| namespace.clone(), |a| a.get_ref().clone());
    let cache_entries = raw
        .cache_entries
        .as_ref()
        .map_or(DEFAULT_CACHE_ENTRIES, |c| *c.get_ref());
    if let Some(c) = raw
        .cache_entries
        .as_ref()
        .filter(|c| *c.get_ref() > 10_000_000)
    {
        d.err(
            c.span(),
            format!("{key}.cache_entries"),
            "must be at most 10000000",
        );
    }
    let mut files = Vec::new();
    let (schema, user_attributes) = match &raw.schema {
        None => (None, None),
        Some(file) => {
            let path = resolve(base, file.get_ref());
            files.push(path.clone());
            schema(d, key, &path, file.span(), &namespace)
        }
    };
    let mut policies = PolicySet::new();
    // Where each policy came from: (file shown in messages, its text).
    let mut origin: HashMap<PolicyId, usize> = HashMap::new();
    let mut sources: Vec<(String, String)> = Vec::new();
    if raw.files.get_ref().is_empty() {
        d.err(raw.files.span(), format!("{key}.files"), "lists no file");
    }
    for pattern in raw.files.get_ref() {
        let path = resolve(base, pattern.get_ref());
        files.push(path.clone());
        let found = match policy::expand(&path) {
            Ok(found) if found.is_empty() => Err("matches no file".to_owned()),
            Ok(found) => Ok(found),
            Err(e) => Err(e.to_string()),
        };
        let found = match found {
            Ok(found) => found,
            Err(reason) => {
                d.err(
                    pattern.span(),
                    format!("{key}.files"),
                    format!("{}: {reason}", path.display()),
                );
                continue;
            }
        };
        for file in found {
            let shown = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) => {
                    d.err(
                        pattern.span(),
                        format!("{key}.files"),
                        format!("{shown}: {e}"),
                    );
                    continue;
                }
            };
            let index = sources.len();
            read_policies(
                d,
                key,
                &shown,
                &text,
                &file,
                &mut policies,
                &mut origin,
                index,
            );
            sources.push((shown, text));
        }
    }
    if let Some(schema) = &schema {
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id();
            let at = origin.get(id).and_then(|i| sources.get(*i));
            let (file, text) = at.map_or(("?", ""), |(f, t)| (f.as_str(), t.as_str()));
            d.err_in(
                file,
                text,
                first_offset(e),
                format!("{key}: policy {id}"),
                e,
            );
        }
    }
    if d.count() > before {
        return None;
    }
    PolicyStore::new(StoreParts {
        name: Arc::from(name),
        namespace,
        application,
        policies,
        schema,
        user_attributes,
        files,
        cache_entries,
    })
    .map(Arc::new)
}

/// The byte offset of a Cedar error's first label (0 when it has none).
fn first_offset(e: &dyn Diagnostic) -> usize {
    e.labels()
        .and_then(|mut labels| labels.next())
        .map_or(0, |l| l.offset())
}

/// Parses one policy file into `policies`: each policy named by its `@id("…")` annotation,
/// else `<file name>#<index in the file>`.
#[allow(clippy::too_many_arguments)]
fn read_policies(
    d: &mut Diags<'_>,
    key: &str,
    shown: &str,
    text: &str,
    file: &Path,
    policies: &mut PolicySet,
    origin: &mut HashMap<PolicyId, usize>,
    index: usize,
) {
    let parsed = match PolicySet::from_str(text) {
        Ok(parsed) => parsed,
        Err(errors) => {
            for e in errors.iter() {
                d.err_in(shown, text, first_offset(e), key, e);
            }
            return;
        }
    };
    if parsed.templates().next().is_some() {
        d.err_in(
            shown,
            text,
            0,
            key,
            "policy templates (?principal, ?resource) are not supported",
        );
    }
    let stem = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    // Cedar numbers a file's policies policy0, policy1, … in order.
    let mut numbered: Vec<_> = parsed.policies().collect();
    numbered.sort_by_key(|p| {
        let id: &str = p.id().as_ref();
        id.strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    let mut seen_here: HashMap<String, usize> = HashMap::new();
    for (n, policy) in numbered.into_iter().enumerate() {
        let id = policy
            .annotation("id")
            .map_or_else(|| format!("{stem}#{n}"), str::to_owned);
        let id = PolicyId::new(id);
        let renamed = policy.new_id(id.clone());
        // Occurrences of this id in the file so far: the duplicate is the next one.
        let seen = seen_here.entry(id.to_string()).or_insert(0usize);
        *seen += 1;
        if policies.add(renamed).is_err() {
            let needle = format!("\"{id}\"");
            let offset = text
                .match_indices(&needle)
                .nth(*seen - 1)
                .map_or(0, |(at, _)| at);
            d.err_in(
                shown,
                text,
                offset,
                format!("{key}: policy {id}"),
                "another policy has this id",
            );
            continue;
        }
        origin.insert(id, index);
    }
}

/// Reads the schema (Cedar format, or JSON for `.json`) and the attributes it declares for
/// the namespace's `User` type.
fn schema(
    d: &mut Diags<'_>,
    key: &str,
    path: &Path,
    span: std::ops::Range<usize>,
    namespace: &str,
) -> (Option<Schema>, Option<HashSet<String>>) {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            d.err(span, format!("{key}.schema"), format!("{shown}: {e}"));
            return (None, None);
        }
    };
    let json = path.extension().is_some_and(|e| e == "json");
    let parsed = if json {
        SchemaFragment::from_json_str(&text)
            .map_err(|e| (first_offset(&e), e.to_string()))
            .and_then(|f| {
                let schema = Schema::from_schema_fragments([f.clone()])
                    .map_err(|e| (first_offset(&e), e.to_string()))?;
                Ok((schema, f))
            })
    } else {
        SchemaFragment::from_cedarschema_str(&text)
            .map_err(|e| (first_offset(&e), e.to_string()))
            .and_then(|(f, _)| {
                let schema = Schema::from_schema_fragments([f.clone()])
                    .map_err(|e| (first_offset(&e), e.to_string()))?;
                Ok((schema, f))
            })
    };
    match parsed {
        Ok((schema, fragment)) => {
            let attributes = fragment
                .to_json_value()
                .ok()
                .map(|v| user_attributes(&v, namespace));
            (Some(schema), attributes)
        }
        Err((offset, reason)) => {
            d.err_in(&shown, &text, offset, format!("{key}.schema"), reason);
            (None, None)
        }
    }
}

/// The attribute names a JSON schema declares for `<namespace>::User`.
fn user_attributes(schema: &serde_json::Value, namespace: &str) -> HashSet<String> {
    schema
        .get(namespace)
        .and_then(|ns| ns.get("entityTypes"))
        .and_then(|types| types.get("User"))
        .and_then(|user| user.get("shape"))
        .and_then(|shape| shape.get("attributes"))
        .and_then(serde_json::Value::as_object)
        .map(|attrs| attrs.keys().cloned().collect())
        .unwrap_or_default()
}

/// Each route's `policy`: the set it names must exist, and it must authenticate someone.
pub(super) fn routes(
    d: &mut Diags<'_>,
    raw: &[Spanned<RawRoute>],
    stores: &[Arc<PolicyStore>],
    configured: &HashSet<&str>,
    routes: &mut crate::routes::Router<crate::settings::Route>,
) {
    let mut chosen: HashMap<usize, usize> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let Some(choice) = &r.get_ref().policy else {
            continue;
        };
        let name = match choice.get_ref() {
            PolicyChoice::On(false) => continue,
            PolicyChoice::On(true) => DEFAULT_SET,
            PolicyChoice::Named(name) => name.as_str(),
        };
        let key = format!("routes[{i}].policy");
        if r.get_ref()
            .auth
            .as_ref()
            .is_some_and(|a| a.get_ref() == "none")
        {
            d.err(
                choice.span(),
                &key,
                "needs a caller: not with auth = \"none\"",
            );
            continue;
        }
        match stores.iter().position(|s| &*s.name == name) {
            Some(set) => {
                chosen.insert(i, set);
            }
            // A set that failed to compile said why already.
            None if configured.contains(name) => {}
            None if name == DEFAULT_SET => {
                d.err(choice.span(), &key, "true needs a [policies] table");
            }
            None => d.err(
                choice.span(),
                &key,
                format!("no [[policy_sets]] is named {name:?}"),
            ),
        }
    }
    // Routes were compiled in file order, skipping none when there are no errors.
    if d.count() > 0 {
        return;
    }
    // Actions are named with the route's path as API Gateway writes it (`/files/{proxy+}` for
    // `/files/**`), as AVP's API-linked stores name them.
    let templates: Vec<String> = routes
        .iter()
        .map(|(pattern, _, _)| pattern.api_gateway_path())
        .collect();
    for ((i, route), template) in routes.routes_mut().enumerate().zip(templates) {
        if let Some(set) = chosen.get(&i) {
            route.policy = Some(crate::settings::RoutePolicy {
                set: *set,
                template: Arc::from(template),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::compile::compile;

    /// A directory with `files` in it, and a config file name inside it.
    fn dir(name: &str, files: &[(&str, &str)]) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!(
            "jwtgate-compile-policies-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        let config = dir.join("jwtgate.toml").display().to_string();
        (dir, config)
    }

    const HEAD: &str = r#"[upstream]
url = "http://127.0.0.1:3000"

[[issuers]]
issuer = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC"
audiences = ["client"]
"#;

    #[test]
    fn policy_ids_come_from_id_annotations_or_the_file_and_must_be_unique() {
        let (d, config) = dir(
            "ids",
            &[(
                "a.cedar",
                "@id(\"same\")\npermit (principal, action, resource);\n\
                 permit (principal, action, resource);\n\
                 @id(\"same\")\nforbid (principal, action, resource);\n",
            )],
        );
        let text = format!(
            "{HEAD}\n[[routes]]\npath = \"/x\"\npolicy = true\n\n[policies]\nfiles = [\"a.cedar\"]\n"
        );
        let errors = compile(&config, &text).unwrap_err().0;
        let file = d.join("a.cedar").display().to_string();
        assert_eq!(
            errors,
            [format!(
                "{file}:4:5: policies: policy same: another policy has this id"
            )]
        );
        std::fs::write(
            d.join("a.cedar"),
            "@id(\"one\")\npermit (principal, action, resource);\npermit (principal, action, resource);\n",
        )
        .unwrap();
        let config = compile(&config, &text).unwrap();
        let mut ids: Vec<String> = config.policies[0]
            .policies
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        assert_eq!(ids, ["a.cedar#1", "one"]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn route_and_table_mistakes_are_reported_at_their_keys() {
        let (d, config) = dir(
            "keys",
            &[("a.cedar", "permit (principal, action, resource);\n")],
        );
        let text = format!(
            r#"{HEAD}
[[routes]]
path = "/open"
auth = "none"
policy = true

[[routes]]
path = "/x"
policy = true

[policies]
name = "main"
files = ["a.cedar"]
namespace = "not a name"

[[policy_sets]]
name = "default"
files = ["a.cedar"]

[[policy_sets]]
files = ["a.cedar"]
"#
        );
        let errors = compile(&config, &text).unwrap_err().0.join("\n");
        for want in [
            ":11:10: routes[0].policy: needs a caller: not with auth = \"none\"",
            ":18:8: policies.name: [policies] is the set named \"default\"",
            ":20:13: policies.namespace: \"not a name\" is not a Cedar namespace",
            ":23:8: policy_sets[0].name: \"default\" is empty or names another set",
            "policy_sets[1].name: missing",
        ] {
            assert!(errors.contains(want), "{want}\n{errors}");
        }
        let _ = std::fs::remove_dir_all(d);
    }
}
