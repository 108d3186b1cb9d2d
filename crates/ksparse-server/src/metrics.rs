//! Request counters and latency histograms by route and status, in Prometheus' text
//! format (`GET /metrics`). Hand-written: a handful of counters needs no registry crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Requests seen, by (method, route, status).
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut map = self.series.lock().expect("metrics lock");
        let s = map
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        s.count += 1;
        s.sum += seconds;
        for (b, &upper) in s.buckets.iter_mut().zip(&BUCKETS) {
            if seconds <= upper {
                *b += 1;
            }
        }
    }

    /// The request series in Prometheus' text exposition format.
    pub fn render(&self, out: &mut String) {
        let map = self.series.lock().expect("metrics lock");
        out.push_str(
            "# HELP ksparse_requests_total HTTP requests answered, by route and status.\n",
        );
        out.push_str("# TYPE ksparse_requests_total counter\n");
        for ((m, r, st), s) in map.iter() {
            let _ = writeln!(
                out,
                "ksparse_requests_total{{method=\"{m}\",route=\"{}\",status=\"{st}\"}} {}",
                escape(r),
                s.count
            );
        }
        out.push_str("# HELP ksparse_request_seconds Time to answer, by route and status.\n");
        out.push_str("# TYPE ksparse_request_seconds histogram\n");
        for ((m, r, st), s) in map.iter() {
            let labels = format!("method=\"{m}\",route=\"{}\",status=\"{st}\"", escape(r));
            for (b, upper) in s.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "ksparse_request_seconds_bucket{{{labels},le=\"{upper}\"}} {b}"
                );
            }
            let _ = writeln!(
                out,
                "ksparse_request_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "ksparse_request_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "ksparse_request_seconds_count{{{labels}}} {}", s.count);
        }
    }
}

/// The HELP and TYPE lines that open a metric family.
pub fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample of family `name`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
}

/// A label value with `\`, `"` and line breaks escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.observe("GET", "/collections", 200, 0.0003);
        m.observe("GET", "/collections", 200, 0.02);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains(
            "ksparse_requests_total{method=\"GET\",route=\"/collections\",status=\"200\"} 2"
        ));
        assert!(s.contains("le=\"0.0005\"} 1"));
        assert!(s.contains("le=\"0.025\"} 2"));
        assert!(s.contains("le=\"+Inf\"} 2"));
        let mut g = String::new();
        family(&mut g, "ksparse_documents", "Live documents.", "gauge");
        sample(&mut g, "ksparse_documents", &[("collection", "a\"b")], 3.0);
        assert_eq!(
            g,
            "# HELP ksparse_documents Live documents.\n# TYPE ksparse_documents gauge\nksparse_documents{collection=\"a\\\"b\"} 3\n"
        );
    }
}
