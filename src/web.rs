//! Web plumbing every handler shares, none of it about identity: client facts, forms, redirects,
//! cache rules, security headers, cookies' names and removals, and the embedded static files.

pub mod cache;
pub mod client;
pub mod cookies;
pub mod failures;
pub mod forms;
pub mod navigation;
pub mod security;
pub mod static_files;
pub mod user_agent;

pub use client::{ClientInfo, TrustedProxies};
pub use forms::{MaybeForm, PageForm, PagePath, PageQuery};
pub use navigation::{SIGNED_OUT_HOME, local_path, login_required, query_escape, redirect};
