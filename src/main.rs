//! The `civicpulse` command: serve (default), migrate, user create, token.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use actix_socketio::engineio::limits::AcceptErrorLog;
use civicpulse::config::Config;
use civicpulse::db::{Db, PoolOptions};
use civicpulse::domain::users::{self, NewUser};
use civicpulse::domain::{DomainError, Role};

#[derive(Parser)]
#[command(name = "civicpulse", version, about = "Realtime backend for civic issue reporting")]
struct Cli {
    /// Overrides HOST.
    #[arg(long, global = true)]
    host: Option<String>,
    /// Overrides PORT.
    #[arg(long, global = true)]
    port: Option<String>,
    /// Overrides DATABASE_URL.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print an access token for an existing user (for scripts and load tests).
    Token {
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user of any role; prints the new user's id.
    Create {
        #[arg(long, value_parser = ["citizen", "official", "admin"])]
        role: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        city: Option<String>,
    },
}

/// Argon2 allocates 19 MiB per hash. glibc's malloc raises its mmap
/// threshold to the size of the first such block freed, after which every
/// later one comes from the heap of whichever thread hashed and is never
/// returned (hundreds of MiB after a burst of sign-ins). A fixed threshold
/// keeps big blocks mmapped, so their memory goes back when they are freed.
fn keep_large_allocations_returnable() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    keep_large_allocations_returnable();
    let logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .build();
    // At least errors, so that actix-server's accept errors are counted.
    let level = logger.filter().max(log::LevelFilter::Error);
    // actix-server logs every failed accept() (every 500 ms while out of
    // descriptors): one line per episode instead, and a count in /metrics.
    if log::set_boxed_logger(Box::new(AcceptErrorLog(logger))).is_ok() {
        log::set_max_level(level);
    }
    let cli = Cli::parse();

    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    for (name, flag) in [("HOST", &cli.host), ("PORT", &cli.port), ("DATABASE_URL", &cli.database_url)] {
        if let Some(value) = flag {
            vars.insert(name.to_string(), value.clone());
        }
    }
    let config = match Config::from_vars(&vars) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("civicpulse: {e}");
            return ExitCode::from(2);
        }
    };

    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            actix_web::rt::System::new().block_on(civicpulse::serve(config)).map_err(|e| e.to_string())
        }
        Command::Migrate => Db::open(&config.database_url, PoolOptions::single(config.db_timeout))
            .map(|_| log::info!("migrations applied"))
            .map_err(|e| e.to_string()),
        Command::User { command: UserCommand::Create { role, email, password, name, city } } => {
            create_user(&config, role, email, password, name, city)
        }
        Command::Token { user } => token(&config, &user),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("civicpulse: {e}");
            ExitCode::FAILURE
        }
    }
}

fn create_user(
    config: &Config,
    role: String,
    email: String,
    password: String,
    name: String,
    city: Option<String>,
) -> Result<(), String> {
    let db =
        Db::open(&config.database_url, PoolOptions::single(config.db_timeout)).map_err(|e| e.to_string())?;
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let role = Role::parse(&role).ok_or("unknown role")?;
    let new = NewUser { email, password, display_name: name, city, avatar_url: None, role };
    let user = users::create_blocking(&mut conn, new).map_err(describe)?;
    println!("{}", user.id);
    Ok(())
}

fn token(config: &Config, user_id: &str) -> Result<(), String> {
    if config.jwt_secret_generated {
        return Err("JWT_SECRET is not set: a token signed with a random secret would be useless".into());
    }
    let db =
        Db::open(&config.database_url, PoolOptions::single(config.db_timeout)).map_err(|e| e.to_string())?;
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let user = users::find_user(&mut conn, user_id).map_err(describe)?.ok_or("no such user")?;
    let keys = civicpulse::auth::TokenKeys::new(&config.jwt_secret, config.access_token_ttl);
    let role = Role::parse(&user.role).unwrap_or(Role::Citizen);
    println!("{}", keys.issue(&user.id, &user.display_name, role, user.city.as_deref(), None));
    Ok(())
}

fn describe(e: DomainError) -> String {
    match e {
        DomainError::Validation(fields) => {
            fields.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("; ")
        }
        other => other.to_string(),
    }
}
