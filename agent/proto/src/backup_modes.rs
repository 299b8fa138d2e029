//! The words of the backup contract as enums: a backup's compression (its manifest's
//! `compression`) and a restore's override (`RestoreRequest::mode`). The wire keeps the strings;
//! code matches these, parsed once.

use std::fmt;

/// How a backup's data file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    None,
}

impl Compression {
    pub const ALL: [Compression; 2] = [Compression::Zstd, Compression::None];

    /// The manifest's word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    pub fn parse(word: &str) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|compression| compression.as_str() == word)
    }

    /// The name of the stored file in the backup's directory.
    pub const fn stored_file(self) -> &'static str {
        match self {
            Compression::Zstd => "data.tigerbeetle.zst",
            Compression::None => "data.tigerbeetle",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What a restore may override: `disaster-recovery` restores while peers may be running (the
/// whole cluster goes back to the backup), confirmed by the cluster id typed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMode {
    DisasterRecovery,
}

impl RestoreMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            RestoreMode::DisasterRecovery => "disaster-recovery",
        }
    }

    pub fn parse(word: &str) -> Option<RestoreMode> {
        (word == RestoreMode::DisasterRecovery.as_str()).then_some(RestoreMode::DisasterRecovery)
    }
}

impl fmt::Display for RestoreMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_strangers_are_refused() {
        for compression in Compression::ALL {
            assert_eq!(Compression::parse(compression.as_str()), Some(compression));
        }
        assert_eq!(Compression::parse("gzip"), None);
        assert_eq!(Compression::None.stored_file(), "data.tigerbeetle");
        assert_eq!(
            RestoreMode::parse("disaster-recovery"),
            Some(RestoreMode::DisasterRecovery)
        );
        assert_eq!(RestoreMode::parse("Disaster-Recovery"), None);
    }
}
