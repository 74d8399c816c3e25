//! Each rewrite on the shapes users reported (rows of `wild-failures.md`), through the whole
//! pure decision (`change::decide`) and the splice, so the bytes that would be sent are checked.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::*;
use crate::change::{decide, Change, Rules};
use crate::items::tests::turn;
use crate::plan::RestorePolicy;
use crate::request::parse;

const USER: &str = r#"{"role":"user","content":"go on"}"#;

fn reference(id: &str) -> String {
    format!(r#"{{"type":"item_reference","id":"{id}"}}"#)
}
fn call(id: &str) -> String {
    format!(
        r#"{{"type":"function_call","id":"{id}","call_id":"call_{id}","name":"f","arguments":"{{}}"}}"#
    )
}
fn output(id: &str) -> String {
    format!(r#"{{"type":"function_call_output","call_id":"call_{id}","output":"ok"}}"#)
}
/// An id-less assistant message whose text digests like the test turns' message `id`.
fn message_copy(id: &str) -> String {
    format!(r#"{{"role":"assistant","content":"{id}"}}"#)
}
fn reasoning_copy(id: &str) -> String {
    format!(r#"{{"type":"reasoning","summary":[],"encrypted_content":"{id}"}}"#)
}

fn rules(switches: Switches) -> Rules {
    Rules {
        policy: RestorePolicy::Group,
        stateless_include: true,
        model_may_reason: true,
        switches,
        exclude_encrypted: false,
        answer_calls: None,
        upstream_unstored: false,
    }
}

/// Decides and splices; renders the sent input compactly: ids, `ref:` for references, `user`,
/// `out:` for outputs, `copy` for id-less items, `+id` for an adopted id.
fn run_with(
    turns: &[Turn],
    items: &[String],
    switches: Switches,
    directives: &Directives,
) -> (Change, Vec<String>) {
    let body = Bytes::from(format!(
        r#"{{"model":"gpt-5","input":[{}]}}"#,
        items.join(",")
    ));
    let view = parse(&body).unwrap();
    let turns: Vec<Arc<Turn>> = turns.iter().cloned().map(Arc::new).collect();
    let (change, _) = decide(&body, &view, &turns, rules(switches), directives);
    let sent = crate::splice::concat(&change.apply(&body, &view));
    let value: Value = serde_json::from_slice(&sent).unwrap();
    let rendered = value["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let ty = item["type"].as_str().unwrap_or("");
            let id = item["id"].as_str().unwrap_or("");
            if ty == "item_reference" {
                format!("ref:{id}")
            } else if ty.ends_with("_output") {
                format!("out:{}", item["call_id"].as_str().unwrap_or(""))
            } else if item["role"] == "user" {
                "user".to_owned()
            } else if id.is_empty() {
                "copy".to_owned()
            } else if item.get("encrypted_content").is_some() || item["role"] == "assistant" {
                format!("+{id}")
            } else {
                id.to_owned()
            }
        })
        .collect();
    (change, rendered)
}

fn run(turns: &[Turn], items: &[String]) -> Vec<String> {
    run_with(turns, items, Switches::default(), &Directives::default()).1
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn outputs_answered_after_each_call_move_after_the_group() {
    // Row 3: parallel calls, each output right after its call.
    let t = [turn("rs fc fc fc", true)];
    let input = [
        reference("rs_0"),
        call("fc_1"),
        output("fc_1"),
        call("fc_2"),
        output("fc_2"),
        call("fc_3"),
        output("fc_3"),
    ];
    let (change, out) = run_with(&t, &input, Switches::default(), &Directives::default());
    assert_eq!(
        out,
        s(&[
            "ref:rs_0",
            "fc_1",
            "fc_2",
            "fc_3",
            "out:call_fc_1",
            "out:call_fc_2",
            "out:call_fc_3"
        ])
    );
    assert_eq!(change.rules_text(), "move=4");
    // Switched off, the request goes as it is (the API refuses it, as it would directly).
    let off = Switches {
        moves: false,
        ..Switches::default()
    };
    let (change, out) = run_with(&t, &input, off, &Directives::default());
    assert!(change.is_empty());
    assert_eq!(out[2], "out:call_fc_1");
}

/// A turn of `shape` replayed as `[rs_0, fc, out, msg]`, the call answered before the message
/// (rows 4 and 5: clients append outputs right after their calls); returns what would be sent.
fn replayed_call_first(shape: &str, fc: &str, msg: &str) -> Vec<String> {
    let input = [reference("rs_0"), call(fc), output(fc), reference(msg)];
    run(&[turn(shape, true)], &input)
}

#[test]
fn an_output_inside_a_handoff_group_moves_after_its_message() {
    // Row 4: [rs, fc, msg] replayed as [rs, fc, out, msg].
    assert_eq!(
        replayed_call_first("rs fc msg", "fc_1", "msg_2"),
        s(&["ref:rs_0", "fc_1", "ref:msg_2", "out:call_fc_1"])
    );
}

#[test]
fn assistant_items_a_client_reversed_go_back_to_their_turns_order() {
    // Row 5: [rs, msg(commentary), fc] replayed as [rs, fc, out, msg].
    assert_eq!(
        replayed_call_first("rs msg fc", "fc_2", "msg_1"),
        s(&["ref:rs_0", "ref:msg_1", "fc_2", "out:call_fc_2"])
    );
    // Row 6: the message persisted before its reasoning.
    let t = [turn("rs msg", true)];
    assert_eq!(
        run(&t, &[USER.into(), reference("msg_1"), reference("rs_0")]),
        s(&["user", "ref:rs_0", "ref:msg_1"])
    );
}

#[test]
fn a_later_exact_duplicate_is_dropped_and_a_different_item_is_not() {
    // Row 16: the same reasoning reference twice.
    let t = [turn("rs msg", true)];
    let (change, out) = run_with(
        &t,
        &[reference("rs_0"), reference("rs_0"), reference("msg_1")],
        Switches::default(),
        &Directives::default(),
    );
    assert_eq!(out, s(&["ref:rs_0", "ref:msg_1"]));
    assert_eq!(change.dropped_ids(), ["rs_0"]);
    // Byte-identical full items too, even unknown to memory.
    let item = r#"{"type":"message","id":"msg_x","role":"assistant","content":[]}"#;
    assert_eq!(
        run(&[], &[item.into(), USER.into(), item.into()]),
        s(&["+msg_x", "user"])
    );
    // Row 17: two different items with one id: which is right cannot be known.
    let other = r#"{"type":"message","id":"msg_x","role":"assistant","content":[{"type":"output_text","text":"b"}]}"#;
    assert!(run_with(
        &[],
        &[item.into(), other.into()],
        Switches::default(),
        &Directives::default()
    )
    .0
    .is_empty());
    // Id-less items (user turns said twice) are the client's to repeat.
    assert!(run_with(
        &[],
        &[USER.into(), USER.into()],
        Switches::default(),
        &Directives::default()
    )
    .0
    .is_empty());
}

#[test]
fn reasoning_that_can_never_be_valid_is_dropped() {
    // Row 7: back-to-back reasoning; the first has no follower of its own.
    let t = [turn("rs rs fc", true)];
    let input = [reference("rs_0"), call("fc_2"), output("fc_2")];
    assert_eq!(run(&t, &input), s(&["ref:rs_1", "fc_2", "out:call_fc_2"]));
    // Row 8: a reasoning-only turn.
    let t = [turn("rs", true)];
    assert_eq!(
        run(&t, &[USER.into(), reference("rs_0"), USER.into()]),
        s(&["user", "user"])
    );
    // Row 9: an SDK dropped the call but kept its reasoning.
    let t = [turn("rs fc", true)];
    assert_eq!(
        run(&t, &[message_copy("context"), reference("rs_0")]),
        s(&["copy"])
    );
    // But not when the call's output is there: then the call is restored.
    assert_eq!(
        run(&t, &[reference("rs_0"), output("fc_1")]),
        s(&["ref:rs_0", "fc_1", "out:call_fc_1"])
    );
}

#[test]
fn an_edited_message_wins_over_the_recorded_one() {
    // Row 11: the client replaced the reasoning's message with its own edit.
    let t = [turn("rs msg", true)];
    let (change, out) = run_with(
        &t,
        &[reference("rs_0"), message_copy("an edit")],
        Switches::default(),
        &Directives::default(),
    );
    assert_eq!(
        out,
        s(&["copy"]),
        "the reasoning goes; msg_1 is never restored"
    );
    assert_eq!(change.rules_text(), "drop=1");
}

#[test]
fn an_id_less_copy_of_a_remembered_item_adopts_its_id() {
    // The four clients: the message after a reasoning item comes back as id-less text.
    let t = [turn("rs msg", true)];
    let (change, out) = run_with(
        &t,
        &[reference("rs_0"), message_copy("msg_1"), USER.into()],
        Switches::default(),
        &Directives::default(),
    );
    assert_eq!(out, s(&["ref:rs_0", "+msg_1", "user"]));
    assert_eq!(change.rules_text(), "adopt=1");
    // Row 12: reasoning whose id was stripped, before its call.
    let t = [turn("rs fc", false)];
    let (change, out) = run_with(
        &t,
        &[reasoning_copy("rs_0"), call("fc_1"), output("fc_1")],
        Switches::default(),
        &Directives::default(),
    );
    assert_eq!(out, s(&["+rs_0", "fc_1", "out:call_fc_1"]));
    assert_eq!(change.rules_text(), "adopt=1");
    // Not adopted without the switch: the old insertion of a second copy is not made either
    // (the planner sees an id-less item before fc_1 and inserts the reasoning before fc_1).
    let off = Switches {
        adopt: false,
        ..Switches::default()
    };
    let (_, out) = run_with(
        &t,
        &[reasoning_copy("rs_0"), call("fc_1"), output("fc_1")],
        off,
        &Directives::default(),
    );
    assert!(!out.contains(&"+rs_0".to_owned()), "{out:?}");
}

#[test]
fn a_reasoning_item_without_summary_is_completed() {
    // Row 28, without memory: the rule needs none.
    let body = Bytes::from_static(
        br#"{"input":[{"type":"reasoning","id":"rs_1","encrypted_content":"e"},{"type":"reasoning","summary":[],"id":"rs_2"}]}"#,
    );
    let view = parse(&body).unwrap();
    let (change, _) = decide(
        &body,
        &view,
        &[],
        rules(Switches::default()),
        &Directives::default(),
    );
    assert_eq!(change.rules_text(), "complete=1");
    let sent = crate::splice::concat(&change.apply(&body, &view));
    assert_eq!(
        std::str::from_utf8(&sent).unwrap(),
        r#"{"input":[{"summary":[],"type":"reasoning","id":"rs_1","encrypted_content":"e"},{"type":"reasoning","summary":[],"id":"rs_2"}]}"#
    );
}

#[test]
fn the_upstreams_refusal_asks_for_its_rewrite() {
    // E6 on a call sent by reference: the recorded call goes instead (row 29).
    let t = [turn("rs fc", true)];
    let input = [reference("rs_0"), reference("fc_1"), output("fc_1")];
    assert!(
        run_with(&t, &input, Switches::default(), &Directives::default())
            .0
            .is_empty()
    );
    let expand = Directives {
        expand_calls: vec!["call_fc_1".into()],
        ..Directives::default()
    };
    let (_, out) = run_with(&t, &input, Switches::default(), &expand);
    assert_eq!(out, s(&["ref:rs_0", "fc_1", "out:call_fc_1"]));
    // E2 naming a reasoning item memory does not know: it is dropped.
    let named = Directives {
        drop_ids: vec!["rs_cold".into()],
        ..Directives::default()
    };
    let (_, out) = run_with(
        &[],
        &[reference("rs_cold"), USER.into()],
        Switches::default(),
        &named,
    );
    assert_eq!(out, s(&["user"]));
    // E15: every reasoning item goes.
    let none = Directives {
        drop_reasoning: true,
        ..Directives::default()
    };
    let t = [turn("rs msg", true)];
    let (_, out) = run_with(
        &t,
        &[reference("rs_0"), reference("msg_1")],
        Switches::default(),
        &none,
    );
    assert_eq!(out, s(&["ref:msg_1"]));
}

#[test]
fn nothing_is_rewritten_in_a_request_the_api_accepts() {
    let t = [turn("rs fc msg", true)];
    for input in [
        vec![reference("rs_0"), call("fc_1"), output("fc_1")],
        vec![
            USER.into(),
            reference("rs_0"),
            call("fc_1"),
            reference("msg_2"),
            output("fc_1"),
        ],
        vec![message_copy("free text"), USER.into()],
    ] {
        let (change, _) = run_with(&t, &input, Switches::default(), &Directives::default());
        assert!(change.rewrite.is_none(), "{input:?}: {change:?}");
    }
}

#[test]
fn a_written_answer_never_separates_a_reasoning_item_from_its_follower() {
    // unanswered_calls = answer, and a message whose reasoning the client stripped: the answer
    // for the call goes before the inserted reasoning item, never between it and its message.
    let t = [turn("rs msg", true)];
    let items = [
        USER.to_owned(),
        call("fc_9"),
        r#"{"type":"message","role":"assistant","id":"msg_1","content":"x"}"#.to_owned(),
        USER.to_owned(),
    ];
    let body = Bytes::from(format!(
        r#"{{"model":"gpt-5","input":[{}]}}"#,
        items.join(",")
    ));
    let view = parse(&body).unwrap();
    let turns: Vec<Arc<Turn>> = t.iter().cloned().map(Arc::new).collect();
    let rules = Rules {
        answer_calls: Some("interrupted"),
        upstream_unstored: false,
        ..rules(Switches::default())
    };
    let (change, _) = decide(&body, &view, &turns, rules, &Directives::default());
    let sent: Value =
        serde_json::from_slice(&crate::splice::concat(&change.apply(&body, &view))).unwrap();
    let kinds: Vec<String> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}{}",
                i["type"].as_str().unwrap_or("user"),
                i["id"]
                    .as_str()
                    .map(|id| format!(":{id}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "user",
            "function_call:fc_9",
            "function_call_output",
            "item_reference:rs_0",
            "message:msg_1",
            "user"
        ]
    );
    assert_eq!(change.rules_text(), "insert=1, answer=1");
}
