//! Just enough XML for STS's query-API answers: the text of the first element with a given
//! name. STS answers are small, flat and machine-written (no CDATA, comments or attributes on
//! the elements read here); anything else is treated as absent, never guessed.

/// The unescaped text of the first `<tag>…</tag>` in `doc`, `None` when missing or not text.
pub(crate) fn text(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = doc.find(&open)? + open.len();
    let len = doc[start..].find(&close)?;
    let raw = &doc[start..start + len];
    if raw.contains('<') {
        return None;
    }
    unescape(raw)
}

/// XML's five predefined entities and numeric references; `None` for anything else.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';')?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(n)?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sts_answers() {
        let doc = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>AQoE&amp;x+/=</SessionToken>
      <SecretAccessKey>wJal/K7</SecretAccessKey>
      <Expiration>2026-11-30T13:00:00Z</Expiration>
      <AccessKeyId>ASIA1</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        assert_eq!(text(doc, "SessionToken").as_deref(), Some("AQoE&x+/="));
        assert_eq!(text(doc, "AccessKeyId").as_deref(), Some("ASIA1"));
        assert_eq!(text(doc, "Credentials"), None);
        assert_eq!(text(doc, "Missing"), None);
        assert_eq!(text("<a>&#65;&#x42;&lt;</a>", "a").as_deref(), Some("AB<"));
        assert_eq!(text("<a>&bogus;</a>", "a"), None);
        assert_eq!(text("<a>unterminated", "a"), None);
    }
}
