//! Projections: read models derived from the global log, with checkpoints stored
//! atomically with their output, inline and async runners, rebuilds and reconciliation.
