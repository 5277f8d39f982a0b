//! Resource tokens come back with new values: same keys, same length, same alphabet.
//!
//! The alphabet is read from the old value: hex stays hex (and keeps its case),
//! otherwise the union of the character classes seen (lower, upper, digits,
//! and each punctuation character that occurred). Binary values get random
//! bytes. Values come from the thread-local CSPRNG.

/// The characters a new value is drawn from (pure).
pub fn alphabet_of(old: &str) -> Vec<char> {
    const LOWER_HEX: &str = "0123456789abcdef";
    const UPPER_HEX: &str = "0123456789ABCDEF";
    if !old.is_empty() && old.len() >= 8 {
        if old.chars().all(|c| LOWER_HEX.contains(c)) && old.chars().any(|c| c.is_ascii_lowercase())
        {
            return LOWER_HEX.chars().collect();
        }
        if old.chars().all(|c| UPPER_HEX.contains(c)) && old.chars().any(|c| c.is_ascii_uppercase())
        {
            return UPPER_HEX.chars().collect();
        }
    }
    let mut alphabet = Vec::new();
    if old.chars().any(|c| c.is_ascii_lowercase()) {
        alphabet.extend('a'..='z');
    }
    if old.chars().any(|c| c.is_ascii_uppercase()) {
        alphabet.extend('A'..='Z');
    }
    if old.chars().any(|c| c.is_ascii_digit()) {
        alphabet.extend('0'..='9');
    }
    let mut symbols: Vec<char> = old.chars().filter(|c| !c.is_ascii_alphanumeric()).collect();
    symbols.sort_unstable();
    symbols.dedup();
    alphabet.extend(symbols);
    if alphabet.len() < 2 {
        // A value of one repeated character has no alphabet to speak of: use letters and digits.
        alphabet = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    }
    alphabet
}

/// A new random value for a token: same length (in characters) and alphabet; different from the old one.
pub fn regenerate_text(old: &str) -> String {
    let alphabet = alphabet_of(old);
    let length = old.chars().count();
    loop {
        let fresh: String = (0..length)
            .map(|_| alphabet[rand::random_range(0..alphabet.len())])
            .collect();
        if fresh != old || length == 0 {
            return fresh;
        }
    }
}

/// A new value for raw Secret data: text keeps its alphabet, binary gets random bytes of the same length.
pub fn regenerate_bytes(old: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(old) {
        Ok(text) if !text.chars().any(char::is_control) => regenerate_text(text).into_bytes(),
        _ => {
            let mut fresh = vec![0u8; old.len()];
            rand::fill(&mut fresh[..]);
            fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_tokens_stay_hex_of_the_same_case_and_length() {
        let old = "0123456789abcdef0123456789abcdef";
        let fresh = regenerate_text(old);
        assert_eq!(fresh.len(), old.len());
        assert!(
            fresh.chars().all(|c| "0123456789abcdef".contains(c)),
            "{fresh}"
        );
        assert_ne!(fresh, old);
    }

    #[test]
    fn api_keys_keep_their_character_classes_and_symbols() {
        let old = "sk_live_0123456789abcdef";
        let fresh = regenerate_text(old);
        assert_eq!(fresh.chars().count(), old.chars().count());
        assert!(
            fresh
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{fresh}"
        );
        assert!(!fresh.chars().any(|c| c.is_ascii_uppercase()));
    }

    #[test]
    fn base64_like_values_draw_from_their_alphabet() {
        let alphabet = alphabet_of("QmFz+ZTY0/K2J5dGVzLw==");
        for c in ['A', 'z', '0', '+', '/', '='] {
            assert!(alphabet.contains(&c), "{c}");
        }
        assert!(!alphabet.contains(&'_'));
    }

    #[test]
    fn binary_values_get_random_bytes_of_the_same_length() {
        let old = [0u8, 159, 146, 150, 1, 2, 3, 4];
        let fresh = regenerate_bytes(&old);
        assert_eq!(fresh.len(), old.len());
        assert_ne!(fresh, old);
    }

    #[test]
    fn empty_values_stay_empty() {
        assert_eq!(regenerate_text(""), "");
    }
}
