//! Any request body, against remembered turns of every shape: parsing, planning and splicing
//! never panic, and a body that was JSON stays JSON after repair.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rethread::repair::items::{ItemType, Turn, TurnItem};
use rethread::repair::plan::{plan, RestorePolicy};
use rethread::repair::request::parse;
use rethread::repair::splice::{concat, splice};

fn turn(shape: &[(&str, &str)], stored: bool) -> Arc<Turn> {
    let items = shape
        .iter()
        .map(|(ty, id)| {
            let ty = ItemType::parse(ty);
            let call_id: Option<Box<str>> = ty.is_client_call().then(|| format!("call_{id}").into());
            let full = (ty.is_client_call() || !stored).then(|| {
                Bytes::from(format!(r#"{{"type":"{}","id":"{id}","call_id":"call_{id}"}}"#, ty.as_str()))
            });
            TurnItem { id: (*id).into(), ty, call_id, full, digest: None }
        })
        .collect();
    Arc::new(Turn { stored, items, link: None })
}

fuzz_target!(|data: &[u8]| {
    let turns = [
        turn(&[("reasoning", "rs_1"), ("image_generation_call", "ig_1"), ("message", "msg_1")], true),
        turn(&[("reasoning", "rs_2"), ("function_call", "fc_2"), ("function_call", "fc_3")], true),
        turn(&[("reasoning", "rs_4"), ("reasoning", "rs_5"), ("function_call", "fc_5"), ("message", "msg_5")], false),
        turn(&[("mcp_list_tools", "mcpl_6"), ("reasoning", "rs_6"), ("mcp_call", "mcp_6")], true),
    ];
    let body = Bytes::copy_from_slice(data);
    let Ok(view) = parse(&body) else { return };
    for policy in [RestorePolicy::Group, RestorePolicy::Minimal] {
        let planned = plan(&view, &turns, policy, true);
        let Some(input) = &view.input else { continue };
        if planned.insertions.is_empty() && planned.replacements.is_empty() {
            continue;
        }
        let out = concat(&splice(&body, input, &planned.insertions, &planned.replacements));
        if serde_json::from_slice::<serde_json::Value>(data).is_ok() {
            assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "repair broke the JSON");
        }
    }
});
