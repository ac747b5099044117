//! The `lectern` command line: `serve` (the default), `migrate`, `users create|list`.
//! Each prints plain text (or `--json`) and exits non-zero with a one-line reason on failure.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::{
    Application,
    auth::password::Passwords,
    config::{DEFAULT_DATABASE_URL, ServeArgs, Settings},
    db,
    users::{self, CreateError, DisplayName, Email, Password},
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
            let user = match users::create(&pool, &email, &name, hash).await {
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
            let all = users::list(&pool).await?;
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
                        crate::web::format_time(u.created_at)
                    );
                }
            }
            Ok(())
        }
    }
}
