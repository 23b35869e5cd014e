//! What a background scrubber reports: the passes it made over the sealed log and the
//! damage it found. The embedded engine has one; other backends report none.

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// What the scrubber has done and found since the store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubStatus {
    /// Full passes over the sealed segments completed.
    pub passes: u64,
    /// Bytes checked and found intact, over all passes.
    pub bytes_verified: u64,
    /// The segment being checked now (`None`: between passes).
    pub current_segment: Option<u32>,
    /// When the last full pass ended (`None`: none has yet).
    pub last_pass_finished_at: Option<Timestamp>,
    /// Distinct damage found (by segment and offset), including any beyond the list.
    pub damage_found: u64,
    /// The first [`ScrubStatus::DAMAGE_LIST_MAX`] distinct damage reports, in the order
    /// found.
    pub damage: Vec<ScrubDamage>,
    /// Bytes of segment table entry blocks checked and found intact, over all passes
    /// (not in `bytes_verified`, which counts the log).
    #[serde(default)]
    pub table_bytes_verified: u64,
    /// Damaged segment tables found and rebuilt from their segments (a table is derived
    /// data: its damage costs nothing once rebuilt, so it is not in `damage`).
    #[serde(default)]
    pub tables_repaired: u64,
}

impl ScrubStatus {
    /// Most damage reports [`ScrubStatus::damage`] keeps (the first found); more are
    /// only counted, in [`ScrubStatus::damage_found`].
    pub const DAMAGE_LIST_MAX: usize = 64;
}

/// Damage the scrubber found in a sealed segment. The file is left as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubDamage {
    /// The segment's number (its file is `{segment:010}.seg`).
    pub segment: u32,
    /// Offset in the file of the first damaged frame (or header); the rest of the
    /// segment was not checked in that pass, since frame boundaries past damage cannot
    /// be trusted.
    pub offset: u64,
    /// What is wrong there.
    pub detail: String,
}
