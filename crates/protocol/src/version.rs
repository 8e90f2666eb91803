//! Protocol versions chatgate serves. A connection has a version (from its
//! URL); each request may ask for a higher one, never a lower one.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A supported Agent Chat API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// v3.5, the stable target.
    V3_5,
    /// v3.6, selectable per request (or per connection via the URL).
    V3_6,
}

impl Version {
    /// All supported versions, oldest first.
    pub const ALL: [Version; 2] = [Version::V3_5, Version::V3_6];

    /// `"3.5"` or `"3.6"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V3_5 => "3.5",
            Version::V3_6 => "3.6",
        }
    }

    /// Parses the path segment form (`v3.5`).
    pub fn from_path_segment(segment: &str) -> Option<Version> {
        segment.strip_prefix('v')?.parse().ok()
    }

    /// Index into per-version arrays (`[T; 2]`).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A version string that chatgate does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedVersion(pub String);

impl fmt::Display for UnsupportedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported API version `{}` (supported: 3.5, 3.6)",
            self.0
        )
    }
}

impl FromStr for Version {
    type Err = UnsupportedVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "3.5" => Ok(Version::V3_5),
            "3.6" => Ok(Version::V3_6),
            other => Err(UnsupportedVersion(other.to_string())),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!("3.5".parse::<Version>(), Ok(Version::V3_5));
        assert_eq!(Version::from_path_segment("v3.6"), Some(Version::V3_6));
        assert_eq!(Version::from_path_segment("3.6"), None);
        assert!("3.4".parse::<Version>().is_err());
        assert!(Version::V3_5 < Version::V3_6);
    }
}
