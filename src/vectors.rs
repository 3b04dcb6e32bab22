//! Published test vectors, kept as data under `tests/vectors/` and run here
//! (natively and under Node) against the code that signs and verifies.

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::Value;

    use crate::b64;
    use crate::profile::{decode_hex, encode_hex, Profile, ProfileRecord, SigningKey};

    fn hex(v: &Value) -> Vec<u8> {
        decode_hex(v.as_str().unwrap()).unwrap()
    }

    #[test]
    fn rfc4231_hmac_sha256() {
        let doc: Value = serde_json::from_str(include_str!("../tests/vectors/rfc4231_hmac_sha256.json")).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 7);
        for c in cases {
            let key = SigningKey::new(&hex(&c["key"]));
            let mac = key.sign(&hex(&c["data"]));
            let want = hex(&c["mac"]);
            assert_eq!(&mac[..want.len()], &want[..], "case {}", c["case"]);
            if want.len() == 32 {
                assert!(key.verify(&hex(&c["data"]), &want));
                let mut bad = want.clone();
                bad[31] ^= 1;
                assert!(!key.verify(&hex(&c["data"]), &bad));
            }
        }
    }

    #[test]
    fn rfc7515_a1_hs256() {
        let v: Value = serde_json::from_str(include_str!("../tests/vectors/rfc7515_a1_hs256.json")).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        assert_eq!(b64::url_encode(s("protected_header").as_bytes()), s("protected_header_b64"));
        assert_eq!(b64::url_encode(s("payload").as_bytes()), s("payload_b64"));
        let key = SigningKey::new(&b64::url_decode(s("jwk_k").as_bytes()).unwrap());
        let input = format!("{}.{}", s("protected_header_b64"), s("payload_b64"));
        assert_eq!(b64::url_encode(&key.sign(input.as_bytes())), s("signature_b64"));
        assert!(key.verify(input.as_bytes(), &b64::url_decode(s("signature_b64").as_bytes()).unwrap()));
    }

    #[test]
    fn documentation_token_layout() {
        let v: Value = serde_json::from_str(include_str!("../tests/vectors/documentation_token.json")).unwrap();
        let doc_token = v["access_token"].as_str().unwrap();
        let record = ProfileRecord {
            id: v["sub"].as_str().unwrap().into(),
            client_id: "c".into(),
            client_secret_sha256: encode_hex(&[0; 32]),
            kid: v["kid"].as_str().unwrap().into(),
            signing_key: encode_hex(&[1; 32]),
            allowed_prefixes: vec!["/".into()],
            disabled: false,
            name: None,
        };
        let p = Profile::from_record(&record).unwrap();
        let ours = crate::jwt::mint(&p, v["iat"].as_u64().unwrap(), v["lifetime"].as_u64().unwrap(), &[0; 16]);
        let (doc_parts, our_parts): (Vec<&str>, Vec<&str>) =
            (doc_token.split('.').collect(), ours.split('.').collect());
        // Byte-identical header; the same claims plus our jti.
        assert_eq!(doc_parts[0], our_parts[0]);
        let doc_claims: Value = serde_json::from_slice(&b64::url_decode(doc_parts[1].as_bytes()).unwrap()).unwrap();
        let mut our_claims: Value = serde_json::from_slice(&b64::url_decode(our_parts[1].as_bytes()).unwrap()).unwrap();
        our_claims.as_object_mut().unwrap().remove("jti");
        assert_eq!(doc_claims, our_claims);
    }
}
