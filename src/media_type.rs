//! `Content-Type` parsing (RFC 9110 §8.3.1): `type/subtype *( ; name=value )`
//! with case-insensitive type and parameter names and quoted-string values.

/// The three body formats the token endpoint accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Form,
    Json,
    Multipart { boundary: String },
}

impl BodyFormat {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Form => "application/x-www-form-urlencoded",
            Self::Json => "application/json",
            Self::Multipart { .. } => "multipart/form-data",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaTypeError {
    Malformed,
    Unsupported,
    MissingBoundary,
    BadBoundary,
    UnsupportedCharset,
    /// A parameter given twice (RFC 6838 §4.3): two readings, so none.
    RepeatedParameter,
}

impl MediaTypeError {
    pub fn description(self) -> &'static str {
        match self {
            Self::Malformed => "the Content-Type header is malformed",
            Self::Unsupported => {
                "Content-Type must be application/x-www-form-urlencoded, application/json or multipart/form-data"
            }
            Self::MissingBoundary => "multipart/form-data requires a boundary parameter",
            Self::BadBoundary => "the multipart boundary is invalid",
            Self::UnsupportedCharset => "only the UTF-8 charset is supported",
            Self::RepeatedParameter => "a Content-Type parameter must not be repeated",
        }
    }
}

pub fn parse(header: &str) -> Result<BodyFormat, MediaTypeError> {
    // The forms clients send, bare: what the general reading below returns
    // for them, without its allocations.
    let bare = header.trim();
    if bare.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Ok(BodyFormat::Form);
    }
    if bare.eq_ignore_ascii_case("application/json") {
        return Ok(BodyFormat::Json);
    }
    let mut rest = bare;
    let end = rest.find(';').unwrap_or(rest.len());
    let essence = rest[..end].trim().to_ascii_lowercase();
    rest = &rest[end..];
    let Some((ty, sub)) = essence.split_once('/') else {
        return Err(MediaTypeError::Malformed);
    };
    if !is_token(ty) || !is_token(sub) {
        return Err(MediaTypeError::Malformed);
    }
    let mut boundary = None;
    let mut seen: Vec<String> = Vec::new();
    while let Some(after) = rest.strip_prefix(';') {
        let after = after.trim_start();
        if after.is_empty() {
            rest = after; // a trailing ';' is common and harmless
            break;
        }
        let eq = after.find('=').ok_or(MediaTypeError::Malformed)?;
        let name = after[..eq].trim().to_ascii_lowercase();
        if !is_token(&name) {
            return Err(MediaTypeError::Malformed);
        }
        let (value, tail) = parse_value(&after[eq + 1..])?;
        if seen.contains(&name) {
            return Err(MediaTypeError::RepeatedParameter);
        }
        match name.as_str() {
            "charset" if !matches!(value.to_ascii_lowercase().as_str(), "utf-8" | "utf8" | "us-ascii") => {
                return Err(MediaTypeError::UnsupportedCharset)
            }
            "boundary" => boundary = Some(value),
            _ => {}
        }
        seen.push(name);
        rest = tail.trim_start();
    }
    if !rest.is_empty() {
        return Err(MediaTypeError::Malformed);
    }
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(BodyFormat::Form),
        "application/json" => Ok(BodyFormat::Json),
        "multipart/form-data" => {
            let boundary = boundary.ok_or(MediaTypeError::MissingBoundary)?;
            // RFC 2046 §5.1.1: 1 to 70 characters, no trailing space.
            if boundary.is_empty() || boundary.len() > 70 || boundary.ends_with(' ') || boundary.contains(['\r', '\n'])
            {
                return Err(MediaTypeError::BadBoundary);
            }
            Ok(BodyFormat::Multipart { boundary })
        }
        _ => Err(MediaTypeError::Unsupported),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A token or a quoted-string, and what follows it.
// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
fn parse_value(s: &str) -> Result<(String, &str), MediaTypeError> {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &inner[i + 1..])),
                '\\' => out.push(chars.next().ok_or(MediaTypeError::Malformed)?.1),
                c => out.push(c),
            }
        }
        Err(MediaTypeError::Malformed)
    } else {
        let end = s.find(';').unwrap_or(s.len());
        let v = s[..end].trim_end();
        if !is_token(v) {
            return Err(MediaTypeError::Malformed);
        }
        Ok((v.to_owned(), &s[end..]))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// The bare forms' shortcut answers what the general reading does (a
    /// trailing `;` takes the general path and changes nothing).
    #[test]
    fn bare_forms_read_as_the_general_reading() {
        for ct in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-URLEncoded",
            " application/json\t",
            "APPLICATION/JSON",
            "application/jsonx",
            "application/ json",
            "text/plain",
        ] {
            assert_eq!(parse(ct), parse(&format!("{ct};")), "{ct:?}");
        }
        assert_eq!(parse("Application/JSON"), Ok(BodyFormat::Json));
        assert_eq!(parse("application/ json"), Err(MediaTypeError::Malformed));
    }

    #[test]
    fn accepted() {
        assert_eq!(parse("application/x-www-form-urlencoded"), Ok(BodyFormat::Form));
        assert_eq!(parse("Application/JSON; charset=UTF-8"), Ok(BodyFormat::Json));
        assert_eq!(parse("application/x-www-form-urlencoded;charset=utf-8;"), Ok(BodyFormat::Form));
        assert_eq!(
            parse("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW"),
            Ok(BodyFormat::Multipart { boundary: "----WebKitFormBoundary7MA4YWxkTrZu0gW".into() })
        );
        assert_eq!(
            parse("multipart/form-data; boundary=\"a b:c\""),
            Ok(BodyFormat::Multipart { boundary: "a b:c".into() })
        );
    }

    #[test]
    fn refused() {
        assert_eq!(parse("text/plain"), Err(MediaTypeError::Unsupported));
        assert_eq!(parse("application/jsonx"), Err(MediaTypeError::Unsupported));
        assert_eq!(parse(""), Err(MediaTypeError::Malformed));
        assert_eq!(parse("json"), Err(MediaTypeError::Malformed));
        assert_eq!(parse("application/json; charset"), Err(MediaTypeError::Malformed));
        assert_eq!(parse("application/json; charset=latin1"), Err(MediaTypeError::UnsupportedCharset));
        assert_eq!(parse("multipart/form-data"), Err(MediaTypeError::MissingBoundary));
        assert_eq!(parse("multipart/form-data; boundary=\"unterminated"), Err(MediaTypeError::Malformed));
        assert_eq!(
            parse(&format!("multipart/form-data; boundary={}", "a".repeat(71))),
            Err(MediaTypeError::BadBoundary)
        );
    }

    #[test]
    fn repeated_parameters_are_refused_for_every_type() {
        for ct in [
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; boundary=a; Boundary=\"a\"",
            "application/json; charset=utf-8; charset=utf-8",
            "application/x-www-form-urlencoded; x=1; X=2",
        ] {
            assert_eq!(parse(ct), Err(MediaTypeError::RepeatedParameter), "{ct}");
        }
    }
}
