//! Prometheus metrics, low-cardinality by construction.
//!
//! Every label value is one of a fixed set (route classes, status classes, item types the API
//! defines, reason codes); no id, key, model name or path ever becomes a label.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(SECONDS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "rethread_requests_total",
        "Requests served, by route class and status class."
    );
    describe_counter!(
        "rethread_repairs_total",
        "Items inserted into requests, by item type."
    );
    describe_counter!(
        "rethread_repaired_requests_total",
        "Requests rethread changed."
    );
    describe_counter!(
        "rethread_would_insert_total",
        "Items observe mode would have inserted."
    );
    describe_counter!(
        "rethread_unrepairable_total",
        "Requests naming remembered items that were forwarded unchanged, by reason."
    );
    describe_counter!(
        "rethread_unparsed_requests_total",
        "Responses requests forwarded unchanged because rethread could not read them."
    );
    describe_counter!(
        "rethread_fallback_retries_total",
        "Retries after an upstream error named a missing reasoning item, by outcome."
    );
    describe_counter!(
        "rethread_reverts_total",
        "Changed requests the upstream refused for their content, resent as the client sent them, by the refusal's kind."
    );
    describe_counter!(
        "rethread_turns_learned_total",
        "Turns captured from responses."
    );
    describe_counter!(
        "rethread_capture_failures_total",
        "Responses that taught nothing, by reason."
    );
    describe_counter!(
        "rethread_store_errors_total",
        "Ledger operations that failed, by operation."
    );
    describe_gauge!("rethread_ledger_turns", "Turns currently remembered.");
    describe_gauge!(
        "rethread_ledger_evictions",
        "Turns evicted over capacity since start."
    );
    describe_gauge!(
        "rethread_ledger_bytes",
        "Memory the memory store holds for its turns (log chunks and index slots)."
    );
    describe_histogram!(
        "rethread_upstream_seconds",
        "Time from sending a request upstream to its response head."
    );
    describe_histogram!(
        "rethread_overhead_seconds",
        "rethread's own time per request: total to response head minus upstream time."
    );
}

/// `2xx`, `4xx`… for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
