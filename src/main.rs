//! The `keyway` command.
//!
//! - `serve`: the main job (see `serve.rs`): the node and the admin HTTP API.
//! - `bundle`: an integrator's tools for a policy bundle (see `bundle.rs`): check, hash,
//!   try, build.
//! - `import`: people, tags and group memberships from a CSV file, through the admin API
//!   of a running server (see `import.rs`).
//! - `iq-sim`: simulated IQs against a running server (see `iq_sim.rs`): registered
//!   over HTTP, enrolled and sending door traffic over the IQ link.
//! - `simulate`: generate a site population, build the decision snapshot, answer a
//!   stream of door requests, and report how they were decided.

mod bundle;
mod import;
mod iq_sim;
mod serve;

use clap::{Parser, Subcommand};
use keyway_core::{Presented, Revision, Snapshot, decide};
use keyway_sim::{Population, PopulationSpec};
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

/// Keyway: an access-control engine for sites with doors.
#[derive(Debug, Parser)]
#[command(name = "keyway", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Keyway: the node (store, policy, decisions) and the admin HTTP API.
    Serve(serve::ServeArgs),
    /// Administer the instance from the command line.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check, hash, try and build policy bundles and their plugins.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Simulate IQs against a running `keyway serve`: register them on a site over the
    /// HTTP API, enrol them on the IQ link, send door traffic, and print a summary.
    IqSim(iq_sim::IqSimArgs),
    /// Import people, their tags and group memberships from a CSV file into a site of a
    /// running `keyway serve`, through its API (roles and vouchers apply). Prints a
    /// report of every row; exits with 2 when some row was refused. See docs/import.md.
    Import(import::ImportArgs),
    /// Generate a population, build the decision snapshot and answer door requests.
    Simulate {
        /// Scale relative to the gateway scale (1M credentials, 100k doors): 1 is full,
        /// 10 is a tenth.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        divisor: u32,
        /// How many requests to answer.
        #[arg(long, default_value_t = 1_000_000)]
        requests: usize,
        /// How many decisions to print in full.
        #[arg(long, default_value_t = 5)]
        show: usize,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create the instance operator (who issues vouchers). The password is read from
    /// standard input (one line), so it never appears in a process list or a shell history.
    CreateOperator {
        /// The operator's e-mail.
        #[arg(long)]
        email: String,
        /// Where the server keeps its data, and which database.
        #[command(flatten)]
        server: serve::ServeArgs,
    },
    /// Upload a firmware file; site admins then assign it to IQs of its model
    /// (`PUT /v1/sites/{site}/iqs/{iq}/firmware`), which fetch it over the link.
    UploadFirmware {
        /// The IQ model it is for (1 to 64 letters, digits, `.`, `-`, `_`, `+`).
        #[arg(long)]
        model: String,
        /// Its version (same characters), unique per model.
        #[arg(long)]
        version: String,
        /// The SHA-256 the file must have (hex), as published with it; checked before
        /// anything is stored.
        #[arg(long)]
        sha256: Option<String>,
        /// The file (at most 64 MiB).
        file: std::path::PathBuf,
        /// Where the server keeps its data, and which database.
        #[command(flatten)]
        server: serve::ServeArgs,
    },
}

fn run_admin(command: AdminCommand) -> ExitCode {
    let server = match &command {
        AdminCommand::CreateOperator { server, .. } | AdminCommand::UploadFirmware { server, .. } => server.clone(),
    };
    serve::init_logging(server.log_format);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let config = match serve::node_config(&server) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {}", report(&e));
                return ExitCode::FAILURE;
            }
        };
        // Read what the command needs before the node opens, so a bad file or password
        // fails without touching the database.
        let job = match AdminJob::prepare(command) {
            Ok(job) => job,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let node = match keyway_node::Node::open(config).await {
            Ok(node) => node,
            Err(e) => {
                eprintln!("error: the node does not start: {}", report(&e));
                return ExitCode::FAILURE;
            }
        };
        let outcome = job.run(&node).await;
        // The job's writes are committed; a close that does not end (a background task
        // of the node waiting on something) must not keep the command from exiting.
        if tokio::time::timeout(std::time::Duration::from_secs(10), node.close())
            .await
            .is_err()
        {
            tracing::warn!("the node did not close within 10 s; exiting anyway");
        }
        match outcome {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// An admin command with its input read.
enum AdminJob {
    CreateOperator {
        email: String,
        password: String,
    },
    UploadFirmware {
        model: String,
        version: String,
        content: Vec<u8>,
    },
}

impl AdminJob {
    fn prepare(command: AdminCommand) -> Result<AdminJob, String> {
        match command {
            AdminCommand::CreateOperator { email, .. } => {
                let mut password = String::new();
                std::io::stdin()
                    .read_line(&mut password)
                    .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
                let password = password.trim_end_matches(['\r', '\n']).to_owned();
                Ok(AdminJob::CreateOperator { email, password })
            }
            AdminCommand::UploadFirmware {
                model,
                version,
                sha256,
                file,
                ..
            } => {
                let size = std::fs::metadata(&file)
                    .map_err(|e| format!("cannot read `{}`: {e}", file.display()))?
                    .len();
                if size > keyway_store::MAX_FIRMWARE_BYTES as u64 {
                    return Err(format!(
                        "`{}` has {size} bytes; a firmware file has at most {}",
                        file.display(),
                        keyway_store::MAX_FIRMWARE_BYTES
                    ));
                }
                let content = std::fs::read(&file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
                if let Some(expected) = sha256 {
                    let actual = hex::encode(sha2::Sha256::digest(&content));
                    if !expected.trim().eq_ignore_ascii_case(&actual) {
                        return Err(format!(
                            "`{}` has sha256 {actual}, not the {} given",
                            file.display(),
                            expected.trim()
                        ));
                    }
                }
                Ok(AdminJob::UploadFirmware {
                    model,
                    version,
                    content,
                })
            }
        }
    }

    async fn run(self, node: &keyway_node::Node) -> Result<String, String> {
        match self {
            AdminJob::CreateOperator { email, password } => keyway_api::create_operator(node, &email, &password)
                .await
                .map(|account| format!("operator {} created (account {})", account.email, account.id.get()))
                .map_err(|e| report(&e)),
            AdminJob::UploadFirmware {
                model,
                version,
                content,
            } => node
                .store()
                .devices()
                .upload_firmware("operator:cli", &model, &version, &content, jiff::Timestamp::now())
                .await
                .map(|f| {
                    format!(
                        "firmware {} uploaded: model `{}`, version `{}`, {} bytes, sha256 {}",
                        f.id.get(),
                        f.model,
                        f.version,
                        f.size,
                        f.sha256
                    )
                })
                .map_err(|e| report(&e)),
        }
    }
}

/// The multi-threaded runtime every async command runs on; `None` (said on standard
/// error) when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn run_iq_sim(args: iq_sim::IqSimArgs) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(iq_sim::iq_sim(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_import(args: import::ImportArgs) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(import::import(args)) {
        Ok(totals) if totals.refused > 0 => ExitCode::from(2),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: serve::ServeArgs) -> ExitCode {
    serve::init_logging(args.log_format);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let config_args = args.clone();
    let api = move |node: keyway_node::Node, public_url: &str, link: keyway_api::LinkAdvert| {
        let state =
            keyway_api::AppState::new(node, api_config(&config_args, public_url, link)).map_err(|e| e.to_string())?;
        let metrics_state = state.clone();
        let streams_state = state.clone();
        // Events to e-mails and webhooks, off the request path; it stops with the streams.
        drop(state.spawn_notifier());
        Ok(serve::ApiParts {
            router: keyway_api::app(state),
            metrics: Box::new(move |out: &mut String| metrics_state.render_metrics(out)),
            close_streams: Box::new(move || streams_state.close_streams()),
        })
    };
    match runtime.block_on(serve::serve(args, api)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The API's configuration from `serve`'s flags.
fn api_config(args: &serve::ServeArgs, public_url: &str, link: keyway_api::LinkAdvert) -> keyway_api::ApiConfig {
    keyway_api::ApiConfig {
        public_url: public_url.to_owned(),
        smtp_relay: args.smtp_url.clone(),
        mail_file: serve::mail_file(&args.data_dir),
        request_timeout: std::time::Duration::from_secs(args.request_timeout_secs),
        max_body_bytes: args.max_body_bytes,
        // CORS is the server's outer layer (serve.rs), for every route.
        cors_origins: Vec::new(),
        // A cookie marked Secure is never sent back over plain HTTP.
        secure_cookie: public_url.starts_with("https://"),
        link: Some(link),
        webhook_allow_private: args.webhook_allow_private,
        ..keyway_api::ApiConfig::default()
    }
}

/// An error and its causes, for the operator's terminal: a cause the message already
/// ends with (`#[error("...: {0}")]` over a `#[from]` field) is not repeated.
fn report(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Admin(command) => run_admin(command),
        Command::Bundle(command) => bundle::run(command),
        Command::IqSim(args) => run_iq_sim(args),
        Command::Import(args) => run_import(args),
        Command::Simulate {
            divisor,
            requests,
            show,
        } => {
            let mut out = std::io::stdout().lock();
            match simulate(&mut out, divisor, requests, show) {
                Ok(code) => code,
                // A closed pipe (`keyway simulate | head`) is the reader's choice, not a failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn simulate(out: &mut impl Write, divisor: u32, request_count: usize, show: usize) -> std::io::Result<ExitCode> {
    let spec = PopulationSpec::scaled_down(divisor);
    writeln!(
        out,
        "generating {} credentials, {} people, {} doors, {} groups",
        spec.credentials, spec.people, spec.doors, spec.groups
    )?;
    let population = Population::generate(spec);
    let requests = population.requests(request_count, 11);
    let started = Instant::now();
    let snapshot = match Snapshot::build(Revision(1), population.records.iter().cloned()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: the generated population was refused: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    writeln!(
        out,
        "built snapshot {} in {:.2?} ({} sites)",
        snapshot.revision(),
        started.elapsed(),
        population.sites()
    )?;

    let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
    let started = Instant::now();
    for (i, r) in requests.iter().enumerate() {
        let decision = decide(
            &snapshot,
            r.door,
            Presented {
                kind: r.kind,
                secret: &r.secret,
            },
            r.at,
        );
        *by_reason.entry(decision.reason.code()).or_default() += 1;
        if i < show {
            writeln!(
                out,
                "  {} at {} with {:?} {}: {:?} ({}) on {}",
                r.door,
                r.at,
                r.kind,
                hex(&r.secret),
                decision.effect,
                decision.reason,
                decision.revision
            )?;
        }
    }
    let elapsed = started.elapsed();
    let per = elapsed.as_nanos() / requests.len().max(1) as u128;
    writeln!(
        out,
        "answered {} requests in {:.2?} ({per} ns each, one thread)",
        requests.len(),
        elapsed
    )?;
    for (reason, count) in &by_reason {
        writeln!(out, "  {reason:<22} {count}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
