//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`.
//!
//! A small registry of labelled counters and histograms is enough here and keeps the
//! dependency tree (and the server's memory) small.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A gauge computed at scrape time: name, help text, `(labels, value)` samples.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(String, String), u64>>,
    histograms: Mutex<BTreeMap<(String, String), Histogram>>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",")
}

impl Metrics {
    pub fn inc(&self, name: &str, label_pairs: &[(&str, &str)], by: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name.to_string(), labels(label_pairs)))
                .or_default() += by;
        }
    }

    pub fn observe(&self, name: &str, label_pairs: &[(&str, &str)], seconds: f64) {
        if let Ok(mut h) = self.histograms.lock() {
            let entry = h
                .entry((name.to_string(), labels(label_pairs)))
                .or_insert_with(|| Histogram {
                    counts: vec![0; BUCKETS.len()],
                    ..Histogram::default()
                });
            for (i, le) in BUCKETS.iter().enumerate() {
                if seconds <= *le {
                    entry.counts[i] += 1;
                }
            }
            entry.sum += seconds;
            entry.count += 1;
        }
    }

    /// The exposition text; `gauges` are computed by the caller at scrape time.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        if let Ok(c) = self.counters.lock() {
            let mut last = "";
            for ((name, l), v) in c.iter() {
                if name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
        if let Ok(h) = self.histograms.lock() {
            let mut last = "";
            for ((name, l), hist) in h.iter() {
                if name != last {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    last = name;
                }
                let sep = if l.is_empty() { "" } else { "," };
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{l}{sep}le=\"{le}\"}} {}",
                        hist.counts[i]
                    );
                }
                let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", hist.count);
                let _ = writeln!(out, "{name}_sum{{{l}}} {}", hist.sum);
                let _ = writeln!(out, "{name}_count{{{l}}} {}", hist.count);
            }
        }
        for (name, help, values) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (l, v) in values {
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.inc("berth_http_requests_total", &[("status", "200")], 2);
        m.observe(
            "berth_http_request_duration_seconds",
            &[("route", "/x")],
            0.003,
        );
        let text = m.render(&[("berth_up", "1 when up", vec![(String::new(), 1.0)])]);
        assert!(text.contains("berth_http_requests_total{status=\"200\"} 2"));
        assert!(
            text.contains(
                "berth_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.005\"} 1"
            )
        );
        assert!(text.contains("berth_http_request_duration_seconds_count{route=\"/x\"} 1"));
        assert!(text.contains("berth_up 1"));
    }
}
