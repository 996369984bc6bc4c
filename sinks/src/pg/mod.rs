//! PostgreSQL sink: `messages` (current state, monotonic status merge) and
//! `message_status_history` (every distinct status event), written in one transaction
//! per batch; the batch's offsets are stored only after the commit.

mod merge;
mod writer;

pub use merge::{merge_batch, MessageRow};
pub use writer::PgWriter;
