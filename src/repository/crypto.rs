//! Keys and sealing: XChaCha20-Poly1305 for every stored byte, keyed BLAKE3 for chunk ids.
//!
//! The master key (from outside: a Secret, a file, an env var) only wraps the
//! repository keys stored in `config`; changing the master key re-wraps them
//! without touching data.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

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
    /// 64 hex characters are the key itself; any other text (at least 16 bytes) is
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
                "shorter than 16 bytes: generate one with `openssl rand -hex 32`".into(),
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

    /// A buffer for [`RepoKeys::seal_buffer`]: room for the nonce, and capacity for
    /// `plain_capacity` bytes of plaintext and the tag.
    pub fn sealing_buffer(plain_capacity: usize) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(NONCE_LEN + plain_capacity + TAG_LEN);
        buffer.resize(NONCE_LEN, 0);
        buffer
    }

    /// [`RepoKeys::seal`] without copying: `buffer` is a [`RepoKeys::sealing_buffer`] with
    /// the plaintext appended; it is encrypted where it lies and returned as the sealed bytes.
    pub fn seal_buffer(&self, context: &[u8], buffer: Vec<u8>) -> Vec<u8> {
        seal_buffer_with(&self.encryption, context, buffer)
    }

    /// Decrypts what [`RepoKeys::seal`] produced with the same context.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, NotAuthentic> {
        open_with(&self.encryption, context, sealed)
    }

    /// Decrypts `sealed` where it lies (no copy, no allocation); returns the plaintext's range
    /// within it. On failure the bytes are left scrambled and must not be used.
    pub fn open_in_place(
        &self,
        context: &[u8],
        sealed: &mut [u8],
    ) -> Result<std::ops::Range<usize>, NotAuthentic> {
        open_in_place_with(&self.encryption, context, sealed)
    }
}

fn seal_with(key: &[u8; 32], context: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buffer = RepoKeys::sealing_buffer(plain.len());
    buffer.extend_from_slice(plain);
    seal_buffer_with(key, context, buffer)
}

fn seal_buffer_with(key: &[u8; 32], context: &[u8], mut buffer: Vec<u8>) -> Vec<u8> {
    if buffer.len() < NONCE_LEN {
        return Vec::new();
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce[..]);
    buffer[..NONCE_LEN].copy_from_slice(&nonce);
    // Fails only for a message beyond 256 GiB; an empty blob then never opens.
    match cipher.encrypt_inout_detached(
        &XNonce::from(nonce),
        context,
        buffer[NONCE_LEN..].as_mut().into(),
    ) {
        Ok(tag) => {
            buffer.extend_from_slice(&tag);
            buffer
        }
        Err(_) => Vec::new(),
    }
}

fn open_with(key: &[u8; 32], context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, NotAuthentic> {
    let mut buffer = sealed.to_vec();
    let plain = open_in_place_with(key, context, &mut buffer)?;
    buffer.truncate(plain.end);
    buffer.drain(..plain.start);
    Ok(buffer)
}

fn open_in_place_with(
    key: &[u8; 32],
    context: &[u8],
    sealed: &mut [u8],
) -> Result<std::ops::Range<usize>, NotAuthentic> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(NotAuthentic);
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().map_err(|_| NotAuthentic)?;
    let (message, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let tag = Tag::try_from(&*tag).map_err(|_| NotAuthentic)?;
    cipher
        .decrypt_inout_detached(&XNonce::from(nonce), context, message.into(), &tag)
        .map_err(|_| NotAuthentic)?;
    Ok(NONCE_LEN..sealed.len() - TAG_LEN)
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
    fn opening_in_place_yields_the_plaintext_and_refuses_what_open_refuses() {
        let keys = RepoKeys::generate();
        let sealed = keys.seal(b"ctx", b"secret");
        let mut buffer = sealed.clone();
        let plain = keys.open_in_place(b"ctx", &mut buffer).expect("opens");
        assert_eq!(&buffer[plain], b"secret");
        assert!(keys.open_in_place(b"other", &mut sealed.clone()).is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(keys.open_in_place(b"ctx", &mut flipped).is_err());
        assert!(keys.open_in_place(b"ctx", &mut [0u8; 39]).is_err());
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
