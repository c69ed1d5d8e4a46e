//! Secrets (a client secret, cookie keys, a Redis URL): from an environment variable or a file,
//! not both, and never in a message or a log.

use std::ops::Range;

use toml::Spanned;

use super::diags::Diags;
use crate::login::Redacted;

/// Where a secret may be given instead of `{key}_env`.
pub(super) enum Or<'a> {
    /// `{key}_file`: a file holding it (white space around it is dropped).
    File(&'a Option<Spanned<String>>),
    /// `{key}`: the value written in the config (a URL whose password can go in the variable).
    Value(&'a Option<Spanned<String>>),
}

/// A secret as read, with the key it came from (problems with its value are reported there).
#[derive(Debug)]
pub(super) struct Secret {
    /// The value.
    pub value: Redacted<String>,
    /// The key that gave it: `{key}_env`, `{key}_file` or `{key}`.
    pub key: String,
    /// That key's span.
    pub span: Range<usize>,
}

/// The secret under `key`, from the environment variable `{key}_env` names, or as `or` says.
/// `None` when neither is given, or when it cannot be read (reported); an empty value is
/// reported as missing unless `allow_empty`.
pub(super) fn read(
    d: &mut Diags<'_>,
    key: &str,
    env: &Option<Spanned<String>>,
    or: Or<'_>,
    allow_empty: bool,
) -> Option<Secret> {
    let env_key = format!("{key}_env");
    let (other, other_key, from_file) = match or {
        Or::File(v) => (v, format!("{key}_file"), true),
        Or::Value(v) => (v, key.to_owned(), false),
    };
    if let (Some(_), Some(o)) = (env, other) {
        // The keys as the table lists them: `{name}`, `{name}_env`, `{name}_file`.
        let name = |k: &str| k.rsplit_once('.').map_or(k, |(_, n)| n).to_owned();
        let (first, second) = if from_file {
            (name(&env_key), name(&other_key))
        } else {
            (name(&other_key), name(&env_key))
        };
        d.err(
            o.span(),
            &other_key,
            format!("give {first} or {second}, not both"),
        );
        return None;
    }
    if let Some(var) = env {
        return match std::env::var(var.get_ref()) {
            Ok(value) if allow_empty || !value.is_empty() => Some(Secret {
                value: Redacted(value),
                key: env_key,
                span: var.span(),
            }),
            _ => {
                d.err(
                    var.span(),
                    env_key,
                    format!("environment variable {} is not set", var.get_ref()),
                );
                None
            }
        };
    }
    let o = other.as_ref()?;
    let value = if from_file {
        match std::fs::read_to_string(o.get_ref()) {
            Ok(text) => text.trim().to_owned(),
            Err(e) => {
                d.err(
                    o.span(),
                    other_key,
                    format!("cannot read {}: {e}", o.get_ref()),
                );
                return None;
            }
        }
    } else {
        o.get_ref().clone()
    };
    if value.is_empty() && !allow_empty {
        d.err(o.span(), other_key, "is empty");
        return None;
    }
    Some(Secret {
        value: Redacted(value),
        key: other_key,
        span: o.span(),
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Keys {
        x: Option<Spanned<String>>,
        x_env: Option<Spanned<String>>,
        x_file: Option<Spanned<String>>,
    }

    /// `read` of `t.x` from a table with the keys `x`, `x_env` and `x_file`.
    fn read_from(text: &str, value: bool, allow_empty: bool) -> (Option<Secret>, Vec<String>) {
        let keys: Keys = toml::from_str(text).unwrap();
        let mut d = Diags::new("t.toml", text);
        let or = if value {
            Or::Value(&keys.x)
        } else {
            Or::File(&keys.x_file)
        };
        let secret = read(&mut d, "t.x", &keys.x_env, or, allow_empty);
        (secret, d.finish().0)
    }

    #[test]
    fn from_a_file_trimmed_or_a_variable_and_never_shown() {
        let path = std::env::temp_dir().join(format!("jwtgate-secret-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "  s3cret\n").unwrap();
        let text = format!("x_file = {:?}\n", path.display().to_string());
        let (secret, errors) = read_from(&text, false, false);
        let secret = secret.unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(secret.value.0, "s3cret");
        assert_eq!((secret.key.as_str(), secret.span.start), ("t.x_file", 9));
        assert!(!format!("{secret:?}").contains("s3cret"));

        std::fs::write(&path, " \n").unwrap();
        let (secret, errors) = read_from(&text, false, false);
        assert!(secret.is_none());
        assert_eq!(errors, ["t.toml:1:10: t.x_file: is empty"]);
        let (secret, errors) = read_from(&text, false, true);
        assert_eq!(secret.unwrap().value.0, "", "{errors:?}");
        std::fs::remove_file(&path).unwrap();
        let (secret, errors) = read_from(&text, false, false);
        assert!(secret.is_none());
        assert!(
            errors[0].starts_with(&format!(
                "t.toml:1:10: t.x_file: cannot read {}: ",
                path.display()
            )),
            "{errors:?}"
        );

        // PATH is set wherever the tests run.
        let (secret, errors) = read_from("x_env = \"PATH\"\n", false, false);
        let secret = secret.unwrap();
        assert_eq!(secret.value.0, std::env::var("PATH").unwrap(), "{errors:?}");
        assert_eq!(secret.key, "t.x_env");
        let (secret, errors) = read_from("x_env = \"JWTGATE_TEST_NOT_SET\"\n", false, false);
        assert!(secret.is_none());
        assert_eq!(
            errors,
            ["t.toml:1:9: t.x_env: environment variable JWTGATE_TEST_NOT_SET is not set"]
        );

        let (secret, errors) = read_from("x = \"redis://h\"\n", true, true);
        assert_eq!(secret.unwrap().key, "t.x", "{errors:?}");
        let (secret, errors) = read_from("\n", true, true);
        assert!(secret.is_none() && errors.is_empty());
    }

    #[test]
    fn not_both_is_said_at_the_second_key_naming_them_in_table_order() {
        let (secret, errors) = read_from("x_env = \"PATH\"\nx_file = \"f\"\n", false, false);
        assert!(secret.is_none());
        assert_eq!(
            errors,
            ["t.toml:2:10: t.x_file: give x_env or x_file, not both"]
        );
        let (secret, errors) = read_from("x = \"v\"\nx_env = \"NOT_SET\"\n", true, true);
        assert!(secret.is_none());
        assert_eq!(errors, ["t.toml:1:5: t.x: give x or x_env, not both"]);
    }
}
