//! Keys and sealing: XChaCha20-Poly1305 for every stored byte, keyed BLAKE3 for chunk ids.
//!
//! The master key (from outside: a Secret, a file, an env var) only wraps the
//! repository keys stored in `config`; changing the master key re-wraps them
//! without touching data.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::error::RepoError;

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;

/// Sealed data did not authenticate: wrong key, wrong context, or damaged bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAuthentic;

/// The key that wraps the repository keys.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// 64 hex characters are the key itself; any other text (at least 16 characters) is
    /// stretched with BLAKE3's key derivation. Use `openssl rand -hex 32`.
    pub fn from_text(text: &str) -> Result<Self, RepoError> {
        let text = text.trim();
        if text.len() == 64
            && let Ok(bytes) = hex::decode(text)
            && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Ok(Self(key));
        }
        if text.len() < 16 {
            return Err(RepoError::BadKey(
                "shorter than 16 characters: generate one with `openssl rand -hex 32`".into(),
            ));
        }
        Ok(Self(blake3::derive_key(
            "rewind.dev repository master key v1",
            text.as_bytes(),
        )))
    }

    /// The key from a file (e.g. a mounted Secret).
    pub fn from_file(path: &std::path::Path) -> Result<Self, RepoError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RepoError::BadKey(format!("reading {}: {e}", path.display())))?;
        Self::from_text(&text)
    }
}

/// The repository's own keys: one encrypts, one names chunks.
#[derive(Clone)]
pub struct RepoKeys {
    encryption: [u8; 32],
    chunk_id: [u8; 32],
}

impl RepoKeys {
    /// Fresh random keys for a new repository.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 64];
        rand::fill(&mut bytes[..]);
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8; 64]) -> Self {
        let mut encryption = [0u8; 32];
        let mut chunk_id = [0u8; 32];
        encryption.copy_from_slice(&bytes[..32]);
        chunk_id.copy_from_slice(&bytes[32..]);
        Self {
            encryption,
            chunk_id,
        }
    }

    /// The keys wrapped by the master key (nonce ‖ ciphertext).
    pub fn wrap(&self, master: &MasterKey) -> Vec<u8> {
        let mut plain = [0u8; 64];
        plain[..32].copy_from_slice(&self.encryption);
        plain[32..].copy_from_slice(&self.chunk_id);
        seal_with(&master.0, b"rewind-repository-keys-v1", &plain)
    }

    /// Unwraps keys written by [`RepoKeys::wrap`].
    pub fn unwrap(wrapped: &[u8], master: &MasterKey) -> Result<Self, RepoError> {
        let plain = open_with(&master.0, b"rewind-repository-keys-v1", wrapped)
            .map_err(|_| RepoError::WrongKey)?;
        let bytes: [u8; 64] = plain
            .as_slice()
            .try_into()
            .map_err(|_| RepoError::corrupt("config", "wrapped keys have the wrong length"))?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The id of a chunk: keyed BLAKE3 of its plaintext (no one without the key learns content hashes).
    pub fn chunk_id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.chunk_id, data).as_bytes()
    }

    /// Encrypts and authenticates `plain`, bound to `context` (e.g. the object's name or chunk id).
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Vec<u8> {
        seal_with(&self.encryption, context, plain)
    }

    /// Decrypts what [`RepoKeys::seal`] produced with the same context.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, NotAuthentic> {
        open_with(&self.encryption, context, sealed)
    }
}

fn seal_with(key: &[u8; 32], context: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce[..]);
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plain,
                aad: context,
            },
        )
        .unwrap_or_default();
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

fn open_with(key: &[u8; 32], context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, NotAuthentic> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(NotAuthentic);
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().map_err(|_| NotAuthentic)?;
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed[NONCE_LEN..],
                aad: context,
            },
        )
        .map_err(|_| NotAuthentic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_context() {
        let keys = RepoKeys::generate();
        let sealed = keys.seal(b"ctx", b"secret");
        assert_eq!(keys.open(b"ctx", &sealed), Ok(b"secret".to_vec()));
        assert!(keys.open(b"other", &sealed).is_err());
        assert!(RepoKeys::generate().open(b"ctx", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(keys.open(b"ctx", &flipped).is_err());
    }

    #[test]
    fn wrapped_keys_need_the_right_master_key() {
        let master = MasterKey::from_text(&"ab".repeat(32)).expect("hex key");
        let keys = RepoKeys::generate();
        let wrapped = keys.wrap(&master);
        let opened = RepoKeys::unwrap(&wrapped, &master).expect("right key");
        assert_eq!(opened.chunk_id(b"x"), keys.chunk_id(b"x"));
        let wrong = MasterKey::from_text("a completely different passphrase").expect("passphrase");
        assert!(matches!(
            RepoKeys::unwrap(&wrapped, &wrong),
            Err(RepoError::WrongKey)
        ));
    }

    #[test]
    fn short_master_keys_are_refused() {
        assert!(matches!(
            MasterKey::from_text("short"),
            Err(RepoError::BadKey(_))
        ));
    }
}
