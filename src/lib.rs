//! Lectern: a server-rendered learning platform whose sign-out leaves nothing of the session behind.
//!
//! The binary is a thin shell over this library so that tests build exactly the router it serves.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod courses;
pub mod db;
pub mod error;
pub mod pages;
pub mod store;
pub mod telemetry;
pub mod users;
pub mod web;

pub use app::{AppState, Application};
pub use config::Settings;
pub use error::{AppError, Result};
