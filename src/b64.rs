//! Base64 flavours used by the protocols here: URL-safe without padding for
//! JWS (RFC 7515 §2), standard with padding for HTTP Basic (RFC 7617).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// JWS decoding must be canonical: padding or non-zero trailing bits would let
/// one signature match several spellings of a token.
const URL_SAFE_STRICT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Basic credentials in the wild sometimes drop the padding; accept both.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    url_encode_into(data, &mut out);
    out
}

/// URL-safe, unpadded (RFC 7515 §2), appended to `out`. Every token minted
/// goes through here twice (the claims' tail and the tag): whole 3-byte
/// groups are written straight into place, where the `base64` crate's string
/// encoder goes through a chunked buffer (a unit test pins the two equal).
pub fn url_encode_into(data: &[u8], out: &mut String) {
    let mut bytes = Vec::new();
    url_encode_bytes(data, &mut bytes);
    // The alphabet is ASCII: never the fallback.
    out.push_str(std::str::from_utf8(&bytes).unwrap_or_default());
}

/// [`url_encode_into`] for a byte buffer: no UTF-8 check at all.
pub fn url_encode_bytes(data: &[u8], out: &mut Vec<u8>) {
    let sextet = |n: u32, shift: u32| URL_ALPHABET[((n >> shift) & 63) as usize];
    let start = out.len();
    let whole = data.len() / 3;
    out.resize(start + whole * 4, 0);
    for (group, quad) in data.chunks_exact(3).zip(out[start..].chunks_exact_mut(4)) {
        let n = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        quad.copy_from_slice(&[sextet(n, 18), sextet(n, 12), sextet(n, 6), sextet(n, 0)]);
    }
    match data[whole * 3..] {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[sextet(n, 18), sextet(n, 12)]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[sextet(n, 18), sextet(n, 12), sextet(n, 6)]);
        }
        _ => {}
    }
}

pub fn url_decode(text: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_STRICT.decode(text).ok()
}

pub fn url_decode_into(text: &[u8], out: &mut Vec<u8>) -> bool {
    URL_SAFE_STRICT.decode_vec(text, out).is_ok()
}

pub fn std_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn std_decode_lenient(text: &[u8]) -> Option<Vec<u8>> {
    STANDARD_LENIENT.decode(text).ok()
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn url_round_trip_and_strictness() {
        assert_eq!(url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(url_decode(b"-_8").unwrap(), b"\xfb\xff");
        assert!(url_decode(b"-_8=").is_none(), "padding is not canonical");
        assert!(url_decode(b"+/8").is_none(), "standard alphabet is not JWS");
        assert!(url_decode(b"-_9").is_none(), "non-zero trailing bits");
    }

    /// The hand-written encoder against the `base64` crate's: every length
    /// up to 511 bytes, at three offsets, over every byte value.
    #[test]
    fn url_encode_is_the_crate_encoding() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..data.len() {
            for start in [0, 1, 2] {
                let slice = &data[start..(start + len).min(data.len())];
                assert_eq!(url_encode(slice), URL_SAFE_NO_PAD.encode(slice), "{len} bytes from {start}");
                let mut appended = String::from("x.");
                url_encode_into(slice, &mut appended);
                assert_eq!(appended, format!("x.{}", URL_SAFE_NO_PAD.encode(slice)));
                let mut bytes = b"y.".to_vec();
                url_encode_bytes(slice, &mut bytes);
                assert_eq!(bytes, format!("y.{}", URL_SAFE_NO_PAD.encode(slice)).into_bytes());
            }
        }
    }

    #[test]
    fn std_lenient_padding() {
        assert_eq!(std_decode_lenient(b"YTpi").unwrap(), b"a:b");
        assert_eq!(std_decode_lenient(b"YTpiYw==").unwrap(), b"a:bc");
        assert_eq!(std_decode_lenient(b"YTpiYw").unwrap(), b"a:bc");
        assert!(std_decode_lenient(b"YT*i").is_none());
    }
}
