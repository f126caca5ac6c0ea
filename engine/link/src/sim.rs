//! A load generator for the link: simulated IQs over TLS against a server address,
//! each sending decision requests back to back, with a summary of decisions per second
//! and latency percentiles. `keyway iq-sim` and the end-to-end tests drive it.

use crate::client::{ClientError, IqClient, IqClientConfig};
use crate::message::DecideItem;
use crate::pki::IqCredentials;
use jiff::Timestamp;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// What one simulated IQ sends: requests it cycles through (door, kind, secret).
#[derive(Clone, Debug)]
pub struct SimIq {
    /// Its enrolled credentials.
    pub credentials: IqCredentials,
    /// The reads it sends, in turn (the `at` field is replaced by the current time).
    pub reads: Vec<DecideItem>,
}

/// How a run goes.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The client configuration every IQ dials with.
    pub client: IqClientConfig,
    /// How long to send for.
    pub duration: Duration,
    /// Requests per frame.
    pub batch: usize,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimSummary {
    /// IQs that connected.
    pub connected: usize,
    /// Decisions answered.
    pub decisions: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Decisions per second over the run.
    pub per_second: f64,
    /// Round-trip latency percentiles of a frame (p50, p90, p99, max), in microseconds.
    pub latency_us: [u64; 4],
}

/// Runs `iqs` against the server in `config` and sums up.
///
/// # Errors
/// The first connection error, if no IQ connected at all.
pub async fn run(iqs: Vec<SimIq>, config: &SimConfig) -> Result<SimSummary, ClientError> {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for iq in iqs {
        let client_config = config.client.clone();
        let (duration, batch) = (config.duration, config.batch.max(1));
        tasks.spawn(async move {
            let client = IqClient::connect(client_config, iq.credentials).await?;
            let mut latencies = Vec::new();
            let (mut decisions, mut errors) = (0u64, 0u64);
            let deadline = Instant::now() + duration;
            let mut next = 0usize;
            while Instant::now() < deadline && !iq.reads.is_empty() {
                let now = Timestamp::now().as_millisecond();
                let items: Vec<DecideItem> = (0..batch)
                    .filter_map(|i| iq.reads.get((next + i) % iq.reads.len()))
                    .map(|r| DecideItem { at: now, ..r.clone() })
                    .collect();
                next = next.wrapping_add(batch);
                let sent = Instant::now();
                match client.decide(items).await {
                    Ok(answer) => {
                        decisions += answer.items.len() as u64;
                        latencies.push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    Err(_) => errors += 1,
                }
            }
            client.close().await;
            Ok::<_, ClientError>((decisions, errors, latencies))
        });
    }
    let mut summary = SimSummary::default();
    let mut latencies = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((decisions, errors, lat))) => {
                summary.connected += 1;
                summary.decisions += decisions;
                summary.errors += errors;
                latencies.extend(lat);
            }
            Ok(Err(e)) => {
                summary.errors += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => tracing::warn!(error = %e, "simulated iq task failed"),
        }
    }
    if summary.connected == 0
        && let Some(e) = first_error
    {
        return Err(e);
    }
    latencies.sort_unstable();
    let pick = |q: usize| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let i = (latencies.len() - 1) * q / 100;
        latencies.get(i).copied().unwrap_or(0)
    };
    summary.latency_us = [pick(50), pick(90), pick(99), pick(100)];
    let secs = started.elapsed().as_secs_f64();
    if secs > 0.0 {
        summary.per_second = summary.decisions as f64 / secs;
    }
    Ok(summary)
}
