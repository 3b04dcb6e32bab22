//! A request's header map as the host hands it out, read in place.
//!
//! The proxy-wasm map encoding: a little-endian u32 count, then a
//! (name length, value length) u32 pair per entry, then each name and value
//! followed by a NUL. [`HeaderMap::decode`] checks the whole layout once;
//! lookups then borrow from the one buffer the host wrote, so reading a
//! request's headers costs one allocation (the buffer) however many headers
//! it has. The guard runs on every request: it used to copy each name and
//! value into its own `Vec`.

/// The header map of one request. Names are compared ignoring ASCII case
/// (Envoy hands them out lower-cased; a fake host might not).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    count: usize,
}

/// A header value that is not UTF-8 cannot be a valid credential, path or
/// media type: it reads as this, which matches nothing.
pub const NOT_UTF8: &str = "\u{fffd}";

fn word(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b) as usize)
}

impl HeaderMap {
    /// Checks the layout (every length inside the buffer, each field
    /// followed by its NUL, nothing after the last); `None` for a malformed
    /// encoding.
    pub fn decode(bytes: Vec<u8>) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::default());
        }
        let count = word(&bytes, 0)?;
        let mut at = count.checked_mul(8)?.checked_add(4)?;
        if at > bytes.len() {
            return None;
        }
        for i in 0..count {
            for len in [word(&bytes, 4 + i * 8)?, word(&bytes, 8 + i * 8)?] {
                let end = at.checked_add(len)?;
                if *bytes.get(end)? != 0 {
                    return None;
                }
                at = end + 1;
            }
        }
        // Nothing after the last field: one reading of the buffer.
        (at == bytes.len()).then_some(Self { bytes, count })
    }

    /// The encoding of `pairs` (what the host sends for a map).
    pub fn encode<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Vec<u8> {
        let size = 4 + pairs.iter().map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 10).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
        for (n, v) in pairs {
            out.extend_from_slice(&(n.as_ref().len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.as_ref().len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend_from_slice(n.as_ref().as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_ref().as_bytes());
            out.push(0);
        }
        out
    }

    /// A map holding `pairs`, in order (fake hosts, tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let count = pairs.len();
        Self { bytes: Self::encode(pairs), count }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut at = 4 + self.count * 8;
        (0..self.count).map(move |i| {
            // `decode` checked every length and offset: these cannot fail.
            let mut field = |len_at: usize| {
                let len = word(&self.bytes, len_at).unwrap_or(0);
                let start = at.min(self.bytes.len());
                let end = (start + len).min(self.bytes.len());
                at = end + 1;
                &self.bytes[start..end]
            };
            let name = field(4 + i * 8);
            let value = field(8 + i * 8);
            (name, value)
        })
    }

    /// The first value of `name`, as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// The first value of `name` as text; a value that is not UTF-8 reads as
    /// [`NOT_UTF8`].
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name).map(|v| std::str::from_utf8(v).unwrap_or(NOT_UTF8))
    }

    /// The first value of each of `names` as [`Self::get`] reads it, in one
    /// pass over the map (a token request reads five headers).
    pub fn get_each<const N: usize>(&self, names: [&str; N]) -> [Option<&str>; N] {
        let mut found: [Option<&[u8]>; N] = [None; N];
        let mut left = N;
        for (name, value) in self.iter() {
            for (want, slot) in names.iter().zip(found.iter_mut()) {
                // Lengths first: most pairs differ there.
                if want.len() == name.len() && slot.is_none() && name.eq_ignore_ascii_case(want.as_bytes()) {
                    *slot = Some(value);
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
        }
        found.map(|v| v.map(|v| std::str::from_utf8(v).unwrap_or(NOT_UTF8)))
    }

    /// Names an upstream could read as one of `ours`: equal up to ASCII case
    /// and `_` for `-`, as CGI, WSGI and PHP fold them (`HTTP_X_..._ID`).
    /// Exact copies are included. Each name once, even when repeated.
    pub fn look_alikes<'a>(&'a self, ours: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
        let fold = |b: &u8| if *b == b'_' { b'-' } else { b.to_ascii_lowercase() };
        self.iter().enumerate().filter_map(move |(i, (name, _))| {
            let alike =
                ours.iter().any(|o| o.len() == name.len() && name.iter().map(fold).eq(o.as_bytes().iter().map(fold)));
            let first = || !self.iter().take(i).any(|(n, _)| n == name);
            (alike && first()).then(|| std::str::from_utf8(name).ok()).flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn round_trip_and_malformed_input_is_refused() {
        let pairs = [(":path", "/x"), ("x_tollgate_client_id", ""), ("a", "b\u{e9}")];
        let encoded = HeaderMap::encode(&pairs);
        let map = HeaderMap::decode(encoded.clone()).unwrap();
        assert_eq!(map, HeaderMap::from_pairs(&pairs));
        let got: Vec<(&[u8], &[u8])> = map.iter().collect();
        let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
        assert_eq!(got, want);
        assert_eq!(map.len(), 3);
        assert!(HeaderMap::decode(Vec::new()).unwrap().is_empty());
        for cut in 1..encoded.len() - 1 {
            assert!(HeaderMap::decode(encoded[..cut].to_vec()).is_none(), "truncated at {cut}");
        }
        assert!(HeaderMap::decode(u32::MAX.to_le_bytes().to_vec()).is_none());
        let mut huge = encoded.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::decode(huge).is_none());
        let mut no_nul = encoded;
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert!(HeaderMap::decode(no_nul).is_none(), "a field without its NUL");
        let mut trailing = HeaderMap::encode(&pairs);
        trailing.push(0);
        assert!(HeaderMap::decode(trailing).is_none(), "bytes after the last field");
    }

    #[test]
    fn lookups() {
        let map = HeaderMap::from_pairs(&[(":path", "/a"), ("Accept", "x"), ("accept", "y"), ("raw", "")]);
        assert_eq!(map.get(":path"), Some("/a"));
        assert_eq!(map.get("accept"), Some("x"), "the first value, names ignoring case");
        assert_eq!(map.get("raw"), Some(""));
        assert_eq!(map.get("missing"), None);
        let mut bytes = HeaderMap::encode(&[("bad", "\u{e9}")]);
        let at = bytes.len() - 3; // the first byte of the two-byte é
        bytes[at] = 0xff;
        let map = HeaderMap::decode(bytes).unwrap();
        assert_eq!(map.get("bad"), Some(NOT_UTF8));
        assert_eq!(map.get_bytes("bad"), Some(&[0xff, 0xa9][..]));
        assert_eq!(map.get_each(["bad", "missing"]), [Some(NOT_UTF8), None]);
    }

    /// One pass reads what one `get` per name reads: first values, names
    /// ignoring case, absent names, and a map where every name is wanted.
    #[test]
    fn get_each_is_get_per_name() {
        let map = HeaderMap::from_pairs(&[
            (":method", "POST"),
            ("Content-Type", "a/b"),
            ("content-type", "c/d"),
            ("authorization", ""),
            (":path", "/t"),
        ]);
        let names = [":path", "content-type", "authorization", "content-length", ":method"];
        assert_eq!(map.get_each(names), names.map(|n| map.get(n)));
        assert_eq!(map.get_each(names)[1], Some("a/b"));
        assert_eq!(HeaderMap::default().get_each([":path"]), [None]);
        assert_eq!(map.get_each([]), [None; 0]);
    }

    #[test]
    fn look_alikes_fold_case_and_underscores_once_each() {
        let map = HeaderMap::from_pairs(&[
            ("x-tollgate-client-id", "a"),
            ("X_Tollgate_Client_Id", "b"),
            ("x-tollgate-client-id", "c"),
            ("x-tollgate-client-idx", "d"),
            ("other", "e"),
        ]);
        let found: Vec<&str> = map.look_alikes(&["x-tollgate-client-id", "x-tollgate-profile-id"]).collect();
        assert_eq!(found, ["x-tollgate-client-id", "X_Tollgate_Client_Id"]);
    }
}
