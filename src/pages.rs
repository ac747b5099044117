//! The site's HTML handlers, one file per feature. Each exposes a `router()`; `app` merges them
//! and puts each group behind the layers its rules need.

pub mod account;
pub mod bound;
pub mod confirm;
pub mod courses;
pub mod health;
pub mod home;
pub mod presence;
pub mod sign_in;
pub mod sign_out;
