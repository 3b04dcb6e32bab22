//! Signing keys at rest: sealed with a key-encryption key (KEK) held outside
//! the database, so a copy of the database alone cannot mint tokens.
//!
//! * The KEK is 256 random bits in its own file (`--key-file`,
//!   `TOLLGATE_KEY_FILE`, default beside the database: `var/tollgate.key`
//!   for `var/tollgate.db`), one line of 64 hex digits, mode 0600. A key
//!   file that group or others can read is refused.
//! * Each signing key is sealed with XChaCha20-Poly1305 (a random 192-bit
//!   nonce per seal, so random nonces never collide in practice) with the
//!   profile id and kid as associated data: a sealed key moved to another
//!   row, or a row whose kid was edited, fails to unseal instead of signing
//!   for the wrong profile.
//! * The store records the KEK's id (a hash, not the key), so a wrong key
//!   file is named as such at open instead of failing row by row.
//!
//! Store-agnostic: every store implementation seals on create/rotate and
//! the data views unseal; nothing else sees a plaintext signing key.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::permissions;

/// Marks a sealed value (and its format version) in the store.
const SEALED_PREFIX: &str = "xc20p1:";
const NONCE_LEN: usize = 24;
/// Binds the associated data to this use, should the KEK ever serve another.
const AAD_CONTEXT: &[u8] = b"tollgate signing key\0";

/// Why the KEK could not be used. Messages name files and key ids, never
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "key file {path} does not exist, and this database's signing keys are sealed with key {expected}: \
         restore that file or give its location with --key-file / TOLLGATE_KEY_FILE \
         (a copied database is useless without its key file)"
    )]
    Missing { path: PathBuf, expected: String },
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("key file {path} is mode {mode:04o}: other users can read it; run chmod 600 {path}")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("key file {path} is not a Tollgate key file (expected one line of 64 hex digits)")]
    Malformed { path: PathBuf },
    #[error("cannot create key file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error(
        "key file {path} holds key {found}, but this database's signing keys are sealed with key {expected}: \
         wrong key file"
    )]
    Mismatch { path: PathBuf, found: String, expected: String },
    #[error(
        "the signing key of profile {profile_id} cannot be unsealed (the row was altered or sealed with another key)"
    )]
    Unseal { profile_id: String },
    #[error("operating-system randomness unavailable: {0}")]
    Random(String),
}

/// The KEK, ready to seal and unseal. `Debug` shows only its id.
pub struct Keyring {
    cipher: XChaCha20Poly1305,
    id: String,
    path: PathBuf,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("id", &self.id).field("path", &self.path).finish()
    }
}

/// The key file that goes with `db` when none is given: same directory,
/// same stem, `.key`.
pub fn default_key_file(db: &Path) -> PathBuf {
    let path = db.with_extension("key");
    if path == db {
        permissions::companion(db, ".key")
    } else {
        path
    }
}

impl Keyring {
    /// Loads the KEK from `path`; `expected` is the key id the store
    /// recorded, for the error messages.
    pub fn load(path: &Path, expected: &str) -> Result<Self, KeyringError> {
        let keyring = match Self::read(path) {
            Err(KeyringError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyringError::Missing { path: path.to_path_buf(), expected: expected.to_owned() })
            }
            other => other?,
        };
        if keyring.id != expected {
            return Err(KeyringError::Mismatch {
                path: path.to_path_buf(),
                found: keyring.id,
                expected: expected.to_owned(),
            });
        }
        Ok(keyring)
    }

    /// Loads the KEK from `path`, creating the file (0600, from OS
    /// randomness) if it does not exist. Only for a store that has no sealed
    /// key yet: one that has must use [`Keyring::load`].
    pub fn load_or_create(path: &Path) -> Result<Self, KeyringError> {
        match Self::read(path) {
            Err(KeyringError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut kek = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(kek.as_mut()).map_err(|e| KeyringError::Random(e.to_string()))?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(kek.as_ref())));
        let create = |source| KeyringError::Create { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            permissions::private_dir(dir).map_err(create)?;
        }
        // Written whole to a private temporary name, then linked into place:
        // a concurrent opener sees no file or a complete one, and of two
        // creators exactly one wins (link never replaces).
        let mut nonce = [0u8; 8];
        getrandom::getrandom(&mut nonce).map_err(|e| KeyringError::Random(e.to_string()))?;
        let tmp = permissions::companion(path, &format!(".tmp-{}", hex::encode(nonce)));
        let written = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            match std::fs::hard_link(&tmp, path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        written.map_err(create)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Self::read(path)
    }

    fn read(path: &Path) -> Result<Self, KeyringError> {
        let read = |source| KeyringError::Read { path: path.to_path_buf(), source };
        let mut file = std::fs::File::open(path).map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode() & 0o7777;
        if permissions::shared_with_others(mode) {
            return Err(KeyringError::Exposed { path: path.to_path_buf(), mode });
        }
        let mut text = Zeroizing::new(String::new());
        // A key file is 65 bytes; anything much longer is not one.
        std::io::Read::by_ref(&mut file).take(256).read_to_string(&mut text).map_err(read)?;
        let malformed = || KeyringError::Malformed { path: path.to_path_buf() };
        let hex_key = text.trim();
        if hex_key.len() != 64 {
            return Err(malformed());
        }
        let mut kek = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key, kek.as_mut()).map_err(|_| malformed())?;
        Ok(Self::from_kek(&kek, path))
    }

    fn from_kek(kek: &[u8; 32], path: &Path) -> Self {
        let digest = Sha256::new().chain_update(b"tollgate kek id\0").chain_update(kek).finalize();
        Self { cipher: XChaCha20Poly1305::new(kek.into()), id: hex::encode(&digest[..8]), path: path.to_path_buf() }
    }

    /// A keyring over a fixed key, for tests.
    #[cfg(test)]
    fn for_tests(kek: [u8; 32]) -> Self {
        Self::from_kek(&kek, Path::new("(test key)"))
    }

    /// The key's public name: 16 hex digits of a hash of it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The file this key came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals `signing_key` for the profile `profile_id` whose kid is `kid`.
    pub fn seal(&self, profile_id: &str, kid: &str, signing_key: &[u8]) -> Result<String, KeyringError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| KeyringError::Random(e.to_string()))?;
        let aad = aad(profile_id, kid);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: signing_key, aad: &aad })
            .map_err(|_| KeyringError::Random("the cipher refused to seal".into()))?;
        let mut out = String::with_capacity(SEALED_PREFIX.len() + 2 * (NONCE_LEN + sealed.len()));
        out.push_str(SEALED_PREFIX);
        out.push_str(&hex::encode(nonce));
        out.push_str(&hex::encode(sealed));
        Ok(out)
    }

    /// The plaintext signing key of `profile_id`/`kid` from its sealed form.
    pub fn unseal(&self, profile_id: &str, kid: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let refused = || KeyringError::Unseal { profile_id: profile_id.to_owned() };
        let bytes = sealed.strip_prefix(SEALED_PREFIX).and_then(|h| hex::decode(h).ok()).ok_or_else(refused)?;
        if bytes.len() <= NONCE_LEN {
            return Err(refused());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let aad = aad(profile_id, kid);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| refused())
    }
}

/// Whether a stored signing key is sealed (rather than a legacy plaintext).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

fn aad(profile_id: &str, kid: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + profile_id.len() + 1 + kid.len());
    aad.extend_from_slice(AAD_CONTEXT);
    aad.extend_from_slice(profile_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(kid.as_bytes());
    aad
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn seal_round_trip_bound_to_profile_and_kid() {
        let k = Keyring::for_tests([7; 32]);
        let key = [0xabu8; 32];
        let sealed = k.seal("id1", "kid1", &key).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains(&hex::encode(key)));
        assert_ne!(sealed, k.seal("id1", "kid1", &key).unwrap(), "fresh nonce per seal");
        assert_eq!(k.unseal("id1", "kid1", &sealed).unwrap().as_slice(), &key);
        for (id, kid) in [("id2", "kid1"), ("id1", "kid2"), ("id1kid1", ""), ("", "id1kid1")] {
            assert!(matches!(k.unseal(id, kid, &sealed), Err(KeyringError::Unseal { .. })), "{id}/{kid}");
        }
        assert!(Keyring::for_tests([8; 32]).unseal("id1", "kid1", &sealed).is_err(), "other key");
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert!(k.unseal("id1", "kid1", std::str::from_utf8(&flipped).unwrap()).is_err(), "tampered");
        assert!(k.unseal("id1", "kid1", &hex::encode(key)).is_err(), "plaintext is not sealed");
        assert!(k.unseal("id1", "kid1", "xc20p1:zz").is_err());
        let e = k.unseal("id1", "kid2", &sealed).unwrap_err().to_string();
        assert!(!e.contains(&sealed) && !e.contains(&hex::encode(key)), "{e}");
    }

    #[test]
    fn key_file_is_created_private_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/t.key");
        let a = Keyring::load_or_create(&path).unwrap();
        assert_eq!(permissions::mode(&path).unwrap(), 0o600);
        assert_eq!(permissions::mode(path.parent().unwrap()).unwrap(), 0o700);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        assert!(!format!("{a:?}").contains(text.trim()));
        let b = Keyring::load_or_create(&path).unwrap();
        assert_eq!(a.id(), b.id(), "an existing key file is kept");
        let sealed = a.seal("p", "k", b"secret").unwrap();
        assert_eq!(Keyring::load(&path, a.id()).unwrap().unseal("p", "k", &sealed).unwrap().as_slice(), b"secret");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary left");
    }

    #[test]
    fn key_file_errors_are_clear_and_hold_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.key");
        let e = Keyring::load(&path, "0011223344556677").unwrap_err();
        assert!(matches!(e, KeyringError::Missing { .. }));
        assert!(e.to_string().contains("does not exist") && e.to_string().contains("0011223344556677"), "{e}");

        let k = Keyring::load_or_create(&path).unwrap();
        let key_text = std::fs::read_to_string(&path).unwrap();
        let e = Keyring::load(&path, "0011223344556677").unwrap_err();
        assert!(matches!(e, KeyringError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains(k.id()) && e.to_string().contains("wrong key file"), "{e}");

        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let e = Keyring::load(&path, k.id()).unwrap_err();
        assert!(matches!(e, KeyringError::Exposed { mode: 0o640, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");

        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(Keyring::load_or_create(&path), Err(KeyringError::Malformed { .. })));
        std::fs::write(&path, key_text.trim().to_uppercase()).unwrap();
        assert_eq!(Keyring::load(&path, k.id()).unwrap().id(), k.id(), "hex case and newline do not matter");
        for e in [
            Keyring::load(&path, "x").unwrap_err().to_string(),
            KeyringError::Malformed { path: path.clone() }.to_string(),
        ] {
            assert!(!e.to_lowercase().contains(&key_text.trim().to_lowercase()), "{e}");
        }
    }

    #[test]
    fn default_key_file_sits_beside_the_database() {
        assert_eq!(default_key_file(Path::new("var/tollgate.db")), PathBuf::from("var/tollgate.key"));
        assert_eq!(default_key_file(Path::new("/x/store")), PathBuf::from("/x/store.key"));
        assert_eq!(default_key_file(Path::new("/x/a.key")), PathBuf::from("/x/a.key.key"));
    }
}
