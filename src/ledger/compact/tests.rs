//! The binary form's tests: round trips, damaged bytes, links.

use super::*;
use crate::repair::items::tests::turn;

fn round_trip(t: &Turn) -> Turn {
    let mut out = Vec::new();
    put_items(&mut out, t).unwrap();
    read_turn(&mut Reader::new(&out)).unwrap()
}

fn linked(shape: &str, parent: Option<&str>, input: Option<&str>) -> Turn {
    let mut t = turn(shape, false);
    t.link = Some(Box::new(Link {
        response: "resp_68c42d0fb418819dbfa579f69406b49508fbf9b1584184ff".into(),
        parent: parent.map(Into::into),
        input: input.map(|i| Bytes::copy_from_slice(i.as_bytes())),
        complete: true,
        conversation: None,
    }));
    t
}

fn encoded(t: &Turn) -> Vec<u8> {
    let mut out = Vec::new();
    put_items(&mut out, t).unwrap();
    put_link(&mut out, t);
    out
}

#[test]
fn a_link_round_trips_and_is_found_by_its_response_id() {
    let mut in_conversation = linked("msg", None, Some("[]"));
    if let Some(link) = &mut in_conversation.link {
        link.conversation = Some("conv_68c42d0fb418819dbfa579f69406b49508fbf9b1584184ff".into());
    }
    for t in [
        linked(
            "rs fc",
            Some("resp_1"),
            Some(r#"[{"role":"user","content":"hi"}]"#),
        ),
        linked("msg", None, None),
        in_conversation,
    ] {
        let out = encoded(&t);
        assert_eq!(read_turn(&mut Reader::new(&out)).unwrap(), t);
        let key = encode_id(&t.link.as_ref().unwrap().response);
        assert!(holds(&mut Reader::new(&out), KeyKind::ResponseId, &key));
        assert!(!holds(&mut Reader::new(&out), KeyKind::ItemId, &key));
    }
}

#[test]
fn a_record_cut_anywhere_in_its_link_reads_as_nothing_and_never_panics() {
    let t = linked("rs fc", Some("resp_1"), Some("[1,2,3]"));
    let out = encoded(&t);
    let mut items = Vec::new();
    put_items(&mut items, &t).unwrap();
    for end in items.len() + 1..out.len() {
        assert_eq!(
            read_turn(&mut Reader::new(&out[..end])),
            None,
            "cut at {end}"
        );
        let _ = link_key(&mut Reader::new(&out[items.len()..end]));
    }
    // A record written before links existed ends after its items.
    let mut old = turn("rs fc", false);
    old.link = None;
    assert_eq!(read_turn(&mut Reader::new(&items)).unwrap(), old);
}

#[test]
fn items_round_trip_with_packed_and_odd_ids() {
    let mut t = turn("mcpl rs fc ig rs msg future_kind", false);
    t.items[1].id = "rs_68c42d0fb418819dbfa579f69406b49508fbf9b1584184ff".into();
    t.items[2].call_id = Some("call_bN8rBNGyOxaLsg2ScY4EDjBS".into());
    t.items[3].id = "ig_ABCDEF".into();
    t.items[4].id = "odd id with spaces_and_ünïcode".into();
    t.items[5].id = "msg_0".into();
    assert_eq!(round_trip(&t), t);
    for stored in [true, false] {
        let t = turn("mcpl rs fc ig rs msg", stored);
        assert_eq!(round_trip(&t), t);
    }
}

#[test]
fn ids_encode_canonically() {
    for id in [
        "rs_68c42d0fb418819dbfa579f69406b49508fbf9b1584184ff",
        "rs_00",
        "zz_0a0b",
        "call_bN8rBNGyOxaLsg2ScY4EDjBS",
        "",
        "_",
        "rs_",
        "rs_abc",
    ] {
        let span = encode_id(id);
        assert_eq!(decode_id(&span).as_deref(), Some(id), "{id}");
        assert_eq!(Reader::new(&span).id_span(), Some(&span[..]), "{id}");
    }
    assert_eq!(
        encode_id("rs_68c42d0fb418819dbfa579f69406b49508fbf9b1584184ff").len(),
        25,
        "an API id is a tag and its 24 bytes"
    );
    assert_ne!(encode_id("rs_00"), encode_id("rs_0000"));
}

#[test]
fn an_api_shaped_image_turn_is_small() {
    let mut t = turn("rs ig msg", true);
    for (item, p) in t.items.iter_mut().zip(["rs", "ig", "msg"]) {
        item.id = format!("{p}_{}", "0123456789abcdef".repeat(3)).into();
    }
    // Capture digests a stored image call whole (its result left out), as it does what the
    // reasoning item and the message say.
    t.items[1].digest = Some(7);
    let mut out = Vec::new();
    put_items(&mut out, &t).unwrap();
    // A tag and 24 bytes per id, a type byte, and a 4-byte digest per item.
    assert_eq!(out.len(), 1 + 3 * 26 + 3 * 4);
}

#[test]
fn keys_are_ids_and_client_call_ids() {
    let t = turn("rs fc msg", true);
    let mut out = Vec::new();
    put_items(&mut out, &t).unwrap();
    for (kind, key) in crate::ledger::keys_of(&t) {
        assert!(
            holds(&mut Reader::new(&out), kind, &encode_id(key)),
            "{key}"
        );
    }
    assert!(!holds(
        &mut Reader::new(&out),
        KeyKind::CallId,
        &encode_id("fc_1")
    ));
}

#[test]
fn truncated_items_decode_to_nothing() {
    let t = turn("rs fc", false);
    let mut out = Vec::new();
    put_items(&mut out, &t).unwrap();
    for cut in 0..out.len() {
        assert!(read_turn(&mut Reader::new(&out[..cut])).is_none(), "{cut}");
    }
}
