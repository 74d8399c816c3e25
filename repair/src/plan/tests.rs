//! Every item type and every turn shape of the API reference, planned and spliced.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::*;
use crate::items::tests::turn;
use crate::request::parse;
use crate::splice::{concat, splice};

const USER: &str =
    r#"{"role":"user","content":[{"type":"input_text","text":"Now make it look realistic"}]}"#;

fn bare(ty: &str, id: &str) -> String {
    format!(r#"{{"type":"{ty}","id":"{id}"}}"#)
}
fn reference(id: &str) -> String {
    format!(r#"{{"type":"item_reference","id":"{id}"}}"#)
}
fn output(call_id: &str) -> String {
    format!(r#"{{"type":"function_call_output","call_id":"{call_id}","output":"ok"}}"#)
}
fn call(id: &str) -> String {
    format!(
        r#"{{"type":"function_call","id":"{id}","call_id":"call_{id}","name":"f","arguments":"{{}}"}}"#
    )
}

/// Plans `items` against `turns` and renders the resulting input compactly: `ref:<id>` for
/// references, `full:<id>` for recorded items rethread inserted, the client's ids as they are,
/// `user` for role messages, `out:<call_id>` for outputs.
fn run_with(
    turns: &[Turn],
    items: &[String],
    extra: &str,
    policy: RestorePolicy,
) -> (Plan, Vec<String>) {
    let body = Bytes::from(format!(
        r#"{{"model":"gpt-5"{extra},"input":[{}]}}"#,
        items.join(",")
    ));
    let view = parse(&body).unwrap();
    let turns: Vec<Arc<Turn>> = turns.iter().cloned().map(Arc::new).collect();
    let plan = plan(&view, &turns, policy, true);
    let out = concat(&splice(
        &body,
        view.input.as_ref().unwrap(),
        &plan.insertions,
        &plan.replacements,
    ));
    let value: Value = serde_json::from_slice(&out).unwrap();
    let rendered = value["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let ty = item["type"].as_str().unwrap_or("");
            let id = item["id"].as_str().unwrap_or("");
            if ty == "item_reference" {
                format!("ref:{id}")
            } else if item.get("full").is_some() {
                format!("full:{id}")
            } else if item.get("role").is_some() && id.is_empty() {
                "user".to_owned()
            } else if ty.ends_with("_output") {
                format!("out:{}", item["call_id"].as_str().unwrap_or(""))
            } else if id.is_empty() {
                format!("{ty}:{}", item["call_id"].as_str().unwrap_or(""))
            } else {
                id.to_owned()
            }
        })
        .collect();
    (plan, rendered)
}

fn run(turns: &[Turn], items: &[String]) -> Vec<String> {
    run_with(turns, items, "", RestorePolicy::Group).1
}

fn minimal(turns: &[Turn], items: &[String]) -> Vec<String> {
    run_with(turns, items, "", RestorePolicy::Minimal).1
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn image_followup_gets_its_reasoning_back() {
    let t = [turn("rs ig msg", true)];
    let input = [USER.to_owned(), bare("image_generation_call", "ig_1")];
    assert_eq!(
        run(&t, &input),
        s(&["user", "ref:rs_0", "ig_1", "ref:msg_2"])
    );
    assert_eq!(minimal(&t, &input), s(&["user", "ref:rs_0", "ig_1"]));
}

#[test]
fn every_output_item_type_gets_its_reasoning_back() {
    for (kind, ty) in [
        ("msg", "message"),
        ("ig", "image_generation_call"),
        ("ws", "web_search_call"),
        ("fs", "file_search_call"),
        ("ci", "code_interpreter_call"),
        ("mcp", "mcp_call"),
        ("mcpl", "mcp_list_tools"),
        ("mcpr", "mcp_approval_request"),
        ("tool_search_call", "tool_search_call"),
        ("future_call", "future_call"),
    ] {
        let t = [turn(&format!("rs {kind}"), true)];
        let id = format!("{kind}_1");
        assert_eq!(
            run(&t, &[bare(ty, &id)]),
            vec!["ref:rs_0".to_owned(), id.clone()],
            "{ty}"
        );
        assert_eq!(
            run(&t, &[reference(&id)]),
            vec!["ref:rs_0".to_owned(), format!("ref:{id}")],
            "{ty}"
        );
    }
}

#[test]
fn every_client_call_type_gets_its_reasoning_back_with_its_output() {
    for (kind, ty) in [
        ("fc", "function_call"),
        ("ctc", "custom_tool_call"),
        ("cc", "computer_call"),
        ("lsh", "local_shell_call"),
        ("sh", "shell_call"),
        ("apc", "apply_patch_call"),
    ] {
        let t = [turn(&format!("rs {kind}"), true)];
        let id = format!("{kind}_1");
        let call = format!(r#"{{"type":"{ty}","id":"{id}","call_id":"call_{id}"}}"#);
        let out = format!(r#"{{"type":"{ty}_output","call_id":"call_{id}","output":"ok"}}"#);
        assert_eq!(
            run(&t, &[call, out]),
            vec!["ref:rs_0".to_owned(), id.clone(), format!("out:call_{id}")],
            "{ty}"
        );
    }
}

#[test]
fn parallel_calls_share_one_reasoning_item() {
    let t = [turn("rs fc fc", true)];
    let input = [
        call("fc_1"),
        call("fc_2"),
        output("call_fc_1"),
        output("call_fc_2"),
    ];
    assert_eq!(
        run(&t, &input),
        s(&["ref:rs_0", "fc_1", "fc_2", "out:call_fc_1", "out:call_fc_2"])
    );
}

#[test]
fn a_call_is_restored_only_when_its_output_is_sent() {
    let t = [turn("rs fc fc", true)];
    assert_eq!(
        run(&t, &[call("fc_1"), output("call_fc_1")]),
        s(&["ref:rs_0", "fc_1", "out:call_fc_1"])
    );
    // With both outputs present, the missing call is restored in full.
    let input = [call("fc_1"), output("call_fc_1"), output("call_fc_2")];
    assert_eq!(
        run(&t, &input),
        s(&[
            "ref:rs_0",
            "fc_1",
            "full:fc_2",
            "out:call_fc_1",
            "out:call_fc_2"
        ])
    );
}

#[test]
fn two_groups_in_one_turn_each_get_their_own_reasoning() {
    let t = [turn("rs ig rs msg", true)];
    assert_eq!(
        run(&t, &[bare("image_generation_call", "ig_1")]),
        s(&["ref:rs_0", "ig_1"])
    );
    assert_eq!(
        run(&t, &[reference("msg_3")]),
        s(&["ref:rs_2", "ref:msg_3"])
    );
    assert_eq!(
        run(
            &t,
            &[bare("image_generation_call", "ig_1"), reference("msg_3")]
        ),
        s(&["ref:rs_0", "ig_1", "ref:rs_2", "ref:msg_3"])
    );
}

#[test]
fn a_groups_tail_comes_before_the_next_groups_reasoning() {
    let t = [turn("rs ig ws rs msg", true)];
    assert_eq!(
        run(
            &t,
            &[bare("image_generation_call", "ig_1"), reference("msg_4")]
        ),
        s(&["ref:rs_0", "ig_1", "ref:ws_2", "ref:rs_3", "ref:msg_4"])
    );
}

#[test]
fn missing_items_between_sent_ones_are_restored_in_place() {
    let t = [turn("rs ws ig msg", true)];
    assert_eq!(
        run(&t, &[reference("ws_1"), reference("msg_3")]),
        s(&["ref:rs_0", "ref:ws_1", "ref:ig_2", "ref:msg_3"])
    );
}

#[test]
fn back_to_back_reasoning_items_pair_with_the_right_follower() {
    let t = [turn("rs rs fc", true)];
    assert_eq!(
        run(&t, &[call("fc_2"), output("call_fc_2")]),
        s(&["ref:rs_1", "fc_2", "out:call_fc_2"])
    );
    // The first reasoning item's group is empty: sending it alone is left to the API.
    let (plan, out) = run_with(&t, &[reference("rs_0")], "", RestorePolicy::Group);
    assert_eq!(out, s(&["ref:rs_0"]));
    assert_eq!(plan.unrepairable, None);
}

#[test]
fn reasoning_sent_without_its_follower_gets_it() {
    let t = [turn("rs ig msg", true)];
    let input = [
        USER.to_owned(),
        r#"{"type":"reasoning","id":"rs_0","summary":[]}"#.to_owned(),
    ];
    assert_eq!(
        run(&t, &input),
        s(&["user", "rs_0", "ref:ig_1", "ref:msg_2"])
    );
    assert_eq!(minimal(&t, &input), s(&["user", "rs_0", "ref:ig_1"]));
}

#[test]
fn reasoning_whose_only_follower_is_an_unanswered_call_is_left_alone() {
    let t = [turn("rs fc", true)];
    let (plan, out) = run_with(&t, &[reference("rs_0")], "", RestorePolicy::Group);
    assert_eq!(out, s(&["ref:rs_0"]));
    assert_eq!(plan.unrepairable.unwrap().reason(), "no_follower");
}

#[test]
fn nested_arrays_are_flattened_when_repaired() {
    let t = [turn("rs ig msg", true)];
    let input = [
        USER.to_owned(),
        format!("[{}]", bare("image_generation_call", "ig_1")),
    ];
    assert_eq!(
        run(&t, &input),
        s(&["user", "ref:rs_0", "ig_1", "ref:msg_2"])
    );
}

#[test]
fn a_whole_group_sent_in_full_is_left_alone() {
    let t = [turn("rs ig msg", true)];
    let input = [
        r#"{"type":"reasoning","id":"rs_0","summary":[]}"#.to_owned(),
        bare("image_generation_call", "ig_1"),
        reference("msg_2"),
    ];
    let (plan, _) = run_with(&t, &input, "", RestorePolicy::Group);
    assert_eq!(plan, Plan::default());
}

#[test]
fn vercel_calls_without_ids_are_already_whole() {
    let t = [turn("rs fc", true)];
    let idless =
        r#"{"type":"function_call","call_id":"call_fc_1","name":"f","arguments":"{}"}"#.to_owned();
    let (plan, _) = run_with(
        &t,
        &[reference("rs_0"), idless.clone(), output("call_fc_1")],
        "",
        RestorePolicy::Group,
    );
    assert_eq!(plan, Plan::default());
    // Without the reasoning item, the id-less call still names its group by call_id.
    assert_eq!(
        run(&t, &[idless, output("call_fc_1")]),
        s(&["ref:rs_0", "function_call:call_fc_1", "out:call_fc_1"])
    );
}

#[test]
fn chained_requests_are_never_touched() {
    let t = [turn("rs ig msg", true)];
    for extra in [
        r#","previous_response_id":"resp_1""#,
        r#","conversation":"conv_1""#,
    ] {
        let (plan, out) = run_with(
            &t,
            &[bare("image_generation_call", "ig_1")],
            extra,
            RestorePolicy::Group,
        );
        assert_eq!(out, s(&["ig_1"]));
        assert_eq!(plan.unrepairable, Some(Unrepairable::Chained));
    }
}

#[test]
fn a_client_order_no_request_could_satisfy_is_left_alone() {
    let t = [turn("rs fc fc", true)];
    for input in [
        [
            call("fc_2"),
            call("fc_1"),
            output("call_fc_1"),
            output("call_fc_2"),
        ],
        [
            call("fc_1"),
            output("call_fc_1"),
            call("fc_2"),
            output("call_fc_2"),
        ],
    ] {
        let (plan, out) = run_with(&t, &input, "", RestorePolicy::Group);
        assert_eq!(plan.unrepairable.unwrap().reason(), "client_order");
        assert_eq!(out.len(), 4);
    }
}

#[test]
fn items_before_the_first_reasoning_item_need_nothing() {
    let t = [turn("mcpl rs mcp rs msg", true)];
    let (plan, _) = run_with(&t, &[reference("mcpl_0")], "", RestorePolicy::Group);
    assert_eq!(plan, Plan::default());
    assert_eq!(
        run(&t, &[reference("mcp_2")]),
        s(&["ref:rs_1", "ref:mcp_2"])
    );
}

#[test]
fn turns_without_reasoning_need_nothing() {
    let t = [turn("ig msg", true)];
    let (plan, _) = run_with(
        &t,
        &[bare("image_generation_call", "ig_0")],
        "",
        RestorePolicy::Group,
    );
    assert_eq!(plan, Plan::default());
}

#[test]
fn stateless_requests_get_full_recorded_items() {
    let t = [turn("rs fc", false)];
    let (_, out) = run_with(
        &t,
        &[call("fc_1"), output("call_fc_1")],
        r#","store":false"#,
        RestorePolicy::Group,
    );
    assert_eq!(out, s(&["full:rs_0", "fc_1", "out:call_fc_1"]));
    // A turn learned from an unstored response cannot be referenced even by a storing request.
    assert_eq!(
        run(&t, &[call("fc_1"), output("call_fc_1")]),
        s(&["full:rs_0", "fc_1", "out:call_fc_1"])
    );
}

#[test]
fn a_stateless_request_never_gets_a_reference() {
    let t = [turn("rs ig msg", true)];
    let (plan, out) = run_with(
        &t,
        &[reference("msg_2")],
        r#","store":false"#,
        RestorePolicy::Group,
    );
    assert_eq!(out, s(&["ref:msg_2"]));
    assert_eq!(plan.unrepairable.unwrap().reason(), "not_insertable");
}

#[test]
fn unknown_ids_and_mismatched_types_change_nothing() {
    let t = [turn("rs ig msg", true)];
    for item in [
        bare("image_generation_call", "ig_9"),
        bare("message", "ig_1"),
        USER.to_owned(),
    ] {
        let (plan, _) = run_with(&t, &[item], "", RestorePolicy::Group);
        assert_eq!(plan, Plan::default());
    }
}

#[test]
fn items_from_several_turns_are_repaired_together() {
    let t = [turn("rs ig msg", true), turn("rs fc", true)];
    // The second turn's ids would collide with the first's; give it its own.
    let mut second = t[1].clone();
    second.items[0].id = "rs_b".into();
    second.items[1].id = "fc_b".into();
    second.items[1].call_id = Some("call_fc_b".into());
    second.items[1].full = Some(Bytes::from_static(
        br#"{"type":"function_call","id":"fc_b","call_id":"call_fc_b","name":"f","arguments":"{}"}"#,
    ));
    let turns = [t[0].clone(), second];
    assert_eq!(
        run(
            &turns,
            &[
                bare("image_generation_call", "ig_1"),
                USER.to_owned(),
                call("fc_b"),
                output("call_fc_b")
            ]
        ),
        s(&[
            "ref:rs_0",
            "ig_1",
            "ref:msg_2",
            "user",
            "ref:rs_b",
            "fc_b",
            "out:call_fc_b"
        ])
    );
}

#[test]
fn cold_fallback_places_the_named_reasoning_before_the_item() {
    let body = Bytes::from(format!(
        r#"{{"input":[{USER},{}]}}"#,
        bare("image_generation_call", "ig_x")
    ));
    let view = parse(&body).unwrap();
    let ins = cold_insertion(&view, &[], "ig_x", "rs_x").unwrap();
    let out = concat(&splice(
        &body,
        view.input.as_ref().unwrap(),
        &with_insertion(Vec::new(), ins),
        &[],
    ));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["input"][1],
        serde_json::json!({"type":"item_reference","id":"rs_x"})
    );
    assert_eq!(v["input"][2]["id"], "ig_x");
    // Never twice, never for unknown items, never statelessly.
    assert!(cold_insertion(&view, &[], "ig_nope", "rs_x").is_none());
    let stateless = Bytes::from(format!(
        r#"{{"store":false,"input":[{}]}}"#,
        bare("image_generation_call", "ig_x")
    ));
    assert!(cold_insertion(&parse(&stateless).unwrap(), &[], "ig_x", "rs_x").is_none());
}

#[test]
fn splicing_keeps_every_original_byte() {
    let t = [turn("rs ig msg", true)];
    let body = Bytes::from(format!(
        "{{ \"input\" : [ {USER} ,\n {} ] , \"tools\":[{{\"type\":\"image_generation\"}}] }}",
        bare("image_generation_call", "ig_1")
    ));
    let view = parse(&body).unwrap();
    let turns: Vec<Arc<Turn>> = t.iter().cloned().map(Arc::new).collect();
    let plan = plan(&view, &turns, RestorePolicy::Group, true);
    let out = String::from_utf8(concat(&splice(
        &body,
        view.input.as_ref().unwrap(),
        &plan.insertions,
        &plan.replacements,
    )))
    .unwrap();
    let expected = format!(
        "{{ \"input\" : [ {USER} ,\n {{\"type\":\"item_reference\",\"id\":\"rs_0\"}},{},{{\"type\":\"item_reference\",\"id\":\"msg_2\"}} ] , \"tools\":[{{\"type\":\"image_generation\"}}] }}",
        bare("image_generation_call", "ig_1")
    );
    assert_eq!(out, expected);
}

#[test]
fn inserting_into_an_empty_list_and_at_the_end_is_valid_json() {
    let body = Bytes::from_static(br#"{"input":[]}"#);
    let view = parse(&body).unwrap();
    let a = Insertion {
        gap: 0,
        id: "a".into(),
        ty: ItemType::Message,
        text: reference_json("a"),
        order: (0, 0),
    };
    let b = Insertion {
        gap: 0,
        id: "b".into(),
        ty: ItemType::Message,
        text: reference_json("b"),
        order: (0, 1),
    };
    let out = concat(&splice(&body, view.input.as_ref().unwrap(), &[a, b], &[]));
    assert_eq!(
        out,
        br#"{"input":[{"type":"item_reference","id":"a"},{"type":"item_reference","id":"b"}]}"#
    );
}

#[test]
fn a_stateless_reference_is_rehydrated_into_the_full_item() {
    let t = [turn("rs fc", false)];
    let (plan, out) = run_with(
        &t,
        &[reference("rs_0"), call("fc_1"), output("call_fc_1")],
        r#","store":false"#,
        RestorePolicy::Group,
    );
    assert_eq!(out, s(&["full:rs_0", "fc_1", "out:call_fc_1"]));
    assert_eq!(plan.replacements.len(), 1);
    assert!(plan.insertions.is_empty());
    // A reasoning item sent without its encrypted content is rehydrated too.
    let (_, out) = run_with(
        &t,
        &[
            r#"{"type":"reasoning","id":"rs_0","summary":[]}"#.to_owned(),
            call("fc_1"),
            output("call_fc_1"),
        ],
        r#","store":false"#,
        RestorePolicy::Group,
    );
    assert_eq!(out, s(&["full:rs_0", "fc_1", "out:call_fc_1"]));
}

#[test]
fn stored_requests_keep_their_references() {
    let t = [turn("rs fc", true)];
    let (plan, _) = run_with(
        &t,
        &[reference("rs_0"), call("fc_1"), output("call_fc_1")],
        "",
        RestorePolicy::Group,
    );
    assert_eq!(plan, Plan::default());
}

#[test]
fn a_stored_requests_reference_to_an_unstored_turn_is_rehydrated() {
    // The client flipped `store`: the API cannot look up an item of the unstored turn.
    let t = [turn("rs fc", false)];
    let (plan, out) = run_with(
        &t,
        &[reference("rs_0"), call("fc_1"), output("call_fc_1")],
        "",
        RestorePolicy::Group,
    );
    assert_eq!(out, s(&["full:rs_0", "fc_1", "out:call_fc_1"]));
    assert_eq!(plan.replacements.len(), 1);
}

#[test]
fn nested_input_with_a_rehydration_flattens_in_order() {
    let t = [turn("rs fc", false)];
    let input = [
        format!("[{},{}]", reference("rs_0"), call("fc_1")),
        output("call_fc_1"),
    ];
    let (_, out) = run_with(&t, &input, r#","store":false"#, RestorePolicy::Group);
    assert_eq!(out, s(&["full:rs_0", "fc_1", "out:call_fc_1"]));
}

#[test]
fn a_reasoning_item_is_never_placed_directly_before_another() {
    // [rs0, rs1, fc2]: rs0's group holds nothing else, so no follower can ever be given to it
    // (the API refuses it even when rs1 follows: E12).
    let t = [turn("rs rs fc", true)];
    let input = [
        reference("rs_0"),
        USER.to_owned(),
        call("fc_2"),
        output("call_fc_2"),
    ];
    let (plan, out) = run_with(&t, &input, "", RestorePolicy::Group);
    assert_eq!(out, s(&["ref:rs_0", "user", "fc_2", "out:call_fc_2"]));
    assert_eq!(plan.unrepairable.unwrap().reason(), "no_follower");
    // The client's [rs0, fc2, out] must not become [rs0, rs1, fc2, out], which the API refuses
    // on rs0: it is left as it is.
    let input = [reference("rs_0"), call("fc_2"), output("call_fc_2")];
    let (plan, out) = run_with(&t, &input, "", RestorePolicy::Group);
    assert_eq!(out, s(&["ref:rs_0", "fc_2", "out:call_fc_2"]));
    assert!(plan.unrepairable.is_some());
    // Without rs0, rs1 is inserted before its call as usual.
    let input = [call("fc_2"), output("call_fc_2")];
    assert_eq!(run(&t, &input), s(&["ref:rs_1", "fc_2", "out:call_fc_2"]));
}

#[test]
fn the_reasoning_of_a_reasoning_only_turn_is_never_given_a_follower_from_elsewhere() {
    // A turn that ended after its reasoning (max_output_tokens spent): the item can never be
    // replayed (E13), so a request sending it is not made "whole" around it.
    let t = [turn("msg rs", true), turn("rs ig msg", true)];
    let input = [
        reference("rs_1"),
        USER.to_owned(),
        bare("image_generation_call", "ig_1"),
    ];
    let (plan, out) = run_with(&t, &input, "", RestorePolicy::Group);
    assert!(plan.unrepairable.is_some());
    assert_eq!(out, s(&["ref:rs_1", "user", "ig_1"]));
}

#[test]
fn a_model_that_does_not_reason_gets_no_reasoning_items() {
    let t = [turn("rs fc msg", true)];
    let input = [USER.to_owned(), output("call_fc_1")];
    let body = Bytes::from(format!(
        r#"{{"model":"gpt-4.1","input":[{}]}}"#,
        input.join(",")
    ));
    let view = parse(&body).unwrap();
    let turns: Vec<Arc<Turn>> = t.iter().cloned().map(Arc::new).collect();
    let planned = plan(&view, &turns, RestorePolicy::Group, false);
    let ids: Vec<&str> = planned.insertions.iter().map(|i| &*i.id).collect();
    assert_eq!(ids, ["fc_1"]);
    // A lone message of a reasoning turn is not paired for such a model: nothing to do.
    let body = Bytes::from(r#"{"model":"gpt-4.1","input":[{"type":"message","id":"msg_2"}]}"#);
    let view = parse(&body).unwrap();
    assert_eq!(
        plan(&view, &turns, RestorePolicy::Group, false),
        Plan::default()
    );
}

#[test]
fn outputs_sent_without_their_calls_get_the_calls_and_their_reasoning() {
    let t = [turn("rs fc fc", true)];
    let input = [USER.to_owned(), output("call_fc_1"), output("call_fc_2")];
    assert_eq!(
        run(&t, &input),
        s(&[
            "user",
            "ref:rs_0",
            "full:fc_1",
            "full:fc_2",
            "out:call_fc_1",
            "out:call_fc_2"
        ])
    );
    // Only the answered call is restored.
    assert_eq!(
        run(&t, &[output("call_fc_2")]),
        s(&["ref:rs_0", "full:fc_2", "out:call_fc_2"])
    );
    // Without reasoning in the turn, the call alone.
    assert_eq!(
        run(&[turn("fc", true)], &[output("call_fc_0")]),
        s(&["full:fc_0", "out:call_fc_0"])
    );
}

#[test]
fn answered_calls_are_restored_even_in_minimal_mode_and_without_reasoning() {
    let t = [turn("rs fc fc", true)];
    let input = [call("fc_1"), output("call_fc_1"), output("call_fc_2")];
    assert_eq!(
        minimal(&t, &input),
        s(&[
            "ref:rs_0",
            "fc_1",
            "full:fc_2",
            "out:call_fc_1",
            "out:call_fc_2"
        ])
    );
    let t = [turn("fc msg", true)];
    assert_eq!(
        run(&t, &[bare("message", "msg_1"), output("call_fc_0")]),
        s(&["full:fc_0", "msg_1", "out:call_fc_0"])
    );
}
