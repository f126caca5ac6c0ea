//! HTTP metrics: requests by matched route, method and status, and a latency histogram
//! per route, rendered in Prometheus text format for the binary's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// The latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Latency {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Tables {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Latency>,
}

/// The counters.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    tables: Mutex<Tables>,
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl HttpMetrics {
    /// Count one request on `route` (the matched route, or `unmatched`).
    pub(crate) fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        let mut t = self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *t.requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        let l = t.latency.entry(route.to_owned()).or_default();
        let secs = took.as_secs_f64();
        for (bucket, bound) in l.buckets.iter_mut().zip(BUCKETS) {
            if secs <= bound {
                *bucket += 1;
            }
        }
        l.count += 1;
        l.sum += secs;
    }

    pub(crate) fn render(&self, out: &mut String) {
        let t = self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        out.push_str("# HELP keyway_http_requests_total HTTP requests by matched route, method and status.\n");
        out.push_str("# TYPE keyway_http_requests_total counter\n");
        for ((route, method, status), n) in &t.requests {
            let _ = writeln!(
                out,
                "keyway_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        out.push_str("# HELP keyway_http_request_duration_seconds HTTP request latency by matched route.\n");
        out.push_str("# TYPE keyway_http_request_duration_seconds histogram\n");
        for (route, l) in &t.latency {
            let route = escape(route);
            for (n, bound) in l.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "keyway_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "keyway_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                l.count
            );
            let _ = writeln!(
                out,
                "keyway_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                l.sum
            );
            let _ = writeln!(
                out,
                "keyway_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                l.count
            );
        }
    }
}
