//! The `lectern` command line: `serve` (the default), `migrate`, `users create|list`,
//! `sessions list|show|revoke`.
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
    /// Find and end learners' sign-ins, in the same Redis and database as the servers.
    #[command(subcommand)]
    Sessions(SessionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sign-ins, newest first.
    List {
        /// Only this learner's.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// Show one sign-in, live or ended.
    Show {
        /// A sign-in id is URL-safe base64, so it may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
    /// End one sign-in (ID) or every sign-in of a learner (--user EMAIL), on every instance.
    Revoke {
        #[arg(
            required_unless_present = "user",
            conflicts_with = "user",
            allow_hyphen_values = true
        )]
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        settings: ServeArgs,
    },
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
        Some(Command::Sessions(cmd)) => sessions::run(cmd).await,
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

mod sessions {
    //! `lectern sessions`: the operators' view of sign-ins, through the same services the
    //! servers use, so a revoke here is the same ending as a learner's sign-out.

    use std::collections::HashMap;

    use anyhow::{Context, bail};
    use serde_json::{Value, json};

    use super::SessionsCommand;
    use crate::{
        accounts::{self, Email},
        auth::{
            sign_ins::{EndReason, Liveness, SignIn},
            sign_out::{self, Owed},
        },
        clock::{self, Clock},
        config::{ServeArgs, Settings},
        state::AppState,
        web::ClientInfo,
    };

    /// The servers' stores. Without `REDIS_URL` sign-ins live in one server's memory, out of reach.
    async fn connect(args: &ServeArgs) -> anyhow::Result<AppState> {
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

    async fn learner(state: &AppState, email: &str) -> anyhow::Result<accounts::User> {
        let parsed = Email::parse(email).map_err(|m| anyhow::anyhow!("--user: {m}"))?;
        accounts::find_by_email(&state.db, &parsed)
            .await?
            .with_context(|| format!("no account with email {}", parsed.as_str()))
    }

    async fn emails(state: &AppState) -> anyhow::Result<HashMap<String, String>> {
        Ok(accounts::list(&state.db)
            .await?
            .into_iter()
            .map(|u| (u.id, u.email))
            .collect())
    }

    fn as_json(s: &SignIn, email: &str, status: &str) -> Value {
        let described = s.described();
        json!({
            "id": s.id,
            "user_id": s.user_id,
            "email": email,
            "created_at": clock::rfc3339(s.created_at),
            "last_seen_at": clock::rfc3339(s.last_active_at()),
            "expires_at": clock::rfc3339(s.expires_at),
            "ip": s.ip,
            "device": described.device,
            "browser": described.browser,
            "status": status,
        })
    }

    /// An id as typed. A sign-in id may begin with `-` (see `allow_hyphen_values` above); anything
    /// else that does is a mistyped option, refused without repeating it (it may carry a value such
    /// as a URL with a password).
    pub(super) fn typed_id(id: &str) -> anyhow::Result<()> {
        if id.starts_with('-') && !crate::auth::sign_out::is_sid(id) {
            bail!(
                "an argument that begins with '-' is neither an option of this command nor a sign-in id (see --help)"
            );
        }
        Ok(())
    }

    pub async fn run(cmd: SessionsCommand) -> anyhow::Result<()> {
        match cmd {
            SessionsCommand::List {
                user,
                json,
                settings,
            } => {
                let state = connect(&settings).await?;
                let only = match &user {
                    Some(email) => Some(learner(&state, email).await?),
                    None => None,
                };
                let live = state
                    .sign_ins
                    .live(only.as_ref().map(|u| u.id.as_str()))
                    .await?;
                let emails = emails(&state).await?;
                let email_of = |s: &SignIn| emails.get(&s.user_id).cloned().unwrap_or_default();
                if json {
                    let rows: Vec<Value> = live
                        .iter()
                        .map(|s| as_json(s, &email_of(s), "live"))
                        .collect();
                    println!("{}", Value::Array(rows));
                } else if live.is_empty() {
                    println!("no live sign-ins");
                } else {
                    println!(
                        "{:<22}  {:<32}  {:<20}  {:<20}  {:<15}  device, browser",
                        "id", "email", "signed in", "last active", "ip"
                    );
                    for s in &live {
                        let described = s.described();
                        println!(
                            "{:<22}  {:<32}  {:<20}  {:<20}  {:<15}  {}, {}",
                            s.id,
                            email_of(s),
                            clock::format_time(s.created_at),
                            s.last_active(),
                            s.ip,
                            described.device,
                            described.browser
                        );
                    }
                }
                Ok(())
            }
            SessionsCommand::Show { id, json, settings } => {
                typed_id(&id)?;
                let state = connect(&settings).await?;
                let s = state
                    .sign_ins
                    .find(&id)
                    .await?
                    .with_context(|| format!("no sign-in with id {id}"))?;
                let status = match state.sign_ins.liveness(&id).await? {
                    Liveness::Live(_) => "live".to_owned(),
                    Liveness::Ended(reason) => format!("ended ({})", reason.as_str()),
                };
                let email = emails(&state).await?.remove(&s.user_id).unwrap_or_default();
                if json {
                    println!("{}", as_json(&s, &email, &status));
                } else {
                    let described = s.described();
                    println!("id           {}", s.id);
                    println!("learner      {email} ({})", s.user_id);
                    println!("status       {status}");
                    println!("signed in    {}", s.started());
                    println!("last active  {}", s.last_active());
                    println!("expires      {}", clock::format_time(s.expires_at));
                    println!("ip           {}", s.ip);
                    println!("device       {}", described.device);
                    println!("browser      {}", described.browser);
                }
                Ok(())
            }
            SessionsCommand::Revoke {
                id,
                user,
                json,
                settings,
            } => {
                if let Some(id) = &id {
                    typed_id(id)?;
                }
                let state = connect(&settings).await?;
                let mut owed = Owed::default();
                let whom = match (&id, &user) {
                    (Some(id), _) => {
                        state
                            .sign_ins
                            .find(id)
                            .await?
                            .with_context(|| format!("no sign-in with id {id}"))?;
                        owed.add_sid(id);
                        match state.sign_ins.liveness(id).await? {
                            Liveness::Live(_) => format!("sign-in {id}"),
                            // Ending again is harmless and settles anything left behind.
                            Liveness::Ended(reason) => format!(
                                "sign-in {id}, which had already ended ({})",
                                reason.as_str()
                            ),
                        }
                    }
                    (None, Some(email)) => {
                        let learner = learner(&state, email).await?;
                        for sid in state.sign_ins.open_for_user(&learner.id).await? {
                            owed.add_sid(&sid);
                        }
                        format!("the sign-ins of {}", learner.email)
                    }
                    (None, None) => bail!("name a sign-in id or --user EMAIL"),
                };
                // Everything it reached: the sign-ins named, and every other sign-in held by a
                // browser session one of them held.
                let reached = sign_out::end_all(
                    &state.sign_ins,
                    &owed,
                    None,
                    EndReason::Revoked,
                    &ClientInfo::operator(),
                )
                .await
                .map_err(|unfinished| anyhow::Error::new(unfinished.error))?;
                let ended = reached.sids().len();
                if json {
                    println!("{}", json!({"ended": ended, "ids": reached.sids()}));
                } else {
                    println!("ended {whom} ({ended} in all)");
                }
                Ok(())
            }
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
