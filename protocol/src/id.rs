//! Device identity: the 12-hex-digit id derived from a MAC address, the Unix account
//! name built from it, and the human alias an admin may give a device.

use crate::{Invalid, ACCOUNT_PREFIX, MAX_ALIAS_LEN};
use phonehome_plumbing::text::quoted;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A device id: a MAC address as 12 lowercase hex digits, no separators (`6466b34bde54`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    /// Accept exactly 12 lowercase hex digits. Anything else (upper case, colons,
    /// spaces, other lengths) is refused: ids become account names and file names.
    pub fn parse(s: &str) -> Result<DeviceId, Invalid> {
        if DeviceId::is_valid(s) {
            Ok(DeviceId(s.to_string()))
        } else {
            Err(Invalid(format!(
                "invalid device id {}: expected 12 lowercase hex digits, e.g. 6466b34bde54",
                quoted(s, 40)
            )))
        }
    }

    /// What `parse` accepts, without making an id (log scans check millions of lines).
    pub fn is_valid(s: &str) -> bool {
        s.len() == 12 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Accept a MAC in the usual notations and normalise it: 12 hex digits
    /// (`6466B34BDE54`), or six pairs of hex digits joined all by `:` or all by `-`
    /// (`64:66:b3:4b:de:54`, `64-66-B3-4B-DE-54`). Nothing around it, nothing else.
    /// Used for ids typed by people or set in a config file; `DeviceId::parse` stays
    /// strict for everything machine-generated.
    pub fn from_mac_text(s: &str) -> Result<DeviceId, Invalid> {
        let bad = || {
            Invalid(format!(
                "invalid device id {}: expected a MAC address such as 64:66:b3:4b:de:54 or 6466b34bde54",
                quoted(s, 40)
            ))
        };
        let hex = match s.len() {
            12 => s.to_string(),
            17 => {
                let sep = s.as_bytes()[2];
                if sep != b':' && sep != b'-' {
                    return Err(bad());
                }
                let pairs: Vec<&str> = s.split(sep as char).collect();
                if pairs.len() != 6 || pairs.iter().any(|p| p.len() != 2) {
                    return Err(bad());
                }
                pairs.concat()
            }
            _ => return Err(bad()),
        };
        DeviceId::parse(&hex.to_ascii_lowercase()).map_err(|_| bad())
    }

    pub fn from_mac(bytes: [u8; 6]) -> DeviceId {
        DeviceId(bytes.iter().map(|b| format!("{:02x}", b)).collect())
    }

    /// True for MACs that cannot identify a device: all zeros, broadcast, multicast.
    pub fn is_usable_mac(bytes: [u8; 6]) -> bool {
        bytes != [0; 6] && bytes != [0xff; 6] && bytes[0] & 1 == 0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server account of this device: `device6466b34bde54`.
    pub fn account(&self) -> String {
        format!("{}{}", ACCOUNT_PREFIX, self.0)
    }

    /// The device id of a server account name, if it is one.
    pub fn from_account(account: &str) -> Option<DeviceId> {
        account
            .strip_prefix(ACCOUNT_PREFIX)
            .and_then(|rest| DeviceId::parse(rest).ok())
    }
}

impl Serialize for DeviceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Only a valid id deserialises: a record naming `../x` is refused when read.
impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DeviceId, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Aliases: `^[a-z][a-z0-9-]{0,29}$`. They end up in tables, file contents and
/// messages; anything that could break a Match pattern, quoting or a path is refused.
/// An alias that reads as a device id (`abcdef012345`, `ab-cd-ef-01-23-45`) is
/// refused too: a command given it would otherwise reach that other device.
pub fn validate_alias(s: &str) -> Result<(), Invalid> {
    if DeviceId::from_mac_text(s).is_ok() {
        return Err(Invalid(format!(
            "invalid alias {}: it reads as a device id; choose a name that is not 12 hex digits",
            quoted(s, 40)
        )));
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_ALIAS_LEN
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!(
            "invalid alias {}: use 1 to {} characters a-z, 0-9 and '-', starting with a letter",
            quoted(s, 40),
            MAX_ALIAS_LEN
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strict_ids_only() {
        assert_eq!(
            DeviceId::parse("6466b34bde54").unwrap().as_str(),
            "6466b34bde54"
        );
        for bad in [
            "",
            "6466B34BDE54",
            "64:66:b3:4b:de:54",
            "6466b34bde5",
            "6466b34bde545",
            "6466b34bde5g",
            " 6466b34bde54",
            "6466b34bde54\n",
            "../../etc/pw",
        ] {
            assert!(DeviceId::parse(bad).is_err(), "{:?} accepted", bad);
        }
    }

    #[test]
    fn normalises_mac_notations() {
        for s in [
            "64:66:B3:4B:DE:54",
            "64-66-b3-4b-de-54",
            "6466b34bde54",
            "6466B34BDE54",
        ] {
            assert_eq!(DeviceId::from_mac_text(s).unwrap().as_str(), "6466b34bde54");
        }
        assert!(DeviceId::from_mac_text("64:66:b3:4b:de").is_err());
        assert!(DeviceId::from_mac_text("64:66:b3:4b:de:5x").is_err());
    }

    #[test]
    fn threat_30_ids_are_parsed_strictly() {
        for bad in [
            "-a-a-a-a-a-a-a-a-a-a-0-3-",
            "64:66-b3:4b-de:54",
            "6:466:b3:4b:de:54",
            "64::66b3:4b:de:54",
            " 6466b34bde54",
            "6466b34bde54\n",
            "64:66:b3:4b:de:54:",
            "6466.b34b.de54",
            "0x6466b34bde54",
        ] {
            assert!(DeviceId::from_mac_text(bad).is_err(), "{:?} accepted", bad);
        }
        let e = DeviceId::from_mac_text(&"x".repeat(10_000)).unwrap_err();
        assert!(
            e.0.len() < 200,
            "the error quotes a short prefix: {}",
            e.0.len()
        );
    }

    #[test]
    fn ids_deserialise_only_when_valid() {
        let id: DeviceId = serde_json::from_str("\"6466b34bde54\"").unwrap();
        assert_eq!(id.as_str(), "6466b34bde54");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"6466b34bde54\"");
        assert!(serde_json::from_str::<DeviceId>("\"../x\"").is_err());
    }

    #[test]
    fn from_mac_bytes_and_account_round_trip() {
        let id = DeviceId::from_mac([0x64, 0x66, 0xb3, 0x4b, 0xde, 0x54]);
        assert_eq!(id.account(), "device6466b34bde54");
        assert_eq!(DeviceId::from_account("device6466b34bde54"), Some(id));
        assert_eq!(DeviceId::from_account("root"), None);
        assert_eq!(DeviceId::from_account("device6466b34bde5"), None);
    }

    #[test]
    fn unusable_macs() {
        assert!(!DeviceId::is_usable_mac([0; 6]));
        assert!(!DeviceId::is_usable_mac([0xff; 6]));
        assert!(!DeviceId::is_usable_mac([0x01, 0, 0x5e, 0, 0, 1]));
        assert!(DeviceId::is_usable_mac([
            0x64, 0x66, 0xb3, 0x4b, 0xde, 0x54
        ]));
    }

    #[test]
    fn aliases() {
        for ok in [
            "a",
            "kitchen-router",
            "r1",
            "a23456789012345678901234567890",
        ] {
            assert!(validate_alias(ok).is_ok(), "{:?}", ok);
        }
        for bad in [
            "",
            "1router",
            "-x",
            "Router",
            "a b",
            "a\nb",
            "a\"b",
            "a*",
            "a?",
            "a,b",
            "!a",
            "routér",
            "a234567890123456789012345678901",
            // Threat 30: an alias that reads as another device's id.
            "abcdef012345",
            "ab-cd-ef-01-23-45",
        ] {
            assert!(validate_alias(bad).is_err(), "{:?} accepted", bad);
        }
    }
}
