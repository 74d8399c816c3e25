//! The listener, the router, rethread's own endpoints, and graceful shutdown.
//!
//! Connections are served by hyper directly (not `axum::serve`) so that header case is kept,
//! slow clients are cut off by a header-read timeout, upgrades work, and shutdown can drain.
//!
//! Each accepted connection is handed, in turn, to one of `workers` threads that each run an
//! event loop of their own (a current-thread runtime), as nginx's worker processes do. A request,
//! its upstream connection (`forward::inline` prefers an idle one its own thread opened; an
//! HTTP/2 upstream gets one connection per worker) and its response stream then stay on one
//! thread: a work-stealing runtime moved them between cores, and on a small machine shared with
//! the client and the upstream every such hand-off was a wake-up of another thread that cost
//! more than the parallelism gave. Connections are spread, not requests; the listener, start-up
//! and background tasks (and the first Redis connection) stay on the main thread.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::{Settings, StoreKind};
use crate::forward::Upstream;
use crate::ledger::file::{FileLedger, FileStoreError};
use crate::ledger::images::{ImageBudget, WithImages};
use crate::ledger::memory::{FullItemBudget, MemoryLedger};
use crate::ledger::outbox::Outbox;
use crate::ledger::redis::RedisLedger;
use crate::ledger::Ledger;
use crate::otel::Telemetry;
use crate::tenant::Tenants;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the upstream client: {0}")]
    Upstream(std::io::Error),
    #[error("cannot create a tenant secret: {0}")]
    Secret(std::io::Error),
    #[error("cannot start a worker thread: {0}")]
    Worker(std::io::Error),
    #[error("store: {source}{}", crate::error::causes(.source))]
    Store {
        #[source]
        source: crate::ledger::redis::StoreError,
    },
    #[error("{0}")]
    FileStore(#[from] crate::ledger::file::FileStoreError),
}

/// A bound, not yet serving, rethread.
pub struct Server {
    listener: TcpListener,
    /// `admin_listen`'s listener, when set: the own endpoints answer there only.
    admin: Option<TcpListener>,
    app: Arc<App>,
    sweeper: Option<Arc<MemoryLedger>>,
    workers: Workers,
}

pub async fn bind(settings: Settings) -> Result<Server, StartError> {
    let telemetry = if settings.server.otel {
        match Telemetry::export() {
            Ok(telemetry) => Some(telemetry),
            // Traces are for operators: a collector set up wrong must not keep requests out.
            Err(e) => {
                tracing::error!(error = %e, "traces: export is off");
                None
            }
        }
    } else {
        None
    };
    bind_with(settings, telemetry).await
}

/// `bind`, with every span handed to `exporter` as it ends (tests read the spans in memory),
/// whatever the `otel` setting says.
pub async fn bind_with_exporter(
    settings: Settings,
    exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static,
) -> Result<Server, StartError> {
    bind_with(settings, Some(Telemetry::with_exporter(exporter))).await
}

async fn bind_with(settings: Settings, telemetry: Option<Telemetry>) -> Result<Server, StartError> {
    let listener = TcpListener::bind(settings.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: settings.server.listen,
            source,
        })?;
    let admin = match settings.server.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?,
        ),
        None => None,
    };
    let upstream = Upstream::from_settings(&settings.upstream).map_err(StartError::Upstream)?;
    let Opened {
        store,
        sweeper,
        kept_secret,
    } = open_store(&settings)?;
    let tenants = match (&settings.tenant_secret, kept_secret) {
        (Some(secret), _) => Tenants::from_secret(secret.expose()),
        (None, Some(secret)) => Tenants::from_secret(&secret),
        (None, None) => Tenants::random().map_err(StartError::Secret)?,
    };
    let images = ImageBudget {
        total: settings.store.stateless_image_budget,
        per_tenant: settings.store.tenant_stateless_image_budget,
    };
    let ledger: Arc<dyn Ledger> =
        Arc::new(WithImages::new(store, images, settings.store.retention));
    let models = crate::models::Models::new(settings.repair.non_reasoning_models.clone());
    let app = Arc::new(App {
        models,
        upstream_store: Default::default(),
        settings,
        upstream,
        ledger,
        tenants,
        metrics: crate::metrics::install(),
        telemetry: telemetry.map(Arc::new),
    });
    export_at_zero();
    let workers =
        Workers::start(&router(app.clone()), &app.settings).map_err(StartError::Worker)?;
    Ok(Server {
        listener,
        admin,
        app,
        sweeper,
        workers,
    })
}

/// The store a start opens, and what the server keeps of it.
struct Opened {
    store: Arc<dyn Ledger>,
    /// The memory store to sweep of expired turns (none for Redis, which expires its own).
    sweeper: Option<Arc<MemoryLedger>>,
    /// The file store's tenant secret: its turns outlive the process, so does the key of their
    /// tenant hashes.
    kept_secret: Option<String>,
}

/// The store `settings` name. A file store another rethread owns is an error; one rethread
/// cannot use (read-only, full, unreadable) leaves it remembering in memory.
fn open_store(settings: &Settings) -> Result<Opened, StartError> {
    let memory = || {
        let budget = FullItemBudget {
            total: settings.store.full_items_budget,
            per_tenant: settings.store.tenant_full_items_budget,
        };
        Arc::new(MemoryLedger::new(
            settings.store.retention,
            settings.store.capacity,
            budget,
        ))
    };
    let in_memory = |memory: Arc<MemoryLedger>| Opened {
        store: memory.clone(),
        sweeper: Some(memory),
        kept_secret: None,
    };
    match &settings.store.kind {
        StoreKind::Memory => Ok(in_memory(memory())),
        StoreKind::File(dir) => {
            let memory = memory();
            let opened = FileLedger::open(
                dir,
                memory.clone(),
                settings.store.retention,
                settings.store.capacity,
                settings.store.sync,
            );
            match opened {
                Ok(file) => Ok(Opened {
                    kept_secret: Some(file.tenant_secret().to_owned()),
                    store: Arc::new(file),
                    sweeper: Some(memory),
                }),
                // Another rethread owns the directory: a mistake to say, not to work around.
                Err(e @ FileStoreError::Locked { .. }) => Err(e.into()),
                // A disk rethread cannot use must not keep the proxy from serving: it runs on
                // memory alone, and says so.
                Err(e) => {
                    tracing::error!(error = %e, "store: the directory cannot be used; remembering in memory only until a restart with a usable one");
                    Ok(in_memory(memory))
                }
            }
        }
        StoreKind::Redis(url) => {
            let redis = RedisLedger::new(
                url.expose(),
                &settings.store.prefix,
                settings.store.retention,
                settings.store.timeout,
            )
            .map_err(|source| StartError::Store { source })?;
            let outbox = Outbox::new(Arc::new(redis), settings.store.retention);
            Ok(Opened {
                store: Arc::new(outbox),
                sweeper: None,
                kept_secret: None,
            })
        }
    }
}

/// Every metric family from start-up, at zero for each label set rethread can produce, so
/// dashboards and alerts see a family before its first event. The label sets come from the
/// types that produce them.
fn export_at_zero() {
    use crate::capture::CaptureError;
    use crate::metrics::{self as m, zero};
    use crate::proxy::RouteClass;
    use crate::repair::items::ItemType;
    use crate::repair::plan::Unrepairable;
    use crate::repair::upstream_error::Refusal;
    for route in RouteClass::ALL {
        for status in m::STATUS_CLASSES {
            zero(m::REQUESTS, &[("route", route.label()), ("status", status)]);
        }
        m::register_histogram(m::UPSTREAM_SECONDS, &[("route", route.label())]);
        m::register_histogram(m::OVERHEAD_SECONDS, &[("route", route.label())]);
    }
    let item_types = ItemType::KNOWN.iter().map(ItemType::label);
    for ty in item_types.chain(["other"]) {
        zero(m::REPAIRS, &[("item_type", ty)]);
    }
    for rule in crate::repair::change::RULE_NAMES {
        zero(m::REPAIR_RULES, &[("rule", rule)]);
    }
    for reason in Unrepairable::REASONS {
        zero(m::UNREPAIRABLE, &[("reason", reason)]);
    }
    for reason in Refusal::LABELS {
        zero(m::REVERTS, &[("reason", reason)]);
    }
    for reason in crate::forward::RESEND_REASONS {
        zero(m::UPSTREAM_RESENDS, &[("reason", reason)]);
    }
    for outcome in m::FALLBACK_OUTCOMES {
        zero(m::FALLBACK_RETRIES, &[("outcome", outcome)]);
    }
    for reason in CaptureError::REASONS {
        zero(m::CAPTURE_FAILURES, &[("reason", reason)]);
    }
    for op in m::STORE_OPS {
        zero(m::STORE_ERRORS, &[("op", op)]);
    }
    for name in [
        m::REPAIRED_REQUESTS,
        m::WOULD_INSERT,
        m::UNPARSED,
        m::TURNS_LEARNED,
        m::FULL_ITEMS_OVER_BUDGET,
        m::OUTBOX_DROPPED,
    ] {
        zero(name, &[]);
    }
    metrics::gauge!(m::LEDGER_TURNS).set(0.0);
    metrics::gauge!(m::LEDGER_EVICTIONS).set(0.0);
    metrics::gauge!(m::LEDGER_BYTES).set(0.0);
    metrics::gauge!(m::OUTBOX_TURNS).set(0.0);
}

/// The proxy's routes: everything is forwarded, but for the own endpoints unless they answer
/// on `admin_listen`.
fn router(app: Arc<App>) -> Router {
    let own = app.settings.server.admin_listen.is_none();
    let router = if own { own_endpoints() } else { Router::new() };
    router.fallback(crate::proxy::handle).with_state(app)
}

/// `/healthz`, `/readyz` and `/metrics`.
fn own_endpoints() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.ledger.ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
    }
}

async fn metrics(State(app): State<Arc<App>>) -> (StatusCode, String) {
    let stats = app.ledger.stats();
    metrics::gauge!(crate::metrics::LEDGER_TURNS).set(stats.turns as f64);
    metrics::gauge!(crate::metrics::LEDGER_EVICTIONS).set(stats.evictions as f64);
    metrics::gauge!(crate::metrics::LEDGER_BYTES).set(stats.bytes as f64);
    match &app.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n".into(),
        ),
    }
}

impl Server {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where the own endpoints answer, when `admin_listen` is set.
    pub fn admin_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.admin.as_ref().map(TcpListener::local_addr)
    }

    /// How many threads serve connections.
    pub fn workers(&self) -> usize {
        self.workers.queues.len()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests and
    /// streams finish for up to the drain timeout.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            admin,
            app,
            sweeper,
            workers,
        } = self;
        let settings = app.settings.clone();
        // The own endpoints on their own port: a handful of small requests, served on this
        // runtime; they answer until the drain ends.
        let admin_task = admin.map(|listener| {
            let router = own_endpoints().with_state(app.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::warn!(error = %e, "admin listener stopped");
                }
            })
        });
        let sweep_task = sweeper.map(|memory| {
            let every = (settings.store.retention / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(60));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    memory.sweep();
                }
            })
        });
        let ledger = app.ledger.clone();
        let telemetry = app.telemetry.clone();
        drop(app);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted.and_then(|(stream, _)| stream.into_std()) {
                        Ok(stream) => stream,
                        Err(e) => {
                            // Out of file descriptors and the like: pause rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    workers.hand(stream, graceful.watcher());
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!(drain_timeout = ?settings.server.drain_timeout, "shutting down; draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("drained"),
            () = tokio::time::sleep(settings.server.drain_timeout) => tracing::warn!("drain timeout reached; remaining connections close once the ledger is flushed"),
        }
        if let Some(task) = sweep_task {
            task.abort();
        }
        if let Some(task) = admin_task {
            task.abort();
        }
        // Let the ledger writes of the last responses land (a remote store's writes run on the
        // worker threads, which serve on until `workers` is dropped).
        ledger.flush(Duration::from_secs(5)).await;
        if let Some(telemetry) = telemetry {
            // Off this thread: the exporter's last requests run on this runtime.
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown(Duration::from_secs(5)))
                .await;
        }
        drop(workers);
    }
}

/// The threads that serve connections, each with an event loop of its own.
struct Workers {
    queues: Vec<mpsc::UnboundedSender<(std::net::TcpStream, Watcher)>>,
    next: std::cell::Cell<usize>,
}

impl Workers {
    fn start(router: &Router, settings: &Settings) -> std::io::Result<Workers> {
        let count = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let mut queues = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let router = router.clone();
            let header_timeout = settings.server.header_timeout;
            std::thread::Builder::new()
                .name(format!("rethread-worker-{index}"))
                .spawn(move || runtime.block_on(serve_handed(rx, router, header_timeout)))?;
            queues.push(tx);
        }
        Ok(Workers {
            queues,
            next: std::cell::Cell::new(0),
        })
    }

    /// Gives an accepted connection to the next worker in turn.
    fn hand(&self, stream: std::net::TcpStream, watcher: Watcher) {
        let next = self.next.get();
        self.next.set((next + 1) % self.queues.len());
        if self.queues[next].send((stream, watcher)).is_err() {
            tracing::error!(
                worker = next,
                "a worker thread has stopped; connection dropped"
            );
        }
    }
}

/// A worker's loop: serves every connection handed to it until the queue closes.
async fn serve_handed(
    mut handed: mpsc::UnboundedReceiver<(std::net::TcpStream, Watcher)>,
    router: Router,
    header_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .preserve_header_case(true)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    while let Some((stream, watcher)) = handed.recv().await {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serve an accepted connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = watcher.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
