//! `[paths]`: how request paths are normalised and route patterns matched.

use super::diags::Diags;
use crate::config::RawPaths;
use crate::routes::{PathOptions, Semicolons};

/// `[paths]`, checked.
pub(super) fn compile(d: &mut Diags<'_>, p: &RawPaths) -> PathOptions {
    PathOptions {
        semicolons: d.choice(
            &p.semicolons,
            "paths.semicolons",
            &[("reject", Semicolons::Reject), ("allow", Semicolons::Allow)],
            Semicolons::Reject,
        ),
        case_insensitive: p.case_insensitive.as_ref().is_some_and(|c| *c.get_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::compile::tests::GOOD;

    #[test]
    fn paths_options_default_strict_and_are_checked() {
        let c = compile("good.toml", GOOD).unwrap();
        assert_eq!(c.paths, PathOptions::default());
        assert!(
            c.describe()
                .contains("paths  semicolons=reject  case_insensitive=false")
        );
        let text = format!("{GOOD}\n[paths]\nsemicolons = \"allow\"\ncase_insensitive = true\n");
        let c = compile("good.toml", &text).unwrap();
        assert_eq!(c.paths.semicolons, Semicolons::Allow);
        assert!(c.paths.case_insensitive);
        assert!(
            c.describe()
                .contains("paths  semicolons=allow  case_insensitive=true")
        );

        let bad = format!("{GOOD}\n[paths]\nsemicolons = \"strip\"\n");
        let errors = compile("bad.toml", &bad).unwrap_err().0;
        let line = bad
            .lines()
            .position(|l| l.starts_with("semicolons"))
            .unwrap()
            + 1;
        assert_eq!(
            errors,
            [format!(
                "bad.toml:{line}:14: paths.semicolons: \"strip\" must be reject, allow"
            )]
        );
        let errors = compile(
            "bad.toml",
            &format!("{GOOD}\n[paths]\ncase_insensitive = 1\n"),
        )
        .unwrap_err()
        .0;
        assert!(errors[0].contains("invalid type"), "{errors:?}");

        // A pattern with a ';' is refused in either mode.
        for mode in ["reject", "allow"] {
            let text = format!(
                "{GOOD}\n[[routes]]\npath = \"/a;b\"\nauth = \"none\"\n[paths]\nsemicolons = \"{mode}\"\n"
            );
            let errors = compile("x.toml", &text).unwrap_err().0;
            assert!(
                errors[0].contains("routes[2].path: \"/a;b\" must not contain ';'"),
                "{errors:?}"
            );
        }
    }
}
