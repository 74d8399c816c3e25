//! Many tenants at once: every follow-up is repaired with its own tenant's items, none with
//! another's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;

use crate::common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tenants_each_get_only_their_own_items() {
    let fake = fake().await;
    let proxy = Arc::new(Rethread::start(&fake.url(), &["--fallback-retries", "0"]));
    let http = client();
    let tenants = 1000;
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for n in 0..tenants {
        let (proxy, http, limit) = (proxy.clone(), http.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let key = format!("Bearer sk-tenant-{n:04}");
            let url = proxy.url("/v1/responses");
            let first: Value = http
                .post(&url)
                .header("authorization", &key)
                .json(&image_request())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let rs = output_id(&first, "reasoning");
            let ig = output_id(&first, "image_generation_call");
            let answer = http
                .post(&url)
                .header("authorization", &key)
                .json(&image_followup(&ig))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "tenant {n}");
            assert_eq!(answer.headers()["x-rethread-inserted"], "2", "tenant {n}");
            (key, rs, ig)
        }));
    }
    let mut turns = Vec::new();
    for task in tasks {
        turns.push(task.await.unwrap());
    }
    // Crossed: tenant n names tenant n+1's image; nothing may be inserted.
    for n in (0..tenants).step_by(50) {
        let (key, _, _) = &turns[n];
        let (_, _, other_ig) = &turns[(n + 1) % tenants];
        let answer = post(
            &proxy.url("/v1/responses"),
            key,
            &image_followup(other_ig),
            &[],
        )
        .await;
        assert_eq!(
            answer.inserted(),
            None,
            "tenant {n} got another tenant's items"
        );
    }
}
