//! `keyway import`: people, their tags and their group memberships from a CSV file, sent
//! to a running server through the admin API (`POST /v1/sites/{site}/import`) in
//! batches, so that roles and vouchers apply as for people made by hand. The format is
//! in `docs/import.md`; `docs/import-example.csv` is an example.
//!
//! Every row gets a line in the report (CSV on standard output, or `--report FILE`):
//! created, updated, skipped or refused, and why. A summary goes to standard error, with
//! a progress bar when that is a terminal. Re-running the same file changes nothing.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

/// What to import, and where.
#[derive(Clone, Debug, Args)]
pub struct ImportArgs {
    /// The CSV file: a header line naming the columns `external_id`, `name`, and
    /// optionally `role`, `tags`, `groups` (several tags or groups separated by `;`).
    file: PathBuf,
    /// The site to import into.
    #[arg(long)]
    site: u32,
    /// The server's base URL.
    #[arg(long, env = "KEYWAY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A session or API token of someone who may add people on the site (an
    /// environment variable keeps it out of the process list).
    #[arg(long, env = "KEYWAY_TOKEN", hide_env_values = true)]
    token: String,
    /// Judge every row and report, but write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rows per request (the server takes at most 1,000).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    batch: u32,
    /// Write the per-row report to this file instead of standard output.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// The columns a file may have; the first two are required.
const COLUMNS: [&str; 5] = ["external_id", "name", "role", "tags", "groups"];

/// The most bytes of rows one request carries (half the server's default body limit).
const MAX_BATCH_BYTES: usize = 512 << 10;

/// A failure, said for a person at a terminal.
type ImportError = String;

/// The totals of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Rows that made a person.
    pub created: u64,
    /// Rows that added a tag or a group to someone imported before.
    pub updated: u64,
    /// Rows with nothing to do.
    pub skipped: u64,
    /// Rows refused, here or by the server.
    pub refused: u64,
}

/// One row read from the file, or why it could not be read.
enum ReadRow {
    Row(Value),
    Unreadable {
        line: u64,
        external_id: String,
        why: String,
    },
}

/// Where each column is in the file.
struct Layout {
    index: [Option<usize>; 5],
}

impl Layout {
    fn of(header: &csv::StringRecord) -> Result<Layout, ImportError> {
        let mut index = [None; 5];
        for (at, name) in header.iter().enumerate() {
            let name = name.trim().trim_start_matches('\u{feff}');
            let Some(column) = COLUMNS.iter().position(|c| *c == name) else {
                return Err(format!(
                    "unknown column `{}` in the header (known: {})",
                    name.escape_default(),
                    COLUMNS.join(", ")
                ));
            };
            if index[column].replace(at).is_some() {
                return Err(format!("column `{name}` appears twice in the header"));
            }
        }
        for required in 0..2 {
            if index[required].is_none() {
                return Err(format!("the header has no `{}` column", COLUMNS[required]));
            }
        }
        Ok(Layout { index })
    }

    fn field<'r>(&self, record: &'r csv::StringRecord, column: usize) -> &'r str {
        self.index[column].and_then(|at| record.get(at)).unwrap_or("").trim()
    }

    fn row(&self, record: &csv::StringRecord, line: u64) -> Value {
        let list = |column| -> Vec<&str> {
            self.field(record, column)
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        };
        let role = self.field(record, 2);
        json!({
            "line": line,
            "external_id": self.field(record, 0),
            "name": self.field(record, 1),
            "role": if role.is_empty() { Value::Null } else { Value::from(role) },
            "tags": list(3),
            "groups": list(4),
        })
    }
}

/// Runs the import.
///
/// # Errors
/// An unreadable file or header, an unreachable server, or a batch the server refused
/// whole (the rows before it stay imported; running again is safe).
pub async fn import(args: ImportArgs) -> Result<Totals, ImportError> {
    let file = std::fs::File::open(&args.file).map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let header = reader
        .headers()
        .map_err(|e| format!("cannot read the header of {}: {e}", args.file.display()))?
        .clone();
    let layout = Layout::of(&header)?;
    let mut out: Box<dyn Write> = match &args.report {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut report = csv::Writer::from_writer(&mut out);
    report
        .write_record(["line", "external_id", "outcome", "person", "detail"])
        .map_err(|e| format!("cannot write the report: {e}"))?;

    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let endpoint = format!("{}/v1/sites/{}/import", args.url.trim_end_matches('/'), args.site);
    let progress = ProgressBar::new(size);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}").map_err(|e| format!("progress bar: {e}"))?,
    );
    let mut totals = Totals::default();
    let batch = usize::try_from(args.batch).unwrap_or(1_000);
    let mut pending: Vec<ReadRow> = Vec::with_capacity(batch);
    // Rows with long names and many groups could take a full batch past the server's body
    // limit (1 MiB by default): a batch is also sent once its rows reach this many bytes.
    let mut pending_bytes = 0usize;
    let mut records = reader.records();
    loop {
        let next = records.next();
        let done = next.is_none();
        if let Some(record) = next {
            let row = match record {
                Ok(record) => {
                    let line = record.position().map_or(0, csv::Position::line);
                    if record.len() != header.len() {
                        ReadRow::Unreadable {
                            line,
                            external_id: layout.field(&record, 0).to_owned(),
                            why: format!("the row has {} fields, the header {}", record.len(), header.len()),
                        }
                    } else {
                        ReadRow::Row(layout.row(&record, line))
                    }
                }
                Err(e) => ReadRow::Unreadable {
                    line: e.position().map_or(0, csv::Position::line),
                    external_id: String::new(),
                    why: format!("unreadable row: {e}"),
                },
            };
            if let ReadRow::Row(v) = &row {
                pending_bytes += v.to_string().len();
            }
            pending.push(row);
        }
        if pending.len() >= batch || pending_bytes >= MAX_BATCH_BYTES || (done && !pending.is_empty()) {
            pending_bytes = 0;
            let rows = std::mem::take(&mut pending);
            send(
                &http,
                &endpoint,
                &args.token,
                args.dry_run,
                rows,
                &mut report,
                &mut totals,
            )
            .await?;
            progress.set_position(records.reader().position().byte());
            progress.set_message(format!(
                "{} created, {} updated, {} skipped, {} refused",
                totals.created, totals.updated, totals.skipped, totals.refused
            ));
        }
        if done {
            break;
        }
    }
    progress.finish_and_clear();
    report.flush().map_err(|e| format!("cannot write the report: {e}"))?;
    drop(report);
    out.flush().map_err(|e| format!("cannot write the report: {e}"))?;
    eprintln!(
        "{}{} created, {} updated, {} skipped, {} refused",
        if args.dry_run { "dry run, nothing written: " } else { "" },
        totals.created,
        totals.updated,
        totals.skipped,
        totals.refused
    );
    Ok(totals)
}

/// Sends one batch and reports every row of it, in file order.
async fn send(
    http: &reqwest::Client,
    endpoint: &str,
    token: &str,
    dry_run: bool,
    rows: Vec<ReadRow>,
    report: &mut csv::Writer<&mut Box<dyn Write>>,
    totals: &mut Totals,
) -> Result<(), ImportError> {
    let readable: Vec<&Value> = rows
        .iter()
        .filter_map(|r| match r {
            ReadRow::Row(v) => Some(v),
            ReadRow::Unreadable { .. } => None,
        })
        .collect();
    let mut answered = Vec::new();
    if !readable.is_empty() {
        let response = http
            .post(endpoint)
            .bearer_auth(token)
            .json(&json!({ "dry_run": dry_run, "rows": readable }))
            .send()
            .await
            .map_err(|e| format!("cannot reach the server: {e}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let first = readable.first().and_then(|r| r["line"].as_u64()).unwrap_or(0);
            return Err(format!(
                "the server refused the batch from line {first} ({status}: {}); the rows before it are \
                 imported, and running again is safe",
                answer["message"].as_str().unwrap_or("no message")
            ));
        }
        answered = answer["rows"].as_array().cloned().unwrap_or_default();
        if answered.len() != readable.len() {
            return Err(format!(
                "the server reported on {} rows of {}",
                answered.len(),
                readable.len()
            ));
        }
    }
    let mut answers = answered.into_iter();
    let write = |report: &mut csv::Writer<&mut Box<dyn Write>>, fields: [String; 5]| {
        report
            .write_record(&fields)
            .map_err(|e| format!("cannot write the report: {e}"))
    };
    for row in rows {
        match row {
            ReadRow::Unreadable { line, external_id, why } => {
                totals.refused += 1;
                write(
                    report,
                    [line.to_string(), external_id, "refused".into(), String::new(), why],
                )?;
            }
            ReadRow::Row(_) => {
                let a = answers.next().unwrap_or(Value::Null);
                let outcome = a["outcome"].as_str().unwrap_or("refused").to_owned();
                match outcome.as_str() {
                    "created" => totals.created += 1,
                    "updated" => totals.updated += 1,
                    "skipped" => totals.skipped += 1,
                    _ => totals.refused += 1,
                }
                write(
                    report,
                    [
                        a["line"].as_u64().map(|l| l.to_string()).unwrap_or_default(),
                        a["external_id"].as_str().unwrap_or("").to_owned(),
                        outcome,
                        a["person"].as_u64().map(|p| p.to_string()).unwrap_or_default(),
                        a["detail"].as_str().unwrap_or("").to_owned(),
                    ],
                )?;
            }
        }
    }
    Ok(())
}
