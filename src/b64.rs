//! Base64 flavours used by the protocols here: URL-safe without padding for
//! JWS (RFC 7515 §2), standard with padding for HTTP Basic (RFC 7617).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD};
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

pub fn url_encode(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn url_encode_into(data: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(data, out);
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

    #[test]
    fn std_lenient_padding() {
        assert_eq!(std_decode_lenient(b"YTpi").unwrap(), b"a:b");
        assert_eq!(std_decode_lenient(b"YTpiYw==").unwrap(), b"a:bc");
        assert_eq!(std_decode_lenient(b"YTpiYw").unwrap(), b"a:bc");
        assert!(std_decode_lenient(b"YT*i").is_none());
    }
}
