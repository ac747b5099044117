//! The `lectern` command line: `serve` (the default), `migrate`, and one file per command group:
//! [`users`] (`create|list|disable|enable|delete`), [`sessions`] (`list|show|revoke`) and [`ssf`]
//! (Shared Signals receivers, streams and links). Each prints plain text (or
//! `--json`) and exits non-zero with a one-line reason on failure.

pub mod sessions;
pub mod ssf;
pub mod users;

use clap::{Args, CommandFactory, Parser, Subcommand, error::ContextKind, error::ErrorKind};

use anyhow::{Context, bail};

use crate::{
    accounts::{self, Email},
    app::Application,
    clock::Clock,
    config::{DEFAULT_DATABASE_URL, ServeArgs, Settings},
    db,
    state::AppState,
};

pub use sessions::SessionsCommand;
pub use ssf::SsfCommand;
pub use users::UsersCommand;

#[derive(Debug, Parser)]
#[command(
    name = "lectern",
    version,
    about = "Lectern: a learning platform whose sign-out ends everything"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for `serve` when no command is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the site (the default).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Manage learners' accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Find and end learners' sign-ins, in the same Redis and database as the servers.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Shared Signals: the applications told when a sign-in ends, and links to identity providers.
    #[command(subcommand)]
    Ssf(SsfCommand),
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://...` (default: the file lectern.db) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl Cli {
    /// Whether this runs the server (logs go on) rather than a one-shot command.
    pub fn serves(&self) -> bool {
        matches!(self.command, None | Some(Command::Serve(_)))
    }
}

/// A setting clap refused, in the form every configuration error takes: one line naming the
/// environment variable (and the flag) and what is wrong with the value. `None` for every other
/// kind of command-line error, which clap explains itself.
pub fn setting_error(err: &clap::Error) -> Option<String> {
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let arg = err.get(ContextKind::InvalidArg)?.to_string();
    let flag = arg
        .split_whitespace()
        .next()?
        .trim_start_matches("--")
        .to_owned();
    let command = Cli::command();
    let env = std::iter::once(&command)
        .chain(command.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(flag.as_str()))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())?;
    // The value itself is not repeated: it may be a password or a URL that holds one.
    let why = std::error::Error::source(err)
        .map(ToString::to_string)
        .unwrap_or_else(|| "not a valid value".to_owned());
    Some(format!("{env} (--{flag}): {why}"))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(&cli.serve).await,
        Some(Command::Serve(args)) => serve(&args).await,
        Some(Command::Migrate(args)) => {
            let pool = open(&args).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Some(Command::Users(cmd)) => users::run(cmd).await,
        Some(Command::Sessions(cmd)) => sessions::run(cmd).await,
        Some(Command::Ssf(cmd)) => ssf::run(cmd).await,
    }
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::from_args(args)?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}

/// The servers' stores. Without `REDIS_URL` sign-ins live in one server's memory, out of reach.
pub(crate) async fn connect(args: &ServeArgs) -> anyhow::Result<AppState> {
    if args.redis_url.is_none() {
        bail!(
            "REDIS_URL is not set: without Redis, sign-ins live in the memory of the one server process, out of this command's reach"
        );
    }
    // These commands sign nothing (no cookie, no token), so they do not need the servers'
    // secret; one is made up when it is not given.
    let mut args = args.clone();
    if args.secret.is_none() {
        args.secret = Some(crate::crypto::random_token(48).into());
    }
    let settings = Settings::from_args(&args)?;
    AppState::connect(settings, Clock::system()).await
}

pub(crate) async fn learner(
    state: &AppState,
    email: &str,
    flag: &str,
) -> anyhow::Result<accounts::User> {
    let parsed = Email::parse(email).map_err(|m| anyhow::anyhow!("{flag}: {m}"))?;
    accounts::find_by_email(&state.db, &parsed)
        .await?
        .with_context(|| format!("no account with email {}", parsed.as_str()))
}

pub(crate) async fn open(args: &DbArgs) -> anyhow::Result<db::Pool> {
    let url = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or(DEFAULT_DATABASE_URL);
    db::connect(url).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_refused_setting_is_named_without_repeating_its_value() {
        for (flags, secret) in [
            (
                vec!["lectern", "--database-url", "mysql://u:Hunter2@h/x"],
                "Hunter2",
            ),
            (vec!["lectern", "--secret", "Hunter2-too-short"], "Hunter2"),
        ] {
            let err = Cli::try_parse_from(&flags).err().unwrap();
            let line = setting_error(&err).unwrap_or_default();
            assert!(!line.is_empty() && !line.contains(secret), "{line}");
            assert!(!line.contains("String("), "{line}");
        }
    }

    #[test]
    fn a_bad_setting_names_its_environment_variable() {
        for (flags, env) in [
            (
                vec!["lectern", "--access-ttl", "soon"],
                "LECTERN_ACCESS_TTL",
            ),
            (
                vec!["lectern", "serve", "--secure-cookies", "maybe"],
                "LECTERN_SECURE_COOKIES",
            ),
            (
                vec!["lectern", "--clear-site-data", "cache"],
                "LECTERN_CLEAR_SITE_DATA",
            ),
            (vec!["lectern", "--addr", "nowhere"], "LECTERN_ADDR"),
        ] {
            let err = Cli::try_parse_from(&flags).err().unwrap();
            let line = setting_error(&err).unwrap_or_default();
            assert!(line.starts_with(env), "{flags:?}: {line}");
            assert_eq!(line.lines().count(), 1);
        }
        let unknown = Cli::try_parse_from(["lectern", "--no-such-flag"])
            .err()
            .unwrap();
        assert!(setting_error(&unknown).is_none());
    }

    #[test]
    fn a_mistyped_option_in_the_id_place_is_refused_without_repeating_it() {
        let typo = "--redis-ur=redis://:hunter2@db:6379";
        let err = sessions::typed_id(typo).unwrap_err().to_string();
        assert!(
            !err.contains("hunter2") && !err.contains("redis-ur"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
        for id in ["-qAByLtdmLHl5Q7KCZv0jF", "--json_LHl5Q7KCZv0jFab", "nope"] {
            assert!(sessions::typed_id(id).is_ok(), "{id}");
        }
    }

    /// One sign-in id in 64 begins with `-` (URL-safe base64); one in 4,096 with `--`.
    #[test]
    fn a_sign_in_id_that_begins_with_a_hyphen_is_an_id_not_a_flag() {
        for id in [
            "-qAByLtdmLHl5Q7KCZv0jF",
            "-hAByLtdmLHl5Q7KCZv0jF",
            "--json_LHl5Q7KCZv0jFab",
        ] {
            for args in [
                vec!["lectern", "sessions", "show", id],
                vec!["lectern", "sessions", "show", id, "--json"],
                vec!["lectern", "sessions", "show", "--json", id],
                vec!["lectern", "sessions", "revoke", id],
                vec!["lectern", "sessions", "revoke", "--json", id],
            ] {
                let parsed = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                let (Some(Command::Sessions(command)), json) =
                    (parsed.command, args.contains(&"--json"))
                else {
                    panic!("{args:?}: not a sessions command");
                };
                match command {
                    SessionsCommand::Show {
                        id: got, json: j, ..
                    } => {
                        assert_eq!((got.as_str(), j), (id, json), "{args:?}");
                    }
                    SessionsCommand::Revoke {
                        id: got, json: j, ..
                    } => {
                        assert_eq!((got.as_deref(), j), (Some(id), json), "{args:?}");
                    }
                    SessionsCommand::List { .. } => panic!("{args:?}: parsed as list"),
                }
            }
        }
    }
}
