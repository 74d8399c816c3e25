//! The state every request shares.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::capture::CaptureLimits;
use crate::config::Settings;
use crate::forward::Upstream;
use crate::ledger::Ledger;
use crate::models::Models;
use crate::otel::Telemetry;
use crate::tenant::Tenants;
use crate::upstream_store::UpstreamStore;

pub(crate) struct App {
    pub settings: Settings,
    pub upstream: Upstream,
    pub ledger: Arc<dyn Ledger>,
    pub tenants: Tenants,
    /// Which models reason, as configured and as traffic shows.
    pub models: Models,
    /// Tenants whose upstream did not store what they asked it to.
    pub upstream_store: UpstreamStore,
    pub metrics: Option<PrometheusHandle>,
    /// OpenTelemetry traces, when `otel` is on.
    pub telemetry: Option<Arc<Telemetry>>,
}

impl App {
    /// Capture's limits for a response; `stateless`: its request was `store: false`.
    pub(crate) fn capture_limits(&self, stateless: bool) -> CaptureLimits {
        CaptureLimits {
            stateless,
            ..CaptureLimits::from_settings(&self.settings)
        }
    }
}
