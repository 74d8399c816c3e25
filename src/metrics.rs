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
pub(crate) fn install() -> Option<PrometheusHandle> {
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

/// The metric families, by name: every counter, gauge and histogram rethread exports. Call
/// sites use these constants, so a name is written once.
pub(crate) const REQUESTS: &str = "rethread_requests_total";
pub(crate) const REPAIRS: &str = "rethread_repairs_total";
pub(crate) const REPAIRED_REQUESTS: &str = "rethread_repaired_requests_total";
pub(crate) const REPAIR_RULES: &str = "rethread_repair_rules_total";
pub(crate) const WOULD_INSERT: &str = "rethread_would_insert_total";
pub(crate) const UNREPAIRABLE: &str = "rethread_unrepairable_total";
pub(crate) const UNPARSED: &str = "rethread_unparsed_requests_total";
pub(crate) const FALLBACK_RETRIES: &str = "rethread_fallback_retries_total";
pub(crate) const REVERTS: &str = "rethread_reverts_total";
pub(crate) const UPSTREAM_RESENDS: &str = "rethread_upstream_resends_total";
pub(crate) const TURNS_LEARNED: &str = "rethread_turns_learned_total";
pub(crate) const CAPTURE_FAILURES: &str = "rethread_capture_failures_total";
pub(crate) const STORE_ERRORS: &str = "rethread_store_errors_total";
pub(crate) const FULL_ITEMS_OVER_BUDGET: &str = "rethread_full_items_over_budget_total";
pub(crate) const LEDGER_TURNS: &str = "rethread_ledger_turns";
pub(crate) const LEDGER_EVICTIONS: &str = "rethread_ledger_evictions";
pub(crate) const LEDGER_BYTES: &str = "rethread_ledger_bytes";
pub(crate) const OUTBOX_TURNS: &str = "rethread_store_outbox_turns";
pub(crate) const OUTBOX_DROPPED: &str = "rethread_store_outbox_dropped_total";
pub(crate) const UPSTREAM_SECONDS: &str = "rethread_upstream_seconds";
pub(crate) const OVERHEAD_SECONDS: &str = "rethread_overhead_seconds";

/// Outcomes of a cold-memory retry (`FALLBACK_RETRIES`).
pub(crate) const FALLBACK_OUTCOMES: [&str; 2] = ["retried", "still_failed"];
/// Store operations (`STORE_ERRORS`).
pub(crate) const STORE_OPS: [&str; 2] = ["lookup", "record"];

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "Requests served, by route class and status class."
    );
    describe_counter!(REPAIRS, "Items inserted into requests, by item type.");
    describe_counter!(REPAIRED_REQUESTS, "Requests rethread changed.");
    describe_counter!(
        REPAIR_RULES,
        "Items each rule of a change touched: insert, rehydrate, move, drop, adopt, complete (include and flatten count requests)."
    );
    describe_counter!(WOULD_INSERT, "Items observe mode would have inserted.");
    describe_counter!(
        UNREPAIRABLE,
        "Requests naming remembered items that were forwarded unchanged, by reason."
    );
    describe_counter!(
        UNPARSED,
        "Responses requests forwarded unchanged because rethread could not read them."
    );
    describe_counter!(
        FALLBACK_RETRIES,
        "Retries after an upstream error named a missing reasoning item, by outcome."
    );
    describe_counter!(
        REVERTS,
        "Changed requests the upstream refused for their content, resent as the client sent them, by the refusal's kind."
    );
    describe_counter!(
        UPSTREAM_RESENDS,
        "Requests sent again on a new connection because the upstream proved it had not processed them (HTTP/2 GOAWAY, REFUSED_STREAM), by reason."
    );
    describe_counter!(TURNS_LEARNED, "Turns captured from responses.");
    describe_counter!(
        CAPTURE_FAILURES,
        "Responses that taught nothing, by reason."
    );
    describe_counter!(STORE_ERRORS, "Ledger operations that failed, by operation.");
    describe_counter!(
        FULL_ITEMS_OVER_BUDGET,
        "Turns remembered by id only because their full items were over budget."
    );
    describe_gauge!(LEDGER_TURNS, "Turns currently remembered.");
    describe_gauge!(LEDGER_EVICTIONS, "Turns evicted over capacity since start.");
    describe_gauge!(
        LEDGER_BYTES,
        "Memory the memory store holds for its turns (log chunks and index slots)."
    );
    describe_gauge!(
        OUTBOX_TURNS,
        "Turns the shared store could not take, kept on this replica and written again once it takes them."
    );
    describe_counter!(
        OUTBOX_DROPPED,
        "Turns the outbox dropped, oldest first, past its bound during a long store outage."
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        "Time from sending a request upstream to its response head."
    );
    describe_histogram!(
        OVERHEAD_SECONDS,
        "rethread's own time per request: total to response head minus upstream time."
    );
}

/// Exports a counter at zero, so dashboards and alerts see it before its first increment.
pub(crate) fn zero(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|&(k, v)| metrics::Label::new(k, v))
        .collect();
    metrics::counter!(name, labels).increment(0);
}

/// Exports a histogram before its first observation (the exporter shows it once it has a
/// value; registering makes its label set known).
pub(crate) fn register_histogram(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|&(k, v)| metrics::Label::new(k, v))
        .collect();
    let _ = metrics::histogram!(name, labels);
}

/// Every status class `status_class` can return.
pub(crate) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `2xx`, `4xx`… for a status code.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
