//! The `lectern` command line: `serve` (the default), `migrate`, `users create|list`.
//! Each prints plain text (or `--json`) and exits non-zero with a one-line reason on failure.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand, error::ContextKind, error::ErrorKind};
use serde_json::json;

use crate::{
    accounts::{self, CreateError, DisplayName, Email, Password},
    app::Application,
    auth::passwords::Passwords,
    clock::Clock,
    config::{DEFAULT_DATABASE_URL, ServeArgs, Settings},
    db,
};

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
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://...` (default: the file lectern.db) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account; the password is read from the first line of standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
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
    let value = err
        .get(ContextKind::InvalidValue)
        .map(|v| format!(" {v:?}"))
        .unwrap_or_default();
    let why = std::error::Error::source(err)
        .map(ToString::to_string)
        .unwrap_or_else(|| "not a valid value".to_owned());
    Some(format!("{env} (--{flag}): invalid value{value}: {why}"))
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
        Some(Command::Users(cmd)) => users_command(cmd).await,
    }
}

async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::from_args(args)?;
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}

async fn open(args: &DbArgs) -> anyhow::Result<db::Pool> {
    let url = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or(DEFAULT_DATABASE_URL);
    db::connect(url).await
}

async fn users_command(cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create {
            email,
            display_name,
            json,
            db,
        } => {
            let email = Email::parse(&email).map_err(|m| anyhow::anyhow!("--email: {m}"))?;
            let name = DisplayName::parse(&display_name)
                .map_err(|m| anyhow::anyhow!("--display-name: {m}"))?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = Password::parse(line.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|m| anyhow::anyhow!("password: {m}"))?;
            let pool = open(&db).await?;
            db::migrate(&pool).await?;
            let hash = Passwords::new(1)?.hash(password.secret()).await?;
            let now = Clock::system().now();
            let user = match accounts::create(&pool, &email, &name, hash, now).await {
                Ok(user) => user,
                Err(CreateError::EmailTaken) => {
                    bail!("an account with email {} already exists", email.as_str())
                }
                Err(CreateError::Other(err)) => return Err(anyhow::Error::new(err)),
            };
            if json {
                println!(
                    "{}",
                    json!({"id": user.id, "email": user.email, "display_name": user.display_name})
                );
            } else {
                println!(
                    "created {} <{}> ({})",
                    user.display_name, user.email, user.id
                );
            }
            Ok(())
        }
        UsersCommand::List { json, db } => {
            let pool = open(&db).await?;
            db::migrate(&pool).await?;
            let all = accounts::list(&pool).await?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|u| json!({"id": u.id, "email": u.email, "display_name": u.display_name, "created_at": u.created_at}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if all.is_empty() {
                println!("no users");
            } else {
                println!(
                    "{:<36}  {:<32}  {:<24}  created",
                    "id", "email", "display name"
                );
                for u in &all {
                    println!(
                        "{:<36}  {:<32}  {:<24}  {}",
                        u.id,
                        u.email,
                        u.display_name,
                        crate::clock::format_time(u.created_at)
                    );
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
