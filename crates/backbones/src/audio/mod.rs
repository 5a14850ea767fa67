//! Audio encoders and their front end.

pub mod log_mel;
pub mod whisper;
