//! Token request parameters from the three body formats, with RFC 6749 §3.2's
//! rule that no parameter appears twice, and a check that the body really is
//! in the format its Content-Type declares.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::media_type::BodyFormat;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamsError {
    /// The body is in another format than the Content-Type says.
    Mismatch(Declared),
    Malformed(Malformed),
    Repeated,
    NotAString,
}

/// The format a Content-Type declared, for [`ParamsError::Mismatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declared {
    Form,
    Json,
    /// multipart/form-data, and no delimiter line with its boundary.
    Multipart,
}

/// How a body in the declared format is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    FormEncoding,
    JsonNotAnObject,
    Multipart,
    /// A multipart body with two possible readings (see `parse_multipart`).
    MultipartAmbiguous,
}

impl ParamsError {
    pub fn description(self) -> &'static str {
        match self {
            Self::Mismatch(Declared::Form) => "the body is not application/x-www-form-urlencoded as Content-Type says",
            Self::Mismatch(Declared::Json) => "the body is not application/json as Content-Type says",
            Self::Mismatch(Declared::Multipart) => "the body is not multipart/form-data with the declared boundary",
            Self::Malformed(Malformed::FormEncoding) => "the form body is not valid percent-encoded UTF-8",
            Self::Malformed(Malformed::JsonNotAnObject) => "the body is not a JSON object",
            Self::Malformed(Malformed::Multipart) => "the multipart/form-data body is malformed",
            Self::Malformed(Malformed::MultipartAmbiguous) => "the multipart/form-data body is ambiguous",
            Self::Repeated => "request parameters must not be repeated",
            Self::NotAString => "grant_type, client_id and client_secret must be strings",
        }
    }
}

/// Parameters in arrival order. A value is `None` when it was present but not
/// a string (JSON numbers, objects, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    pub fn get(&self, name: &str) -> Result<Option<&str>, ParamsError> {
        match self.0.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, Some(v))) => Ok(Some(v)),
            Some((_, None)) => Err(ParamsError::NotAString),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// The parameters in arrival order; for the fuzz targets (`fuzz/`), which
    /// compare whole parses.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    fn push(&mut self, name: String, value: Option<String>) -> Result<(), ParamsError> {
        if self.contains(&name) {
            return Err(ParamsError::Repeated);
        }
        self.0.push((name, value));
        Ok(())
    }
}

pub fn parse(format: &BodyFormat, body: &[u8]) -> Result<Params, ParamsError> {
    let sniffed = sniff(body);
    match format {
        BodyFormat::Form => {
            if sniffed != Sniffed::Form {
                return Err(ParamsError::Mismatch(Declared::Form));
            }
            parse_form(body)
        }
        BodyFormat::Json => {
            if sniffed != Sniffed::Json {
                return Err(ParamsError::Mismatch(Declared::Json));
            }
            parse_json(body)
        }
        BodyFormat::Multipart { boundary } => parse_multipart(boundary, body),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    Json,
    Multipart,
    Form,
}

// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
fn sniff(body: &[u8]) -> Sniffed {
    let trimmed = body.trim_ascii_start();
    if trimmed.first().is_some_and(|b| *b == b'{' || *b == b'[') {
        return Sniffed::Json;
    }
    let looks_multipart = body
        .split(|b| *b == b'\n')
        .any(|line| line.len() >= 20 && line[..20].eq_ignore_ascii_case(b"content-disposition:"));
    if looks_multipart {
        Sniffed::Multipart
    } else {
        Sniffed::Form
    }
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.1).
// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
pub fn parse_form(body: &[u8]) -> Result<Params, ParamsError> {
    let mut params = Params::default();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = form_decode(name).ok_or(ParamsError::Malformed(Malformed::FormEncoding))?;
        let value = form_decode(value).ok_or(ParamsError::Malformed(Malformed::FormEncoding))?;
        params.push(name, Some(value))?;
    }
    Ok(params)
}

/// Decodes one form component: `+` is a space, `%XX` a byte; the result must
/// be UTF-8. Used for Basic credentials too (RFC 6749 §2.3.1).
pub fn form_decode(input: &[u8]) -> Option<String> {
    // Most components (`grant_type`, `client_credentials`, ids, generated
    // secrets) have nothing to decode: one scan, then one copy.
    if !input.iter().any(|b| matches!(b, b'+' | b'%')) {
        return std::str::from_utf8(input).ok().map(str::to_owned);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (*input.get(i + 1)? as char).to_digit(16)?;
                let lo = (*input.get(i + 2)? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

struct JsonParams(Params, bool);

/// A JSON member value: kept if it is a string, otherwise only noted (and
/// skipped without building a `serde_json::Value`).
struct StringOrOther(Option<String>);

impl<'de> Deserialize<'de> for StringOrOther {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrOther;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringOrOther, E> {
                Ok(StringOrOther(Some(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<StringOrOther, E> {
                Ok(StringOrOther(Some(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_unit<E>(self) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrOther, A::Error> {
                // Walked value by value, not skipped with `IgnoredAny`, which
                // checks neither escapes nor UTF-8: a body serde_json would
                // refuse as a document is refused here too.
                while seq.next_element::<StringOrOther>()?.is_some() {}
                Ok(StringOrOther(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringOrOther, A::Error> {
                while map.next_entry::<String, StringOrOther>()?.is_some() {}
                Ok(StringOrOther(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for JsonParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonParams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonParams, A::Error> {
                let mut params = Params::default();
                let mut repeated = false;
                while let Some(name) = map.next_key::<String>()? {
                    let value = map.next_value::<StringOrOther>()?.0;
                    repeated |= params.push(name, value).is_err();
                }
                Ok(JsonParams(params, repeated))
            }
        }
        d.deserialize_map(V)
    }
}

// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
fn parse_json(body: &[u8]) -> Result<Params, ParamsError> {
    // RFC 8259 §8.1: JSON is UTF-8. Every member is walked (see
    // `StringOrOther`), so a bad escape or an out-of-range number (§9: our
    // limit is an f64) anywhere refuses the body, as it would the document.
    if std::str::from_utf8(body).is_err() {
        return Err(ParamsError::Malformed(Malformed::JsonNotAnObject));
    }
    match serde_json::from_slice::<JsonParams>(body) {
        Ok(JsonParams(_, true)) => Err(ParamsError::Repeated),
        Ok(JsonParams(params, false)) => Ok(params),
        Err(_) => Err(ParamsError::Malformed(Malformed::JsonNotAnObject)),
    }
}

const NOT_MULTIPART: ParamsError = ParamsError::Mismatch(Declared::Multipart);
const MALFORMED: ParamsError = ParamsError::Malformed(Malformed::Multipart);
const AMBIGUOUS: ParamsError = ParamsError::Malformed(Malformed::MultipartAmbiguous);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delimiter {
    Next,
    Close,
}

/// One line of the body and where its text sits (line break excluded).
#[derive(Clone, Copy)]
struct Line<'a> {
    text: &'a str,
    start: usize,
    end: usize,
    /// Whether the line ends in CRLF (not LF, nor the end of the body).
    crlf: bool,
    /// The body ends here, without a line break.
    last: bool,
}

fn lines(text: &str) -> impl Iterator<Item = Line<'_>> + Clone {
    let mut start = 0;
    let total = text.len();
    text.split('\n').map(move |raw| {
        let line_start = start;
        start += raw.len() + 1;
        let text = raw.strip_suffix('\r').unwrap_or(raw);
        let crlf = text.len() < raw.len() && line_start + raw.len() < total;
        let last = line_start + raw.len() >= total;
        Line { text, start: line_start, end: line_start + text.len(), crlf, last }
    })
}

/// RFC 2046 §5.1.1 allows transport padding after a delimiter.
fn unpadded(line: &str) -> &str {
    line.trim_end_matches([' ', '\t'])
}

/// `multipart/form-data`, one reading per body (CRLF or LF line ends):
/// * a body with any `--B` delimiter line is RFC 2046/7578: only `--B` lines
///   delimit, `--B--` closes (the epilogue is ignored), a line that starts
///   like a delimiter but is none is refused (§5.1.1: the delimiter must not
///   occur in content), and a bare `B` line is content;
/// * otherwise it is the product documentation's form: delimiter lines that
///   are the bare boundary, the last one closing the body, nothing but blank
///   lines before the first; `B--`, which neither form defines, is refused.
// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
fn parse_multipart(boundary: &str, body: &[u8]) -> Result<Params, ParamsError> {
    let text = std::str::from_utf8(body).map_err(|_| MALFORMED)?;
    let dashed = format!("--{boundary}");
    let rfc_delimiter = |line: &str| -> Result<Option<Delimiter>, ParamsError> {
        match unpadded(line).strip_prefix(dashed.as_str()) {
            Some("") => Ok(Some(Delimiter::Next)),
            Some("--") => Ok(Some(Delimiter::Close)),
            Some(_) => Err(AMBIGUOUS),
            None => Ok(None),
        }
    };
    // Any line that starts like an RFC delimiter makes the body RFC form, so
    // a near-delimiter (`--B--x`) cannot hide in a bare-form body as content
    // while an RFC reader takes the body as malformed: it is refused below.
    let is_rfc = lines(text).any(|l| l.text.starts_with(dashed.as_str()));
    if is_rfc {
        return parts(text, true, rfc_delimiter);
    }
    let bare_delimiter = |line: &str| -> Result<Option<Delimiter>, ParamsError> {
        match unpadded(line).strip_prefix(boundary) {
            Some("") => Ok(Some(Delimiter::Next)),
            Some("--") => Err(AMBIGUOUS),
            _ => Ok(None),
        }
    };
    if !lines(text).any(|l| unpadded(l.text) == boundary) {
        return Err(NOT_MULTIPART);
    }
    parts(text, false, bare_delimiter)
}

// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
fn parts(
    text: &str,
    rfc: bool,
    delimiter: impl Fn(&str) -> Result<Option<Delimiter>, ParamsError>,
) -> Result<Params, ParamsError> {
    let mut lines = lines(text);
    // RFC form: the first delimiter line's own line break fixes the body's
    // style (CRLF as curl and browsers send, or LF as some clients do). A
    // delimiter line after a line break of the other style has two readings
    // (RFC 2046 and multer read `LF--B` in a CRLF body as content): refused.
    let mut style: Option<bool> = None;
    let mut previous_crlf: Option<bool> = None;
    let mut delimiter = |line: Line| -> Result<Option<Delimiter>, ParamsError> {
        let found = delimiter(line.text)?;
        let before = previous_crlf.replace(line.crlf);
        if rfc && found.is_some() {
            let style = *style.get_or_insert(line.crlf);
            if before.is_some_and(|crlf| crlf != style) {
                return Err(AMBIGUOUS);
            }
        }
        Ok(found)
    };
    // The preamble: ignored in RFC form, blank in the documentation's.
    let body_crlf = loop {
        let line = lines.next().ok_or(NOT_MULTIPART)?;
        match delimiter(line)? {
            Some(Delimiter::Next) => break line.crlf,
            Some(Delimiter::Close) => return Err(MALFORMED),
            None if !rfc && !line.text.trim().is_empty() => return Err(AMBIGUOUS),
            None => {}
        }
    };
    let mut params = Params::default();
    loop {
        // The documentation's example ends on a bare delimiter, without a
        // closing marker: a delimiter followed by nothing closes that form.
        if !rfc && lines.clone().all(|l| l.text.trim().is_empty()) {
            return Ok(params);
        }
        // Part headers up to the blank line.
        let mut name = None;
        loop {
            let line = lines.next().ok_or(MALFORMED)?;
            let empty = line.text.is_empty();
            if delimiter(line)?.is_some() {
                return Err(MALFORMED);
            }
            // Header lines in the body's own line-break style: multer ends a
            // CRLF body's headers only at CRLF CRLF, so `LF CRLF` would end
            // them for us and not for it (two readings of the value).
            if rfc && !line.last && line.crlf != body_crlf {
                return Err(AMBIGUOUS);
            }
            if empty {
                break;
            }
            let (h, v) = line.text.split_once(':').ok_or(MALFORMED)?;
            if h.trim().eq_ignore_ascii_case("content-disposition") {
                if name.is_some() {
                    return Err(AMBIGUOUS);
                }
                name = Some(disposition_name(v)?);
            }
        }
        let name = name.ok_or(MALFORMED)?;
        // Content up to the next delimiter, its own line breaks kept; the
        // line break before the delimiter belongs to the delimiter.
        let mut span: Option<(usize, usize)> = None;
        let last = loop {
            let line = lines.next().ok_or(MALFORMED)?;
            if let Some(d) = delimiter(line)? {
                // RFC 2046: the CRLF ending the header block is not the one
                // a delimiter starts with, so `--B` right after it is
                // content there (multer reads it so), a delimiter in a line
                // reader: two readings of the part, refused.
                if rfc && span.is_none() {
                    return Err(AMBIGUOUS);
                }
                break d;
            }
            span = Some((span.map_or(line.start, |(start, _)| start), line.end));
        };
        let value = span.map_or("", |(start, end)| &text[start..end]);
        params.push(name, Some(value.to_owned()))?;
        if last == Delimiter::Close {
            return Ok(params);
        }
    }
}

/// `form-data; name="field"` → `field`, per RFC 2183/7578:
/// `type *(";" param "=" (token / quoted-string))`, quoted strings honouring
/// `\` escapes, so a `;` or `name=` inside another parameter's quoted value
/// is that value, not a parameter. A repeated `name` has two readings.
// Out of line: V8 (TurboFan) compile memory grows with function size; see lib.rs.
#[inline(never)]
fn disposition_name(v: &str) -> Result<String, ParamsError> {
    fn is_tchar(c: char) -> bool {
        c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
    }
    fn ows(s: &str) -> &str {
        s.trim_start_matches([' ', '\t'])
    }
    fn token(s: &str) -> Result<(&str, &str), ParamsError> {
        let end = s.find(|c| !is_tchar(c)).unwrap_or(s.len());
        if end == 0 {
            return Err(MALFORMED);
        }
        Ok(s.split_at(end))
    }
    /// The unescaped value and what follows its closing quote.
    fn quoted(s: &str) -> Result<(String, &str), ParamsError> {
        let mut out = String::new();
        let mut chars = s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &s[i + 1..])),
                '\\' => out.push(chars.next().ok_or(MALFORMED)?.1),
                c => out.push(c),
            }
        }
        Err(MALFORMED)
    }
    let (kind, mut rest) = token(ows(v))?;
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(MALFORMED);
    }
    let mut name = None;
    loop {
        rest = ows(rest);
        if rest.is_empty() {
            break;
        }
        rest = ows(rest.strip_prefix(';').ok_or(MALFORMED)?);
        let (key, after) = token(rest)?;
        let after = ows(after).strip_prefix('=').ok_or(MALFORMED)?;
        let after = ows(after);
        let (value, after) = match after.strip_prefix('"') {
            Some(q) => quoted(q)?,
            None => token(after).map(|(t, a)| (t.to_owned(), a))?,
        };
        rest = after;
        if key.eq_ignore_ascii_case("name") {
            if name.is_some() {
                return Err(AMBIGUOUS);
            }
            name = Some(value);
        }
    }
    name.ok_or(MALFORMED)
}

#[cfg(test)]
pub(crate) mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn mp(boundary: &str) -> BodyFormat {
        BodyFormat::Multipart { boundary: boundary.into() }
    }

    fn triple(p: &Params) -> (Option<&str>, Option<&str>, Option<&str>) {
        (p.get("grant_type").unwrap(), p.get("client_id").unwrap(), p.get("client_secret").unwrap())
    }

    const GOOD: (Option<&str>, Option<&str>, Option<&str>) = (Some("client_credentials"), Some("id"), Some("s e/c+"));

    #[test]
    fn form() {
        let p =
            parse(&BodyFormat::Form, b"client_secret=s+e%2Fc%2B&client_id=id&grant_type=client_credentials&").unwrap();
        assert_eq!(triple(&p), GOOD);
        assert_eq!(parse(&BodyFormat::Form, b"a=1&a=2"), Err(ParamsError::Repeated));
        assert!(matches!(parse(&BodyFormat::Form, b"a=%zz"), Err(ParamsError::Malformed(_))));
        assert!(matches!(parse(&BodyFormat::Form, b"a=%ff"), Err(ParamsError::Malformed(_))));
        assert_eq!(parse(&BodyFormat::Form, b"").unwrap(), Params::default());
        assert!(matches!(parse(&BodyFormat::Form, br#"{"grant_type":"x"}"#), Err(ParamsError::Mismatch(_))));
    }

    #[test]
    fn json() {
        let body = br#"{
  "grant_type": "client_credentials",
  "client_id": "id",
  "client_secret": "s e/c+"
}"#;
        assert_eq!(triple(&parse(&BodyFormat::Json, body).unwrap()), GOOD);
        assert_eq!(parse(&BodyFormat::Json, br#"{"a":"1","a":"2"}"#), Err(ParamsError::Repeated));
        assert_eq!(
            parse(&BodyFormat::Json, br#"{"grant_type":1}"#).unwrap().get("grant_type"),
            Err(ParamsError::NotAString)
        );
        assert!(matches!(parse(&BodyFormat::Json, br#"["x"]"#), Err(ParamsError::Malformed(_))));
        assert!(matches!(parse(&BodyFormat::Json, br#"{"a":"1""#), Err(ParamsError::Malformed(_))));
        assert!(matches!(parse(&BodyFormat::Json, b"grant_type=client_credentials"), Err(ParamsError::Mismatch(_))));
        assert!(matches!(parse(&BodyFormat::Json, b""), Err(ParamsError::Mismatch(_))));
        // Extra, unknown members are ignored (RFC 6749 §3.2), whatever type.
        let p = parse(&BodyFormat::Json, br#"{"grant_type":"client_credentials","scope":["a"]}"#).unwrap();
        assert_eq!(p.get("grant_type").unwrap(), Some("client_credentials"));
    }

    #[test]
    fn multipart_documentation_example() {
        // Verbatim shape from the product documentation: LF, bare boundary
        // lines, no closing `--`.
        let b = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
        let body = format!(
            "{b}\nContent-Disposition: form-data; name=\"grant_type\"\n\nclient_credentials\n{b}\nContent-Disposition: form-data; name=\"client_id\"\n\nid\n{b}\nContent-Disposition: form-data; name=\"client_secret\"\n\ns e/c+\n{b}\n"
        );
        assert_eq!(triple(&parse(&mp(b), body.as_bytes()).unwrap()), GOOD);
        // Same without the final newline.
        assert_eq!(triple(&parse(&mp(b), body.trim_end().as_bytes()).unwrap()), GOOD);
    }

    #[test]
    fn multipart_rfc7578_crlf() {
        let b = "------------------------d74496d66958873e";
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nclient_credentials\r\n--{b}\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\nid\r\n--{b}\r\nContent-Disposition: form-data; name=\"client_secret\"\r\nContent-Type: text/plain\r\n\r\ns e/c+\r\n--{b}--\r\n"
        );
        assert_eq!(triple(&parse(&mp(b), body.as_bytes()).unwrap()), GOOD);
    }

    #[test]
    fn multipart_errors() {
        let b = "XyZ";
        let dup = format!("--{b}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--{b}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n2\r\n--{b}--\r\n");
        assert_eq!(parse(&mp(b), dup.as_bytes()), Err(ParamsError::Repeated));
        assert!(matches!(parse(&mp(b), b"grant_type=client_credentials"), Err(ParamsError::Mismatch(_))));
        assert!(matches!(parse(&mp("other"), dup.as_bytes()), Err(ParamsError::Mismatch(_))));
        let no_name = format!("--{b}\r\nContent-Disposition: form-data\r\n\r\n1\r\n--{b}--\r\n");
        assert!(matches!(parse(&mp(b), no_name.as_bytes()), Err(ParamsError::Malformed(_))));
        let no_headers_end = format!("--{b}\r\nContent-Disposition: form-data; name=\"a\"\r\n");
        assert!(matches!(parse(&mp(b), no_headers_end.as_bytes()), Err(ParamsError::Malformed(_))));
        assert!(matches!(parse(&mp(b), &[0xff, 0xfe]), Err(ParamsError::Malformed(_))));
    }

    const SECRET_SMUGGLING_NOTE: &str = "B\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\ns e/c+";

    /// Issue 6 (4b): a note whose value looks like a bare-boundary part.
    pub(crate) fn smuggling_body(b: &str) -> String {
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nclient_credentials\r\n--{b}\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\nid\r\n--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n{}\r\n--{b}--\r\n",
            SECRET_SMUGGLING_NOTE.replacen('B', b, 1)
        )
    }

    #[test]
    fn rfc7578_value_with_a_bare_boundary_line_is_content() {
        let b = "B";
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nclient_credentials\r\n--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n{b}\r\ny\r\n--{b}--\r\n"
        );
        let p = parse(&mp(b), body.as_bytes()).unwrap();
        assert_eq!(p.get("note").unwrap(), Some("x\r\nB\r\ny"), "value intact, line breaks kept");
        assert_eq!(p.get("grant_type").unwrap(), Some("client_credentials"));
    }

    #[test]
    fn rfc7578_note_cannot_smuggle_a_part() {
        let p = parse(&mp("B"), smuggling_body("B").as_bytes()).unwrap();
        assert_eq!(p.get("client_secret").unwrap(), None);
        assert_eq!(p.get("note").unwrap(), Some(SECRET_SMUGGLING_NOTE));
    }

    #[test]
    fn multipart_forms_do_not_mix() {
        let b = "XyZ";
        let cd = |n: &str| format!("Content-Disposition: form-data; name=\"{n}\"");
        let (g, i) = (cd("grant_type"), cd("client_id"));
        // RFC form: a missing close, a line that starts like a delimiter.
        for (body, want) in [
            (format!("--{b}\r\n{g}\r\n\r\nclient_credentials\r\n--{b}\r\n"), Malformed::Multipart),
            (format!("--{b}\r\n{g}\r\n\r\nclient_credentials\r\n--{b}x\r\n--{b}--\r\n"), Malformed::MultipartAmbiguous),
            (format!("--{b}--\r\n"), Malformed::Multipart),
        ] {
            assert_eq!(parse(&mp(b), body.as_bytes()), Err(ParamsError::Malformed(want)), "{body:?}");
        }
        // RFC form: preamble and epilogue are ignored, padding tolerated.
        let ok = format!("preamble\r\n--{b}  \r\n{g}\r\n\r\nclient_credentials\r\n--{b}--\r\nepilogue {b}\r\n");
        assert_eq!(parse(&mp(b), ok.as_bytes()).unwrap().get("grant_type").unwrap(), Some("client_credentials"));
        // Documentation form: `B--`, text before the first delimiter, two
        // dispositions or two names in one part are ambiguous.
        let ambiguous = ParamsError::Malformed(Malformed::MultipartAmbiguous);
        for (body, want) in [
            (format!("{b}\n{g}\n\nclient_credentials\n{b}--\n"), ambiguous),
            (format!("hello\n{b}\n{g}\n\nclient_credentials\n{b}\n"), ambiguous),
            (format!("{b}\n{g}\n{i}\n\nclient_credentials\n{b}\n"), ambiguous),
            (format!("{b}\nContent-Disposition: form-data; name=a; name=b\n\nx\n{b}\n"), ambiguous),
            (format!("{b}\n{g}\n\nclient_credentials\n"), ParamsError::Malformed(Malformed::Multipart)),
        ] {
            assert_eq!(parse(&mp(b), body.as_bytes()), Err(want), "{body:?}");
        }
    }

    #[test]
    fn json_not_utf8_in_a_skipped_member_is_refused() {
        let body = b"{\"grant_type\":\"client_credentials\",\"x\":\"\xff\"}";
        assert_eq!(parse(&BodyFormat::Json, body), Err(ParamsError::Malformed(Malformed::JsonNotAnObject)));
        // Nested members are walked like top-level ones: a number beyond an
        // f64 (RFC 8259 §9: the parser's limit) or a broken escape anywhere
        // refuses the body, as serde_json refuses the document.
        for body in [
            &br#"{"grant_type":"client_credentials","x":[1e99999]}"#[..],
            br#"{"grant_type":"client_credentials","x":{"y":"\u12"}}"#,
            br#"{"grant_type":"client_credentials","x":[{"\uZZZZ":1}]}"#,
        ] {
            assert_eq!(parse(&BodyFormat::Json, body), Err(ParamsError::Malformed(Malformed::JsonNotAnObject)));
            assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
        }
        let p = parse(&BodyFormat::Json, br#"{"grant_type":"client_credentials","x":[1,{"y":["z",null]}]}"#).unwrap();
        assert_eq!(p.get("grant_type").unwrap(), Some("client_credentials"));
    }

    #[test]
    fn a_delimiter_right_after_the_part_headers_is_ambiguous() {
        // Found by the multer differential: per RFC 2046 this `note` part's
        // value is the rest up to the close, client_secret part included.
        let body = "--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n--B\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\ns\r\n--B--\r\n";
        assert_eq!(parse(&mp("B"), body.as_bytes()), Err(ParamsError::Malformed(Malformed::MultipartAmbiguous)));
        // An empty value as clients send it: the blank line, then a CRLF.
        let empty = "--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n\r\n--B--\r\n";
        assert_eq!(parse(&mp("B"), empty.as_bytes()).unwrap().get("note").unwrap(), Some(""));
    }

    #[test]
    fn a_near_delimiter_makes_the_body_rfc_form() {
        // Found by the multer differential: a bare-form body with a line
        // `--B--<junk>` was read in the documentation's form (its content),
        // while an RFC reader finds no delimiter at all.
        let body = "B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--B--\0junk\r\nB\r\n";
        assert_eq!(parse(&mp("B"), body.as_bytes()), Err(ParamsError::Malformed(Malformed::MultipartAmbiguous)));
    }

    #[test]
    fn rfc_multipart_header_lines_keep_the_body_line_break_style() {
        // Found by the multer differential: `LF CRLF` ends a CRLF body's part
        // headers for a line reader, not for multer (which waits for CRLF
        // CRLF), so the value had two readings.
        let body = "--B\r\ncontent-disposition: form-data; name=a; filename=\"f.txt\"\r\nContent-Type: t\n\r\n/plain\r\n\r\nv\r\n--B--\r\n";
        assert_eq!(parse(&mp("B"), body.as_bytes()), Err(ParamsError::Malformed(Malformed::MultipartAmbiguous)));
        let lf = "--B\ncontent-disposition: form-data; name=a\r\n\nv\n--B--\n";
        assert_eq!(parse(&mp("B"), lf.as_bytes()), Err(ParamsError::Malformed(Malformed::MultipartAmbiguous)));
        let fine = "--B\r\ncontent-disposition: form-data; name=a\r\nContent-Type: text/plain\r\n\r\nv\nw\r\n--B--\r\n";
        assert_eq!(parse(&mp("B"), fine.as_bytes()).unwrap().get("a").unwrap(), Some("v\nw"));
    }

    fn rfc_body(b: &str, nl: &str) -> String {
        format!(
            "--{b}{nl}Content-Disposition: form-data; name=\"grant_type\"{nl}{nl}client_credentials{nl}--{b}{nl}Content-Disposition: form-data; name=\"client_id\"{nl}{nl}id{nl}--{b}{nl}Content-Disposition: form-data; name=\"client_secret\"{nl}{nl}s e/c+{nl}--{b}--{nl}"
        )
    }

    #[test]
    fn rfc_multipart_line_break_style_is_fixed_by_the_first_delimiter() {
        let b = "XyZ";
        assert_eq!(triple(&parse(&mp(b), rfc_body(b, "\r\n").as_bytes()).unwrap()), GOOD);
        assert_eq!(triple(&parse(&mp(b), rfc_body(b, "\n").as_bytes()).unwrap()), GOOD);
        // Content with bare LFs in a CRLF body stays content.
        let body = format!("--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\na\nb\r\n--{b}--\r\n");
        assert_eq!(parse(&mp(b), body.as_bytes()).unwrap().get("note").unwrap(), Some("a\nb"));
    }

    /// Finding 4: `LF--B` in a CRLF body is content to RFC 2046 and multer;
    /// taken as a delimiter it smuggled a `client_secret` part.
    pub(crate) fn lf_smuggling_body(b: &str) -> String {
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nclient_credentials\r\n--{b}\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\nid\r\n--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\n--{b}\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\ns e/c+\r\n--{b}--\r\n"
        )
    }

    #[test]
    fn rfc_multipart_delimiter_after_the_other_line_break_is_ambiguous() {
        let b = "XyZ";
        let ambiguous = Err(ParamsError::Malformed(Malformed::MultipartAmbiguous));
        assert_eq!(parse(&mp(b), lf_smuggling_body(b).as_bytes()), ambiguous);
        // And the other way round: CRLF before a delimiter in an LF body.
        let body = format!("--{b}\nContent-Disposition: form-data; name=\"note\"\n\nx\r\n--{b}--\n");
        assert_eq!(parse(&mp(b), body.as_bytes()), ambiguous);
        // A preamble in the other style before the first delimiter.
        let body = format!("pre\n--{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n--{b}--\r\n");
        assert_eq!(parse(&mp(b), body.as_bytes()), ambiguous);
    }

    #[test]
    fn disposition_parameters_are_parsed_with_quoted_strings() {
        assert_eq!(disposition_name(r#" form-data; name="a""#).unwrap(), "a");
        assert_eq!(disposition_name(" form-data;name=a ; filename=x.txt").unwrap(), "a");
        assert_eq!(disposition_name(r#" form-data; name="a; b=\"c\\""#).unwrap(), r#"a; b="c\"#);
        // Finding 7: a `name=` inside another parameter's quoted value.
        assert_eq!(
            disposition_name(r#" form-data; filename="a; name=client_secret; x="; name="note""#).unwrap(),
            "note"
        );
        for malformed in [
            " form-data",
            " form-data; name=a b",
            r#" form-data; name="a; b="c""#,
            r#" form-data; name="id"x"#,
            r#" form-data; name="open"#,
            " form-data; name=",
            " form-data; name",
            " attachment; name=a",
            " form-data; name=a;",
        ] {
            assert_eq!(disposition_name(malformed), Err(MALFORMED), "{malformed:?}");
        }
        assert_eq!(disposition_name(r#" form-data; name="a"; NAME=b"#), Err(AMBIGUOUS));
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode(b"a+b%3Ac").unwrap(), "a b:c");
        assert_eq!(form_decode(b"%E3%81%82").unwrap(), "あ");
        // Nothing to decode: copied as it is, UTF-8 still required.
        assert_eq!(form_decode(b"client_credentials").unwrap(), "client_credentials");
        assert_eq!(form_decode("あ".as_bytes()).unwrap(), "あ");
        assert_eq!(form_decode(b"\xff"), None);
        assert_eq!(form_decode(b"\xe3%81%82").unwrap(), "あ", "raw and decoded bytes make one text");
        assert!(form_decode(b"%").is_none());
        assert!(form_decode(b"%4").is_none());
    }
}
