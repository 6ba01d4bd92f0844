//! SSH public keys as both sides must read them: a device's key (add-device) and the
//! server's host keys (printed by add-device, pinned by the agent).
//!
//! A key is judged by its *values*, decoded the way sshd decodes them, never by its
//! encoding: RSA integers with leading zero bytes are trimmed before their size is
//! counted (a 1024-bit modulus padded with zeros is 1024 bits), a negative integer is
//! refused, and the key is re-encoded canonically. The canonical blob is what gets
//! stored, compared and fingerprinted, so that one key has one spelling and its
//! fingerprint is the one sshd logs (sshd fingerprints its own re-encoding).
//!
//! Refused: unknown types (sk-* and DSA included), a type word that differs from the
//! type inside the blob, ed25519 keys not 32 bytes, ECDSA curves that do not match the
//! type or points of the wrong length or not uncompressed, RSA moduli under
//! [`MIN_RSA_BITS`] or over [`MAX_RSA_BITS`], RSA exponents under 3 or even, and
//! trailing bytes.

use crate::Invalid;
use phonehome_plumbing::text::{base64_decode, base64_encode, is_unsafe_char, quoted};
use std::fmt;

/// Smallest RSA modulus accepted, in bits (OpenSSH's own floor is 1024; 2048 is the
/// least anyone should still use).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus, in bits (OpenSSH's limit).
pub const MAX_RSA_BITS: usize = 16384;
/// Longest key line accepted (a 16384-bit RSA key is about 2.8 KB of base64).
pub const MAX_KEY_LINE: usize = 8 * 1024;

/// The key types phonehome accepts, with their wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    /// RSA, used with rsa-sha2-256/512 signatures (OpenSSH >= 8.8 refuses SHA-1).
    Rsa,
}

impl KeyType {
    pub const ALL: [KeyType; 5] = [
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::Rsa,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ssh-ed25519",
            KeyType::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyType::EcdsaP384 => "ecdsa-sha2-nistp384",
            KeyType::EcdsaP521 => "ecdsa-sha2-nistp521",
            KeyType::Rsa => "ssh-rsa",
        }
    }

    pub fn from_name(s: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.name() == s)
    }

    /// For an ECDSA type: the curve name inside the blob and the length of an
    /// uncompressed point (0x04 || X || Y).
    fn curve(self) -> Option<(&'static str, usize)> {
        match self {
            KeyType::EcdsaP256 => Some(("nistp256", 65)),
            KeyType::EcdsaP384 => Some(("nistp384", 97)),
            KeyType::EcdsaP521 => Some(("nistp521", 133)),
            _ => None,
        }
    }
}

/// A validated public key, held in its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    key_type: KeyType,
    blob: Vec<u8>,
}

/// Reads SSH wire-format fields (uint32 length + bytes).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let s = self.0.get(4..4usize.checked_add(len)?)?;
        self.0 = &self.0[4 + len..];
        Some(s)
    }

    /// An mpint as sshd reads it: refuse negative, trim leading zeros.
    fn positive_mpint(&mut self) -> Result<&'a [u8], String> {
        let raw = self.string().ok_or("the key data is truncated")?;
        if raw.first().is_some_and(|b| b & 0x80 != 0) {
            return Err("an RSA value is negative".into());
        }
        let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
        Ok(&raw[start..])
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// An mpint in its one canonical form: no leading zeros, one 0x00 if the top bit is set.
fn put_mpint(out: &mut Vec<u8>, magnitude: &[u8]) {
    if magnitude.first().is_some_and(|b| b & 0x80 != 0) {
        out.extend_from_slice(&(magnitude.len() as u32 + 1).to_be_bytes());
        out.push(0);
        out.extend_from_slice(magnitude);
    } else {
        put_string(out, magnitude);
    }
}

fn bits(magnitude: &[u8]) -> usize {
    match magnitude.first() {
        None => 0,
        Some(b) => magnitude.len() * 8 - b.leading_zeros() as usize,
    }
}

impl PublicKey {
    /// Parse `TYPE BASE64`, optionally followed by a comment (dropped) when
    /// `comment_allowed`. Options before the type, control characters, and anything
    /// [the module](self) lists are refused with the reason.
    pub fn parse(line: &str, comment_allowed: bool) -> Result<PublicKey, Invalid> {
        let bad = |why: String| Invalid(why);
        if line.len() > MAX_KEY_LINE {
            return Err(bad(format!("longer than {} bytes", MAX_KEY_LINE)));
        }
        if line.chars().any(is_unsafe_char) {
            return Err(bad(
                "it contains a newline, tab or other control character".into()
            ));
        }
        let mut words = line.split(' ').filter(|w| !w.is_empty());
        let type_word = words.next().ok_or_else(|| bad("it is empty".into()))?;
        let key_type = KeyType::from_name(type_word).ok_or_else(|| {
            if type_word.contains(['=', ',', '"']) {
                bad("key options are not accepted (the key line is generated)".into())
            } else {
                bad(format!(
                    "unsupported key type {} (use {})",
                    quoted(type_word, 40),
                    KeyType::ALL.map(KeyType::name).join(", ")
                ))
            }
        })?;
        let b64 = words
            .next()
            .ok_or_else(|| bad("no base64 after the key type".into()))?;
        if !comment_allowed && words.next().is_some() {
            return Err(bad("expected exactly two words, TYPE BASE64".into()));
        }
        let blob = base64_decode(b64).ok_or_else(|| {
            bad("the key data is not valid base64 (cut short or mistyped?)".into())
        })?;
        PublicKey::from_blob(key_type, &blob).map_err(bad)
    }

    /// Decode `blob` (which must say `key_type`) to its values, check them, and keep
    /// the canonical re-encoding.
    pub fn from_blob(key_type: KeyType, blob: &[u8]) -> Result<PublicKey, String> {
        let mut r = Reader(blob);
        let truncated = || "the key data is truncated".to_string();
        let embedded = r.string().ok_or_else(truncated)?;
        if embedded != key_type.name().as_bytes() {
            return Err(format!(
                "the key data says {} but the line says {}",
                quoted(&String::from_utf8_lossy(embedded), 40),
                key_type.name()
            ));
        }
        let mut canonical = Vec::with_capacity(blob.len());
        put_string(&mut canonical, embedded);
        match key_type {
            KeyType::Ed25519 => {
                let pk = r.string().ok_or_else(truncated)?;
                if pk.len() != 32 {
                    return Err(format!("an ed25519 key is 32 bytes, this one {}", pk.len()));
                }
                put_string(&mut canonical, pk);
            }
            KeyType::Rsa => {
                let e = r.positive_mpint()?;
                let n = r.positive_mpint()?;
                let n_bits = bits(n);
                if n_bits < MIN_RSA_BITS {
                    return Err(format!(
                        "RSA key of {} bits, at least {} are required",
                        n_bits, MIN_RSA_BITS
                    ));
                }
                if n_bits > MAX_RSA_BITS {
                    return Err(format!(
                        "RSA key of {} bits, at most {} are accepted",
                        n_bits, MAX_RSA_BITS
                    ));
                }
                let e_odd = e.last().is_some_and(|b| b & 1 == 1);
                if bits(e) < 2 || !e_odd || bits(e) > n_bits {
                    return Err("the RSA exponent is not an odd number of at least 3".into());
                }
                put_mpint(&mut canonical, e);
                put_mpint(&mut canonical, n);
            }
            _ => {
                let (curve, point_len) = key_type.curve().expect("ECDSA types have a curve");
                let named = r.string().ok_or_else(truncated)?;
                if named != curve.as_bytes() {
                    return Err(format!(
                        "the key's curve {} does not match its type {}",
                        quoted(&String::from_utf8_lossy(named), 20),
                        key_type.name()
                    ));
                }
                let q = r.string().ok_or_else(truncated)?;
                if q.len() != point_len || q[0] != 4 {
                    return Err(format!(
                        "the {} point is not an uncompressed point of {} bytes",
                        curve, point_len
                    ));
                }
                put_string(&mut canonical, named);
                put_string(&mut canonical, q);
            }
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the key data", r.0.len()));
        }
        Ok(PublicKey {
            key_type,
            blob: canonical,
        })
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The canonical wire blob (what sshd fingerprints).
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The canonical base64 of the blob.
    pub fn base64(&self) -> String {
        base64_encode(&self.blob, true)
    }
}

/// `TYPE BASE64`, canonical.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key_type.name(), self.base64())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Real keys (ssh-keygen / dropbearkey), in the forms people paste.
    pub const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILo/7f/t4SCsY5esYWH66w/Gi0LLPrSxIn3ov9YeZW0s";

    fn blob_of(line: &str) -> Vec<u8> {
        base64_decode(line.split(' ').nth(1).unwrap()).unwrap()
    }

    fn line_of(t: &str, blob: &[u8]) -> String {
        format!("{} {}", t, base64_encode(blob, true))
    }

    /// An RSA blob from raw e and n field bytes (as written, not canonicalised).
    pub fn rsa_blob(e: &[u8], n: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        put_string(&mut b, b"ssh-rsa");
        put_string(&mut b, e);
        put_string(&mut b, n);
        b
    }

    fn modulus(bits: usize) -> Vec<u8> {
        let mut n = vec![0xabu8; bits / 8];
        n[0] = 0xc1;
        n
    }

    #[test]
    fn canonical_keys_round_trip() {
        let k = PublicKey::parse(&format!("{}  admin@laptop extra words", ED25519), true).unwrap();
        assert_eq!(k.to_string(), ED25519);
        assert_eq!(k.key_type(), KeyType::Ed25519);
        assert!(PublicKey::parse(&format!("{} comment", ED25519), false).is_err());
        let rsa = rsa_blob(&[1, 0, 1], &[&[0u8][..], &modulus(2048)].concat());
        let k = PublicKey::parse(&line_of("ssh-rsa", &rsa), false).unwrap();
        assert_eq!(k.blob(), &rsa[..], "already canonical");
    }

    #[test]
    fn threat_24_rsa_keys_are_judged_by_value_not_encoding() {
        // 1024-bit modulus behind 130 zero bytes: 1024 bits, whatever its length.
        let padded = [vec![0u8; 130], vec![0], modulus(1024)].concat();
        let e = PublicKey::parse(&line_of("ssh-rsa", &rsa_blob(&[1, 0, 1], &padded)), false)
            .unwrap_err();
        assert!(e.0.contains("1024 bits"), "{}", e);
        // A zero-padded exponent is the same key: the same canonical form.
        let n = [&[0u8][..], &modulus(2048)].concat();
        let plain = PublicKey::from_blob(KeyType::Rsa, &rsa_blob(&[1, 0, 1], &n)).unwrap();
        let padded_e =
            PublicKey::from_blob(KeyType::Rsa, &rsa_blob(&[0, 0, 0, 1, 0, 1], &n)).unwrap();
        assert_eq!(plain, padded_e);
        assert_eq!(plain.to_string(), padded_e.to_string());
        // Exponents 1, 0 and even ones; negative values.
        for e in [&[1u8][..], &[], &[0], &[1, 0, 0], &[2]] {
            assert!(
                PublicKey::from_blob(KeyType::Rsa, &rsa_blob(e, &n)).is_err(),
                "{:?}",
                e
            );
        }
        let negative = modulus(2048);
        assert!(
            PublicKey::from_blob(KeyType::Rsa, &rsa_blob(&[1, 0, 1], &negative))
                .unwrap_err()
                .contains("negative")
        );
        let huge = [&[0u8][..], &modulus(16392)].concat();
        assert!(PublicKey::from_blob(KeyType::Rsa, &rsa_blob(&[3], &huge)).is_err());
    }

    #[test]
    fn threat_24_ed25519_and_ecdsa_shapes() {
        let mut b = Vec::new();
        put_string(&mut b, b"ssh-ed25519");
        put_string(&mut b, &[7; 31]);
        assert!(PublicKey::from_blob(KeyType::Ed25519, &b)
            .unwrap_err()
            .contains("32 bytes"));
        let ecdsa = |t: &str, curve: &str, q: &[u8]| {
            let mut b = Vec::new();
            put_string(&mut b, t.as_bytes());
            put_string(&mut b, curve.as_bytes());
            put_string(&mut b, q);
            b
        };
        let p256 = [&[4u8][..], &[9; 64]].concat();
        assert!(PublicKey::from_blob(
            KeyType::EcdsaP256,
            &ecdsa("ecdsa-sha2-nistp256", "nistp256", &p256)
        )
        .is_ok());
        for (curve, q) in [
            ("nistp384", p256.clone()),
            ("nistp256", p256[..64].to_vec()),
            ("nistp256", [&[2u8][..], &[9; 32]].concat()),
            ("nistp256", [&[3u8][..], &[9; 64]].concat()),
        ] {
            assert!(
                PublicKey::from_blob(KeyType::EcdsaP256, &ecdsa("ecdsa-sha2-nistp256", curve, &q))
                    .is_err(),
                "{} {}",
                curve,
                q.len()
            );
        }
    }

    #[test]
    fn hostile_lines_are_refused() {
        let body = ED25519.split(' ').nth(1).unwrap();
        let mut trailing = blob_of(ED25519);
        trailing.push(0);
        for bad in [
            format!("{}\nssh-ed25519 {}", ED25519, body),
            format!("ssh-ed25519\t{}", body),
            format!("restrict,command=\"/bin/sh\" {}", ED25519),
            format!("ssh-dss {}", body),
            format!("sk-ssh-ed25519@openssh.com {}", body),
            format!("ssh-rsa {}", body),
            "ssh-ed25519".to_string(),
            "ssh-ed25519 AAAA".to_string(),
            "ssh-ed25519 not-base64!".to_string(),
            String::new(),
            format!("{}\r", ED25519),
            format!("{}\u{202e}", ED25519),
            line_of("ssh-ed25519", &trailing),
            // Cut at a base64 boundary: decodes, but the key is short.
            format!("ssh-ed25519 {}", &body[..body.len() - 4]),
        ] {
            assert!(PublicKey::parse(&bad, true).is_err(), "{:?}", bad);
        }
    }
}
