//! The token endpoint's decision: given parsed credentials and the profile
//! set, mint a token or refuse.

use std::rc::Rc;

use crate::error::{InvalidClient, TokenError};
use crate::jwt;
use crate::profile::{Profile, ProfileLookup, MAX_CLIENT_ID_LEN};
use crate::token_request::ClientCredentials;

/// Authenticates the client and mints its token.
pub fn issue(
    creds: &ClientCredentials,
    set: &dyn ProfileLookup,
    now: u64,
    lifetime: u64,
    jti: &[u8; 16],
) -> Result<String, TokenError> {
    issue_to(creds, lookup(creds, set), now, lifetime, jti)
}

/// The profile `creds` name, if any. No profile has a longer id than
/// [`MAX_CLIENT_ID_LEN`]: such an id is unknown without a lookup, so an
/// attacker's long ids cost neither a shared-data read nor a key in memory.
pub fn lookup(creds: &ClientCredentials, set: &dyn ProfileLookup) -> Option<Rc<Profile>> {
    (creds.client_id.len() <= MAX_CLIENT_ID_LEN).then(|| set.by_client_id(&creds.client_id)).flatten()
}

/// [`issue`] with the profile already looked up ([`lookup`]): the lockout
/// needs to know whether the client exists before the secret is checked.
pub fn issue_to(
    creds: &ClientCredentials,
    profile: Option<Rc<Profile>>,
    now: u64,
    lifetime: u64,
    jti: &[u8; 16],
) -> Result<String, TokenError> {
    let refused = TokenError::InvalidClient { cause: InvalidClient::Failed, basic: creds.basic };
    let Some(profile) = profile else {
        return Err(refused);
    };
    // Check the secret before `disabled` so a disabled profile tells nothing
    // to someone who does not hold its secret.
    if !profile.secret_matches(&creds.client_secret) || profile.disabled {
        return Err(refused);
    }
    Ok(jwt::mint(&profile, now, lifetime, jti))
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::profile::tests::record;
    use crate::profile::ProfileSet;

    fn creds(id: &str, secret: &str) -> ClientCredentials {
        ClientCredentials { client_id: id.into(), client_secret: secret.into(), basic: false }
    }

    #[test]
    fn issues_and_refuses() {
        let mut disabled = record(2);
        disabled.disabled = true;
        let set = ProfileSet::from_records(&[record(1), disabled]).unwrap();
        let t = issue(&creds("client-1", "secret-1"), &set, 10, 3600, &[0; 16]).unwrap();
        assert!(jwt::verify(&t, |k| set.by_kid(k)).is_ok());
        for (id, s) in [("client-1", "secret-2"), ("nobody", "secret-1"), ("client-2", "secret-2")] {
            assert!(
                matches!(issue(&creds(id, s), &set, 10, 3600, &[0; 16]), Err(TokenError::InvalidClient { .. })),
                "{id}"
            );
        }
        let mut basic = creds("nobody", "x");
        basic.basic = true;
        assert_eq!(
            issue(&basic, &set, 10, 3600, &[0; 16]),
            Err(TokenError::InvalidClient { cause: InvalidClient::Failed, basic: true })
        );
    }

    /// Counts lookups, to prove an overlong client id never reaches one.
    struct Counting(ProfileSet, std::cell::Cell<usize>);

    impl ProfileLookup for Counting {
        fn by_kid(&self, kid: &str) -> Option<std::rc::Rc<crate::profile::Profile>> {
            self.0.by_kid(kid)
        }
        fn by_client_id(&self, id: &str) -> Option<std::rc::Rc<crate::profile::Profile>> {
            self.1.set(self.1.get() + 1);
            self.0.by_client_id(id)
        }
    }

    #[test]
    fn overlong_client_ids_are_refused_without_a_lookup() {
        let set = Counting(ProfileSet::from_records(&[record(1)]).unwrap(), Default::default());
        for (len, lookups) in [(MAX_CLIENT_ID_LEN + 1, 0), (12_000, 0), (MAX_CLIENT_ID_LEN, 1)] {
            set.1.set(0);
            let c = creds(&"x".repeat(len), "secret-1");
            assert!(matches!(issue(&c, &set, 10, 3600, &[0; 16]), Err(TokenError::InvalidClient { .. })));
            assert_eq!(set.1.get(), lookups, "{len}");
        }
    }
}
