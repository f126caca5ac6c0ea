//! `keyway iq-sim`: simulated IQs against a running `keyway serve`, as a site would set
//! them up. Over the admin HTTP API it registers each IQ (which hands out its enrolment
//! code and the link's details), gives each its doors, and adds people with tags and a
//! group that lets them through; then every IQ enrols on the link with its code, and all
//! send door traffic (the people's tags and an unknown one) for the given time, through
//! the link's load generator (`keyway_link::sim`). It prints what it did and a summary:
//! decisions per second and frame latency percentiles. With `--outage-every-secs`, every
//! IQ also keeps its offline list, is cut off every so often, decides alone while away,
//! and on return is brought up to date and uploads those entries.
//!
//! Everything it creates is named `sim <run>` so it can be told apart from real records.

use base64::Engine;
use clap::Args;
use keyway_core::CredentialKind;
use keyway_link::message::DecideItem;
use keyway_link::sim::{Outage, SimConfig, SimIq, run};
use keyway_link::{IqClientConfig, enrol};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What to simulate, and against which server.
#[derive(Clone, Debug, Args)]
pub struct IqSimArgs {
    /// The server's base URL.
    #[arg(long, env = "KEYWAY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A session or API token of a site admin or owner of the site (an environment
    /// variable keeps it out of the process list).
    #[arg(long, env = "KEYWAY_TOKEN", hide_env_values = true)]
    token: String,
    /// The site to add the simulated IQs to.
    #[arg(long)]
    site: u32,
    /// The address the IQs dial (the link's ports come from the server).
    #[arg(long, default_value = "127.0.0.1")]
    link_host: IpAddr,
    /// How many IQs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    iqs: u32,
    /// Doors per IQ.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    doors_per_iq: u32,
    /// People with a tag (counted against the site's voucher).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    people: u32,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration_secs: u64,
    /// Requests per DECIDE frame (1 to 64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    batch: u32,
    /// Send on a schedule: this many decisions per second across all IQs (open loop).
    /// Each IQ then sends a frame every `iqs x batch / rate` seconds at its own phase,
    /// and a frame's latency counts from when it was due, so a server that falls behind
    /// shows it. Without it each IQ sends its next frame as soon as the last is answered
    /// (closed loop: the most the server answers).
    #[arg(long, conflicts_with = "idle", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    rate: Option<u32>,
    /// Cut every IQ's connection this often (seconds online between cuts); while cut,
    /// each decides alone from its offline list and uploads those entries on return.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    outage_every_secs: Option<u64>,
    /// How long each cut lasts, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    outage_secs: u64,
    /// Idle IQs: each connects, fetches its list, hangs up the bulk session and then only
    /// sends heartbeats and hears pushes until the end (no decisions): the load of many
    /// gateways at rest.
    #[arg(long, conflicts_with = "outage_every_secs")]
    idle: bool,
}

/// A failure, said for a person at a terminal.
type SimError = String;

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value, SimError> {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = answer["message"].as_str().unwrap_or("no message");
            return Err(format!("{method} {path} answered {status}: {message}"));
        }
        Ok(answer)
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, SimError> {
        self.call(reqwest::Method::POST, path, body).await
    }
}

fn id_of(v: &Value, pointer: &str) -> Result<u64, SimError> {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("the server's answer has no `{pointer}`: {v}"))
}

/// The link's CA certificate from the PEM in an enrolment answer.
fn ca_der(link: &Value) -> Result<Vec<u8>, SimError> {
    let pem = link["ca_certificate_pem"]
        .as_str()
        .ok_or("the server runs no IQ link (its enrolment answer has no link details)")?;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the link CA certificate is not valid PEM: {e}"))
}

/// Runs the simulation; what it prints goes to standard output.
///
/// # Errors
/// A refused API call, a failed enrolment, or no IQ connecting.
pub async fn iq_sim(args: IqSimArgs) -> Result<(), SimError> {
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?,
        url: args.url.trim_end_matches('/').to_owned(),
        token: args.token.clone(),
    };
    let run_id = jiff::Timestamp::now().as_second() % 1_000_000;
    let site = args.site;
    println!(
        "iq-sim run {run_id}: {} IQs x {} doors, {} people, site {site}",
        args.iqs, args.doors_per_iq, args.people
    );

    // People, each with a tag; and the reads the IQs will send.
    let mut tags = Vec::new();
    for i in 0..args.people {
        let person = api
            .post(
                &format!("/v1/sites/{site}/people"),
                json!({ "name": format!("sim {run_id} person {i}") }),
            )
            .await?;
        let person = id_of(&person, "/person/id")?;
        // Unique per run and person; the top byte marks simulated tags.
        let uid = [
            0x5a,
            (run_id >> 16) as u8,
            (run_id >> 8) as u8,
            run_id as u8,
            (i >> 8) as u8,
            i as u8,
        ];
        api.post(
            &format!("/v1/sites/{site}/credentials"),
            json!({ "kind": "tag", "value": hex::encode(uid), "person": person }),
        )
        .await?;
        tags.push((person, uid.to_vec()));
    }

    // IQs, their doors, and the enrolment answers.
    let mut registered = Vec::new();
    let mut all_doors = Vec::new();
    for i in 0..args.iqs {
        let answer = api
            .post(
                &format!("/v1/sites/{site}/iqs"),
                json!({
                    "name": format!("sim {run_id} iq {i}"),
                    "model": "SIM",
                    "serial": format!("SIM-{run_id}-{i}"),
                }),
            )
            .await?;
        let iq = id_of(&answer, "/iq/id")?;
        let mut doors = Vec::new();
        for d in 0..args.doors_per_iq {
            let door = api
                .post(
                    &format!("/v1/sites/{site}/doors"),
                    json!({ "name": format!("sim {run_id} iq {i} door {d}") }),
                )
                .await?;
            let door = id_of(&door, "/door/id")?;
            api.call(
                reqwest::Method::PUT,
                &format!("/v1/sites/{site}/doors/{door}/iq"),
                json!({ "iq": iq }),
            )
            .await?;
            doors.push(door);
        }
        all_doors.extend(doors.iter().copied());
        registered.push((answer["enrolment"].clone(), doors));
    }
    let people: Vec<u64> = tags.iter().map(|(p, _)| *p).collect();
    api.post(
        &format!("/v1/sites/{site}/groups"),
        json!({ "name": format!("sim {run_id}"), "doors": all_doors, "members": people }),
    )
    .await?;
    println!(
        "registered {} IQs, {} doors, {} people over HTTP",
        args.iqs,
        all_doors.len(),
        args.people
    );

    // Enrolment on the link, with what each answer says.
    let first = &registered.first().ok_or("no IQ to simulate")?.0["link"];
    let control = SocketAddr::new(args.link_host, port(first, "control_port")?);
    let bulk = SocketAddr::new(args.link_host, port(first, "bulk_port")?);
    let server_name = server_name(first, args.link_host)?;
    let ca = ca_der(first)?;
    let unknown_tag = vec![0x5a, 0xff, 0xff, 0xff, 0xff, 0xff];
    let mut iqs = Vec::with_capacity(registered.len());
    for (enrolment, doors) in &registered {
        let code = enrolment["code"].as_str().ok_or("an enrolment answer has no code")?;
        let credentials = enrol(control, &server_name, &ca, code)
            .await
            .map_err(|e| format!("enrolment on {control} failed: {e}"))?;
        let reads = doors
            .iter()
            .flat_map(|door| {
                tags.iter()
                    .map(|(_, uid)| uid.clone())
                    .chain(std::iter::once(unknown_tag.clone()))
                    .map(move |secret| DecideItem {
                        door: u32::try_from(*door).unwrap_or(u32::MAX),
                        kind: Some(CredentialKind::Tag),
                        secret,
                        at: 0,
                        direction: keyway_node::Direction::Unknown,
                    })
            })
            .collect();
        iqs.push(SimIq { credentials, reads });
    }
    println!(
        "enrolled {} IQs on {control}; {} for {} s",
        iqs.len(),
        match (args.idle, args.rate) {
            (true, _) => "idle".to_owned(),
            (false, Some(rate)) => format!("sending {rate} decisions/s on a schedule"),
            (false, None) => "sending back to back".to_owned(),
        },
        args.duration_secs
    );

    let mut client = IqClientConfig::new(control, bulk, server_name);
    client.firmware = "iq-sim".to_owned();
    let summary = run(
        iqs,
        &SimConfig {
            client,
            duration: Duration::from_secs(args.duration_secs),
            batch: args.batch as usize,
            pace: args
                .rate
                .map(|rate| Duration::from_secs_f64(f64::from(args.iqs) * f64::from(args.batch) / f64::from(rate))),
            idle: args.idle,
            outage: args.outage_every_secs.map(|every| Outage {
                every: Duration::from_secs(every),
                length: Duration::from_secs(args.outage_secs),
                read_interval: Duration::from_millis(100),
            }),
        },
    )
    .await
    .map_err(|e| format!("no simulated IQ connected: {e}"))?;
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{} IQs connected, {} decisions, {:.0} decisions/s, {} errors",
        summary.connected, summary.decisions, summary.per_second, summary.errors
    );
    println!(
        "frame latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(summary.latency_us[0]),
        ms(summary.latency_us[1]),
        ms(summary.latency_us[2]),
        ms(summary.latency_us[3])
    );
    println!(
        "pushes heard: {}; reconnections: {} ({} brought up to date by replay); full lists fetched: {}",
        summary.pushes, summary.reconnects, summary.replays, summary.full_lists
    );
    if args.outage_every_secs.is_some() {
        println!(
            "offline: {} decisions alone ({} opened), {} entries uploaded and acknowledged",
            summary.offline_decisions, summary.offline_allowed, summary.uploaded
        );
    }
    if summary.decisions == 0 && !args.idle {
        return Err("no decision was answered".to_owned());
    }
    Ok(())
}

fn port(link: &Value, key: &str) -> Result<u16, SimError> {
    link[key]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("the enrolment answer has no `link.{key}`"))
}

/// The name to verify the server by: the dialled address when the certificate carries
/// it, `localhost` for a loopback address, or else the certificate's first name.
fn server_name(link: &Value, host: IpAddr) -> Result<String, SimError> {
    let names: Vec<&str> = link["server_names"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let host = host.to_string();
    if names.contains(&host.as_str()) {
        return Ok(host);
    }
    if host.starts_with("127.") && names.contains(&"localhost") {
        return Ok("localhost".to_owned());
    }
    names
        .first()
        .map(|n| (*n).to_owned())
        .ok_or_else(|| "the enrolment answer names no server".to_owned())
}
