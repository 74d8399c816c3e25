//! HTTP/1.1 response bodies read by rethread itself (`forward/tap.rs`), not by hyper: every
//! framing an upstream can write arrives whole, a broken one fails only its own response, and a
//! connection is reused only when its last body ended exactly where its framing said.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

/// One answer: the pieces written, with a pause between them (so rethread reads them apart),
/// and whether the connection is closed after it.
struct Answer {
    pieces: Vec<Vec<u8>>,
    close: bool,
}

fn answer(pieces: &[&[u8]]) -> Answer {
    Answer {
        pieces: pieces.iter().map(|p| p.to_vec()).collect(),
        close: false,
    }
}

/// An upstream that gives the scripted answers in order, whatever connection asks, and counts
/// the connections it accepted. `early`: answers as soon as a request's head is read, and
/// reads its body (chunked) afterwards.
struct Scripted {
    url: String,
    accepted: Arc<AtomicUsize>,
}

impl Scripted {
    fn start(answers: Vec<Answer>, early: bool) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                std::thread::spawn(move || serve(stream, &answers, early));
            }
        });
        Scripted { url, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, answers: &Mutex<std::vec::IntoIter<Answer>>, early: bool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let Some((_, length)) = read_request_head(&mut reader) else {
            return;
        };
        let Some(answer) = answers.lock().unwrap().next() else {
            return;
        };
        if !early {
            let mut body = vec![0u8; length.unwrap_or(0)];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        for piece in &answer.pieces {
            if out.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if answer.close || (early && !read_chunked_to_end(&mut reader)) {
            return;
        }
    }
}

/// Reads a chunked request body to its last chunk; false if the connection ends first.
fn read_chunked_to_end(reader: &mut BufReader<TcpStream>) -> bool {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"0\r\n\r\n") {
        if reader.read(&mut byte).unwrap_or(0) == 0 {
            return false;
        }
        seen.push(byte[0]);
    }
    true
}

async fn get(proxy: &Rethread, client: &reqwest::Client) -> (u16, Result<Vec<u8>, reqwest::Error>) {
    let resp = client.get(proxy.url("/v1/models")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.map(|b| b.to_vec()))
}

#[tokio::test]
async fn chunks_split_anywhere_with_extensions_and_trailers_arrive_whole_and_the_connection_is_reused(
) {
    let upstream = Scripted::start(
        vec![
            answer(&[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWi",
                b"ki\r\n5\r",
                b"\npedia\r\n0\r\nX-Trailer: t\r\n",
                b"\r\n",
            ]),
            answer(&[
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello",
                b" world",
            ]),
            answer(&[b"HTTP/1.1 204 No Content\r\n\r\n"]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        ],
        false,
    );
    let proxy = Rethread::start(&upstream.url, &[]);
    let client = client();
    assert_eq!(get(&proxy, &client).await.1.unwrap(), b"Wikipedia");
    assert_eq!(get(&proxy, &client).await.1.unwrap(), b"hello world");
    assert_eq!(get(&proxy, &client).await.0, 204);
    assert_eq!(get(&proxy, &client).await.1.unwrap(), b"ok");
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn an_informational_answer_before_the_final_one_is_passed_over() {
    let upstream = Scripted::start(
        vec![
            answer(&[
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
            ]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"]),
        ],
        false,
    );
    let proxy = Rethread::start(&upstream.url, &[]);
    let client = client();
    let (status, body) = get(&proxy, &client).await;
    assert_eq!((status, body.unwrap()), (200, b"final".to_vec()));
    assert_eq!(get(&proxy, &client).await.1.unwrap(), b"next");
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn an_answer_that_comes_before_the_request_body_ends_is_relayed() {
    let upstream = Scripted::start(
        vec![
            answer(&[b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nearly"]),
            answer(&[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
                b"3\r\n, 2\r\n0\r\n\r\n",
            ]),
        ],
        true,
    );
    let proxy = Rethread::start(&upstream.url, &[]);
    // The body's second half comes 300 ms after its first: the answer comes in between.
    let stream = futures_util::stream::unfold(0u32, |n| async move {
        let part: &[u8] = match n {
            0 => b"{\"a\":",
            1 => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                b"1}"
            }
            _ => return None,
        };
        Some((Ok::<_, std::io::Error>(part.to_vec()), n + 1))
    });
    let resp = client()
        .post(proxy.url("/v1/files"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.bytes().await.unwrap(), "early");
    let (status, body) = get(&proxy, &client()).await;
    assert_eq!((status, body.unwrap()), (200, b"ok, 2".to_vec()));
}

/// An HTTP/1.0 answer is read by hyper, not here; the answers after it are whole (hyper does not
/// keep that connection: the next ones come on a new one).
#[tokio::test]
async fn an_http10_answer_is_read_by_hyper_and_the_next_ones_whole() {
    let upstream = Scripted::start(
        vec![
            answer(&[
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nfirst",
            ]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"]),
            answer(&[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nlast\r\n0\r\n\r\n",
            ]),
        ],
        false,
    );
    let proxy = Rethread::start(&upstream.url, &[]);
    let client = client();
    for expected in ["first", "next", "last"] {
        let (status, body) = get(&proxy, &client).await;
        assert_eq!((status, body.unwrap()), (200, expected.as_bytes().to_vec()));
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_fails_its_own_response_and_no_other() {
    let upstream = Scripted::start(
        vec![
            answer(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        ],
        false,
    );
    let proxy = Rethread::start(&upstream.url, &[]);
    // The head and the broken chunk come in one read: the client gets an error, never a body
    // that looks whole.
    let body = match client().get(proxy.url("/v1/models")).send().await {
        Ok(resp) => resp.bytes().await.map(|b| b.to_vec()),
        Err(e) => Err(e),
    };
    assert!(body.is_err(), "{body:?}");
    let next = client().get(proxy.url("/v1/models")).send().await;
    assert!(next.is_ok(), "{next:?} {}", proxy.logs());
    assert_eq!(next.unwrap().bytes().await.unwrap(), "ok");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_not_a_shorter_body() {
    let mut cut = answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"]);
    cut.close = true;
    let upstream = Scripted::start(
        vec![
            cut,
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        ],
        false,
    );
    let proxy = Rethread::start(&upstream.url, &[]);
    let (status, body) = get(&proxy, &client()).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "{body:?}");
    assert_eq!(get(&proxy, &client()).await.1.unwrap(), b"ok");
}

#[tokio::test]
async fn bytes_after_a_body_end_keep_its_connection_from_being_reused() {
    let upstream = Scripted::start(
        vec![
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE"]),
            answer(&[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nMORE",
            ]),
            answer(&[b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"]),
        ],
        false,
    );
    let proxy = Rethread::start(&upstream.url, &[]);
    let client = client();
    assert_eq!(get(&proxy, &client).await.1.unwrap(), b"ok");
    assert_eq!(get(&proxy, &client).await.1.unwrap(), b"ok");
    assert_eq!(get(&proxy, &client).await.1.unwrap(), b"next");
    assert_eq!(upstream.connections(), 3);
}
