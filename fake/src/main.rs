//! `rethread-fake`: the strict fake Responses API as a standalone server, for manual runs,
//! examples and benchmarks. Prints `listening on http://IP:PORT` first, then serves until killed.
//! `--help` lists the options (the `FakeOptions` fields).

use std::io::Write;
use std::time::Duration;

use rethread_fake::{FakeOptions, TestCa};

const USAGE: &str = "usage: rethread-fake [--listen ADDR] [--image-bytes N] [--no-compress] \
[--non-reasoning-model NAME[,NAME…]]… [--azure-wording-model NAME[,NAME…]]… \
[--tls h2,http/1.1|http/1.1|h2 --ca-out FILE] [--h2-goaway-after N] [--h2-refuse-every N] \
[--detail-errors] [--force-store-false] [--fault-error-rate F] [--fault-reset-rate F] \
[--fault-stall-rate F] [--fault-stall DURATION_MS] [--fault-seed N]

  --non-reasoning-model  exact model (deployment) names that do not reason, besides gpt-4*,
                         gpt-3.5*, chatgpt-* and *-chat*: no reasoning items, E14/E15
  --azure-wording-model  exact model (deployment) names that answer E1 in Azure's wording
  --tls                  serve HTTPS, offering these protocols by ALPN, with a certificate
                         signed by a test CA made at start
  --ca-out               where to write that CA's certificate (PEM), for clients to trust
  --h2-goaway-after      over HTTPS and HTTP/2: GOAWAY after N streams of a connection, naming
                         the Nth, ignoring streams opened after it (as nginx's keepalive_requests)
  --h2-refuse-every      over HTTPS and HTTP/2: reset every Nth stream with REFUSED_STREAM
  --detail-errors        write refusals as {\"detail\": \"<message>\"} (as the ChatGPT Codex
                         backend does) instead of {\"error\": {…}}; WebSocket frames unchanged
  --force-store-false    take every request as store:false whatever it says (as behind a
                         gateway that forces it): nothing kept, responses echo store:false
  --fault-error-rate     fraction (0 to 1) of POST …/responses answered 500 server_error
  --fault-reset-rate     fraction answered 200 and then cut: the connection is aborted after a
                         few SSE events or half the JSON, and the turn is not remembered
  --fault-stall-rate     fraction that wait --fault-stall before answering
  --fault-stall          that wait, in milliseconds (default 0)
  --fault-seed           seed of the fault draws (default 0): the same seed and request order
                         give the same faults; counts are in GET /fake/stats";

/// The value of `flag`, parsed.
fn value<T: std::str::FromStr>(
    it: &mut impl Iterator<Item = String>,
    flag: &str,
) -> Result<T, String> {
    let v = it.next().ok_or(format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("bad {flag}: {v}"))
}

/// A fault rate: a fraction from 0 to 1.
fn rate(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<f64, String> {
    let r: f64 = value(it, flag)?;
    match (0.0..=1.0).contains(&r) {
        true => Ok(r),
        false => Err(format!("{flag} must be from 0 to 1, not {r}")),
    }
}

/// The names of a comma-separated list, trimmed, empty ones dropped.
fn names(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

struct Args {
    listen: String,
    opts: FakeOptions,
    ca_out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:0".into(),
        opts: FakeOptions::default(),
        ca_out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => args.listen = it.next().ok_or("--listen needs ADDR")?,
            "--image-bytes" => {
                let v = it.next().ok_or("--image-bytes needs N")?;
                args.opts.image_bytes = v.parse().map_err(|_| format!("bad --image-bytes: {v}"))?;
            }
            "--no-compress" => args.opts.compress = false,
            "--detail-errors" => args.opts.detail_errors = true,
            "--force-store-false" => args.opts.force_store_false = true,
            "--non-reasoning-model" => {
                let v = it
                    .next()
                    .ok_or("--non-reasoning-model needs NAME[,NAME…]")?;
                args.opts.non_reasoning_models.extend(names(&v));
            }
            "--azure-wording-model" => {
                let v = it
                    .next()
                    .ok_or("--azure-wording-model needs NAME[,NAME…]")?;
                args.opts.azure_wording_models.extend(names(&v));
            }
            "--tls" => {
                let v = it.next().ok_or("--tls needs h2,http/1.1, http/1.1 or h2")?;
                args.opts.tls = Some(v.parse()?);
            }
            "--h2-goaway-after" => {
                let v = it.next().ok_or("--h2-goaway-after needs N")?;
                let n = v
                    .parse()
                    .map_err(|_| format!("bad --h2-goaway-after: {v}"))?;
                args.opts.h2_faults.goaway_after = Some(n);
            }
            "--h2-refuse-every" => {
                let v = it.next().ok_or("--h2-refuse-every needs N")?;
                let n = v
                    .parse()
                    .map_err(|_| format!("bad --h2-refuse-every: {v}"))?;
                args.opts.h2_faults.refuse_every = Some(n);
            }
            "--fault-error-rate" => args.opts.faults.error_rate = rate(&mut it, &arg)?,
            "--fault-reset-rate" => args.opts.faults.reset_rate = rate(&mut it, &arg)?,
            "--fault-stall-rate" => args.opts.faults.stall_rate = rate(&mut it, &arg)?,
            "--fault-stall" => {
                args.opts.faults.stall = Duration::from_millis(value(&mut it, &arg)?);
            }
            "--fault-seed" => args.opts.faults.seed = value(&mut it, &arg)?,
            "--ca-out" => args.ca_out = Some(it.next().ok_or("--ca-out needs FILE")?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    let f = &args.opts.faults;
    if f.error_rate + f.reset_rate + f.stall_rate > 1.0 {
        return Err("the --fault-*-rate fractions add up to more than 1".into());
    }
    if args.opts.tls.is_some() != args.ca_out.is_some() {
        return Err("--tls and --ca-out go together".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::from(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "no local address: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let ca = match (&args.ca_out, args.opts.tls) {
        (Some(path), Some(_)) => match TestCa::new() {
            Ok(ca) => {
                if let Err(e) = std::fs::write(path, ca.ca_pem()) {
                    let _ = writeln!(std::io::stderr(), "cannot write {path}: {e}");
                    return std::process::ExitCode::from(1);
                }
                Some(ca)
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "cannot make a test CA: {e}");
                return std::process::ExitCode::from(1);
            }
        },
        _ => None,
    };
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {scheme}://{addr}");
    let _ = out.flush();
    match rethread_fake::serve(listener, args.opts, ca.as_ref()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "server error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
