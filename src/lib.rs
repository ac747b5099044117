//! Lectern: a server-rendered learning platform whose sign-out leaves nothing of the session behind.
//!
//! The binary is a thin shell over this library so that tests build exactly the router it serves.
//! Modules are layered, each importing only from layers below it (the README's code map):
//!
//! 1. foundations: [`clock`], [`config`], [`crypto`], [`db`], [`error`], [`layout`], [`assets`], [`telemetry`]
//! 2. web plumbing and stores: [`web`], [`store`]
//! 3. the domain: [`accounts`], [`courses`], [`audit`], [`signals`]
//! 4. identity: [`auth`] (services and extractors)
//! 5. [`state`]: the state handlers share
//! 6. handlers: [`pages`], [`api`], [`ssf`]
//! 7. [`app`], [`cli`] and the binary

pub mod accounts;
pub mod api;
pub mod app;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod courses;
pub mod crypto;
pub mod db;
pub mod error;
pub mod layout;
pub mod pages;
pub mod signals;
pub mod ssf;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod web;

pub use app::Application;
pub use config::Settings;
pub use error::{AppError, Result};
pub use state::AppState;
