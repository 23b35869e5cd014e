//! The on-disk format, byte for byte. `docs/format.md` draws it; the constants and
//! compile-time checks here are the source of truth.
//!
//! All integers are little-endian. A store directory holds segment files
//! (`0000000001.seg`, …), an index checkpoint (`index.ckpt`) and a `LOCK` file.

pub mod durable;
pub mod frame;
pub mod record;
pub mod segment;

/// Reads a little-endian `u16` at `at`. The caller has checked the bounds.
pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// Reads a little-endian `u32` at `at`. The caller has checked the bounds.
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

/// Reads a little-endian `u64` at `at`. The caller has checked the bounds.
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}
