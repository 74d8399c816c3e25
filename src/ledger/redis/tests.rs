//! The Redis store's unit tests (the end-to-end ones run a real redis-server: tests/e2e/redis.rs).

use super::*;
use crate::repair::items::tests::turn;

#[test]
fn turns_survive_the_round_trip_through_their_stored_form() {
    for stored in [true, false] {
        let t = turn("mcpl rs fc ig rs msg", stored);
        let blob = encode(&t, 1_234_567).unwrap();
        let (at, mut items) = open(&blob).unwrap();
        assert_eq!(at, 12_345);
        assert_eq!(compact::read_turn(&mut items).unwrap(), t);
    }
}

#[test]
fn cluster_urls_name_their_seed_nodes() {
    assert_eq!(cluster_nodes("redis://h:1/0").unwrap(), None);
    assert_eq!(
        cluster_nodes("redis+cluster://a:1,b:2").unwrap().unwrap(),
        ["redis://a:1", "redis://b:2"]
    );
    assert_eq!(
        cluster_nodes("rediss+cluster://u:p@w@a:1, b:2/?protocol=resp3")
            .unwrap()
            .unwrap(),
        [
            "rediss://u:p@w@a:1?protocol=resp3",
            "rediss://u:p@w@b:2?protocol=resp3"
        ]
    );
    assert!(cluster_nodes("redis+cluster://a:1/3").is_err());
    assert!(cluster_nodes("redis+cluster://").is_err());
}

#[test]
fn a_stored_turn_is_never_mistaken_for_a_pointer() {
    let mut t = turn("rs", true);
    t.items[0].id = "a".into();
    assert!(encode(&t, 0).unwrap().len() > 8);
}

#[tokio::test]
async fn the_window_covers_the_retention_newest_first() {
    let l = RedisLedger::new(
        "redis://127.0.0.1:1/0",
        "p",
        Duration::from_secs(8),
        Duration::from_millis(20),
    )
    .unwrap();
    let tenant = TenantKey([0xab; 16]);
    let keys = l.window(&tenant, 100_500);
    let names: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8(k.clone()).unwrap())
        .collect();
    let tag = format!("{{{}}}", tenant.hex());
    assert_eq!(names[0], format!("p:{tag}:1000:101"));
    assert_eq!(names.last().unwrap(), &format!("p:{tag}:1000:92"));
    assert_eq!(names.len(), 10);
    assert!(l.fresh(tenths(100_000), 107_900));
    assert!(!l.fresh(tenths(100_000), 108_000));
}
