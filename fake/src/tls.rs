//! HTTPS for the fake: a test CA of its own, a server certificate it signs, and ALPN.
//!
//! rustls (like every WebPKI verifier) refuses a self-signed certificate used as the server's own,
//! even when it is trusted as a CA, so the fake makes a CA and a leaf for `localhost`, `127.0.0.1`
//! and `::1` signed by it; clients trust the CA's PEM (rethread: `--upstream-ca`). Both are made
//! when the fake starts, so no key is ever checked in.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Which protocols a TLS server offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` and `http/1.1`: a client that offers both gets HTTP/2.
    H2AndHttp1,
    /// `http/1.1` only.
    Http1,
    /// `h2` only.
    H2,
}

impl Alpn {
    /// The protocol ids, most preferred first.
    pub fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        }
    }
}

impl std::str::FromStr for Alpn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "h2,http/1.1" => Ok(Alpn::H2AndHttp1),
            "http/1.1" => Ok(Alpn::Http1),
            "h2" => Ok(Alpn::H2),
            other => Err(format!(
                "unknown ALPN list {other:?}; use h2,http/1.1, h2 or http/1.1"
            )),
        }
    }
}

/// A test CA and the server certificate it signed.
pub struct TestCa {
    ca_pem: String,
    leaf_pem: String,
    key_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA, and a leaf for `localhost`, `127.0.0.1` and `::1` signed by it.
    pub fn new() -> Result<TestCa, rcgen::Error> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "rethread-fake test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "rethread-fake");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        Ok(TestCa {
            ca_pem: ca_cert.pem(),
            leaf_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
            chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            key: leaf_key.serialize_der(),
        })
    }

    /// The CA certificate, PEM: what a client must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate (PEM) and its private key (PKCS #8 PEM), for another server to
    /// serve (the nginx test).
    pub fn server_pem(&self) -> (&str, &str) {
        (&self.leaf_pem, &self.key_pem)
    }

    /// A TLS acceptor serving the leaf and offering `alpn`.
    pub fn acceptor(&self, alpn: Alpn) -> Result<TlsAcceptor, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)?;
        config.alpn_protocols = alpn.protocols();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// How the fake's HTTP/2 connections end and refuse, as servers in front of the API do.
#[derive(Debug, Clone, Copy, Default)]
pub struct H2Faults {
    /// Send GOAWAY after this many streams of a connection, naming the last one, and ignore the
    /// streams opened after it (nginx's `keepalive_requests`; `goaway.rs`).
    pub goaway_after: Option<u32>,
    /// Reset every Nth stream of a connection with `REFUSED_STREAM`, unprocessed.
    pub refuse_every: Option<u32>,
}

/// Serves `app` over TLS until `stop`: HTTP/2 when the client chose `h2` by ALPN, else HTTP/1.1
/// (with upgrades, for WebSocket mode). Connections are tasks of a set dropped with the server.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    faults: H2Faults,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut stop = std::pin::pin!(stop);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                connections.spawn(connection(tcp, acceptor.clone(), app.clone(), faults));
            }
        }
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    app: axum::Router,
    faults: H2Faults,
) {
    let Ok(stream) = acceptor.accept(tcp).await else {
        return;
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let service = hyper_util::service::TowerToHyperService::new(app);
    // A connection that ends in an error (a client gone, a reset) ends only itself.
    if !h2 {
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await;
        return;
    }
    let streams = std::sync::atomic::AtomicU32::new(0);
    let service = hyper::service::service_fn(move |request| {
        let n = streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let refuse = faults
            .refuse_every
            .is_some_and(|every| n.is_multiple_of(every.max(1)));
        let answer = (!refuse).then(|| hyper::service::Service::call(&service, request));
        async move {
            match answer {
                // hyper resets the stream with the reason the service's error carries.
                None => Err(h2::Error::from(h2::Reason::REFUSED_STREAM)),
                Some(answer) => Ok(match answer.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }),
            }
        }
    });
    let builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    let _ = match faults.goaway_after {
        Some(after) => {
            let io = hyper_util::rt::TokioIo::new(crate::goaway::GoAwayAfter::new(stream, after));
            builder.serve_connection(io, service).await
        }
        None => {
            let io = hyper_util::rt::TokioIo::new(stream);
            builder.serve_connection(io, service).await
        }
    };
}
