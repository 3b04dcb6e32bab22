//! `tollgate-sidecar`: the HTTP server (`serve`) and the operator CLI
//! (`profile …`, `token generate`).
//!
//! Exit codes: 0 success, 1 operational failure (e.g. the database cannot be
//! opened or is unavailable), 2 bad input or usage, 3 profile not found,
//! 4 conflict (`--if-revision` did not match).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use tollgate_sidecar::auth::{load_token, ApiTokenError, ADMIN_TOKEN, DATA_TOKEN};
use tollgate_sidecar::server::{self, ServeConfig, ServeError};
use tollgate_sidecar::store::{random_hex, StoreError, StoreSpec, DEFAULT_DB_PATH};
use tollgate_sidecar::views;

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_CONFLICT: u8 = 4;

#[derive(Parser, Debug)]
#[command(name = "tollgate-sidecar", version, about = "Access-profile store and feed for the Tollgate Envoy filter")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP server (admin API, data API for the proxies, health).
    Serve(ServeArgs),
    /// Manage access profiles directly in the database file.
    Profile(ProfileArgs),
    /// Token helpers.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Args, Debug)]
struct DbArg {
    /// SQLite database file (its directory is created if needed).
    #[arg(
        long,
        env = "TOLLGATE_DB",
        default_value = DEFAULT_DB_PATH,
        global = true,
        value_name = "PATH"
    )]
    db: PathBuf,
    /// The store: a SQLite file path (as --db) or a PostgreSQL URL
    /// (postgres://user@host:port/dbname); overrides --db.
    #[arg(long, env = "TOLLGATE_STORE", global = true, value_name = "PATH|URL")]
    store: Option<String>,
    /// Key file the signing keys are sealed with (default: beside the
    /// database, e.g. var/tollgate.key; with PostgreSQL var/tollgate.key,
    /// which every sidecar of the fleet must share). Created, 0600, only
    /// for a store that holds no sealed key yet.
    #[arg(long, env = "TOLLGATE_KEY_FILE", global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,
}

impl DbArg {
    fn spec(&self) -> StoreSpec {
        match &self.store {
            Some(text) => StoreSpec::parse(text),
            None => StoreSpec::Sqlite(self.db.clone()),
        }
    }

    fn key_file(&self) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| self.spec().default_key_file())
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArg,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "TOLLGATE_SIDECAR_LISTEN", default_value = "127.0.0.1:8081", value_name = "ADDR")]
    listen: String,
    /// File holding the admin API token (else $TOLLGATE_ADMIN_TOKEN).
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// File holding the data API token (else $TOLLGATE_DATA_TOKEN).
    #[arg(long, value_name = "PATH")]
    data_token_file: Option<PathBuf>,
    /// How often to poll the store revision for changes made elsewhere
    /// (default 100 ms on SQLite; on PostgreSQL a 5000 ms backstop to LISTEN).
    #[arg(long, env = "TOLLGATE_POLL_MS", value_name = "MS", value_parser = clap::value_parser!(u64).range(10..))]
    poll_ms: Option<u64>,
}

#[derive(Args, Debug)]
struct ProfileArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(subcommand)]
    command: ProfileCommand,
}

#[derive(Subcommand, Debug)]
enum ProfileCommand {
    /// Create a profile; prints it with its client_id and client_secret.
    Create {
        /// Profile name (1-100 characters, no control characters).
        #[arg(long)]
        name: String,
        /// Allowed path prefix, e.g. /sales/ (repeatable).
        #[arg(long = "allow", value_name = "PREFIX", required = true)]
        allow: Vec<String>,
    },
    /// List all profiles.
    List,
    /// Show one profile (by id or client_id).
    Show {
        /// Profile id or client_id.
        id: String,
    },
    /// Replace the client secret, kid and signing key; prints the new secret.
    Rotate {
        /// Profile id or client_id.
        id: String,
        /// Refuse (exit 4) unless the profile is still at this revision.
        #[arg(long, value_name = "REV")]
        if_revision: Option<u64>,
    },
    /// Disable a profile.
    Disable {
        /// Profile id or client_id.
        id: String,
        /// Refuse (exit 4) unless the profile is still at this revision.
        #[arg(long, value_name = "REV")]
        if_revision: Option<u64>,
    },
    /// Enable a profile.
    Enable {
        /// Profile id or client_id.
        id: String,
        /// Refuse (exit 4) unless the profile is still at this revision.
        #[arg(long, value_name = "REV")]
        if_revision: Option<u64>,
    },
    /// Delete a profile.
    Delete {
        /// Profile id or client_id.
        id: String,
        /// Refuse (exit 4) unless the profile is still at this revision.
        #[arg(long, value_name = "REV")]
        if_revision: Option<u64>,
    },
    /// Replace a profile's allowed prefixes.
    SetPrefixes {
        /// Profile id or client_id.
        id: String,
        /// Allowed path prefix (repeatable).
        #[arg(long = "allow", value_name = "PREFIX", required = true)]
        allow: Vec<String>,
        /// Refuse (exit 4) unless the profile is still at this revision.
        #[arg(long, value_name = "REV")]
        if_revision: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Print a fresh random 32-byte token as 64 hex characters.
    Generate,
}

/// A failure to report: message and exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = if e.is_invalid_input() {
            EXIT_USAGE
        } else if e.is_not_found() {
            EXIT_NOT_FOUND
        } else if e.is_conflict() {
            EXIT_CONFLICT
        } else {
            EXIT_FAILURE
        };
        Failure::new(code, e.to_string())
    }
}

impl From<ApiTokenError> for Failure {
    fn from(e: ApiTokenError) -> Self {
        Failure::new(EXIT_USAGE, e.to_string())
    }
}

impl From<ServeError> for Failure {
    fn from(e: ServeError) -> Self {
        let code = match e {
            ServeError::SameTokens => EXIT_USAGE,
            _ => EXIT_FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_failure(&e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: {}", one_line(&f.message));
            ExitCode::from(f.code)
        }
    }
}

/// Help and version go to stdout with exit 0; usage errors become one
/// `error: …` line on stderr with exit code 2.
fn clap_failure(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let summary: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            let mut text = summary.join(" ");
            if text.is_empty() {
                text = "invalid usage".to_string();
            }
            let text = text.strip_prefix("error: ").unwrap_or(&text).to_string();
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: {text} (see --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Profile(args) => profile(args),
        Command::Token(TokenCommand::Generate) => {
            let token = random_hex(32)?;
            print_line(&token)
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let admin_token = load_token(ADMIN_TOKEN, args.admin_token_file.as_deref())?;
    let data_token = load_token(DATA_TOKEN, args.data_token_file.as_deref())?;
    server::run(ServeConfig {
        store: args.db.spec(),
        key_file: args.db.key_file(),
        poll_interval: args.poll_ms.map(std::time::Duration::from_millis),
        listen: args.listen,
        admin_token,
        data_token,
    })?;
    Ok(())
}

fn profile(args: ProfileArgs) -> Result<(), Failure> {
    let spec = args.db.spec();
    let mut store = spec.open(&args.db.key_file()).map_err(|e| {
        let f = Failure::from(e);
        Failure::new(EXIT_FAILURE, format!("cannot open database {}: {}", spec.describe(), f.message))
    })?;
    for exposure in store.exposures() {
        let _ = writeln!(std::io::stderr().lock(), "warning: {}", one_line(&exposure.to_string()));
    }
    match args.command {
        ProfileCommand::Create { name, allow } => {
            let created = store.create(&name, &allow)?;
            print_json(&views::CliSecretEnvelope::new(&created))
        }
        ProfileCommand::List => {
            let snap = store.list()?;
            print_json(&views::AdminList::new(&snap))
        }
        ProfileCommand::Show { id } => {
            let p = store.get(&id)?;
            print_json(&views::ProfileEnvelope::new(&p))
        }
        ProfileCommand::Rotate { id, if_revision } => {
            let rotated = store.rotate(&id, if_revision)?;
            print_json(&views::CliSecretEnvelope::new(&rotated))
        }
        ProfileCommand::Disable { id, if_revision } => {
            let p = store.set_enabled(&id, false, if_revision)?;
            print_json(&views::ProfileEnvelope::new(&p))
        }
        ProfileCommand::Enable { id, if_revision } => {
            let p = store.set_enabled(&id, true, if_revision)?;
            print_json(&views::ProfileEnvelope::new(&p))
        }
        ProfileCommand::Delete { id, if_revision } => {
            let deleted = store.delete(&id, if_revision)?;
            print_json(&views::Deleted { deleted: &deleted })
        }
        ProfileCommand::SetPrefixes { id, allow, if_revision } => {
            let p = store.set_prefixes(&id, &allow, if_revision)?;
            print_json(&views::ProfileEnvelope::new(&p))
        }
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot encode output: {e}")))?;
    print_line(&text)
}

fn print_line(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot write to stdout: {e}")))
}
