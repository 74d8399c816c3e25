//! Calls the request gives no output (N1, the 2026 shape reported most): an opt-in answer.
//!
//! A client interrupted mid-tool, an SDK that took a message for the final output, a gateway
//! that compressed outputs away: the API refuses the next request with `No tool output found for
//! function call call_…` and the conversation is stuck. Nothing rethread remembers holds the
//! missing output, so the only repair is to write one: a plain sentence saying the call was
//! interrupted, placed right after the call's run of calls. That puts words in the history the
//! client never produced, so it is off unless the operator asks for it
//! (`unanswered_calls = answer`), and each one is logged.

use bytes::Bytes;

use super::items::{is_output_of_call, ItemType};
use super::plan::Insertion;
use super::request::InputItem;

/// Call types whose output is a plain string: the only ones rethread can answer (a computer
/// call's output is a screenshot; a shell or patch call's output has a structure of its own).
pub fn answerable(ty: &str) -> bool {
    matches!(
        ty,
        "function_call" | "custom_tool_call" | "local_shell_call"
    )
}

/// An output for every answerable call of `items` whose `call_id` no output of the request
/// carries, placed after the run of calls the call belongs to.
pub fn answers(items: &[InputItem<'_>], text: &str) -> Vec<Insertion> {
    let answered: std::collections::HashSet<&str> = items
        .iter()
        .filter(|i| i.ty().is_some_and(is_output_of_call))
        .filter_map(|i| i.call_id().or(i.id()))
        .collect();
    let is_call = |i: &InputItem<'_>| i.ty().is_some_and(|t| ItemType::parse(t).is_client_call());
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let (Some(ty), Some(call_id)) = (item.ty(), item.call_id()) else {
            continue;
        };
        if !answerable(ty)
            || answered.contains(call_id)
            || out.iter().any(|i: &Insertion| &*i.id == call_id)
        {
            continue;
        }
        let gap = (n + 1..items.len())
            .find(|&k| !is_call(&items[k]))
            .unwrap_or(items.len());
        out.push(answer(gap, ty, call_id, text, out.len()));
    }
    out
}

/// The written output of one call of type `ty`, inserted at `gap`.
pub fn answer(gap: usize, ty: &str, call_id: &str, text: &str, order: usize) -> Insertion {
    let output_type = format!("{ty}_output");
    let json = serde_json::json!({"type": output_type, "call_id": call_id, "output": text});
    Insertion::new_item(
        gap,
        call_id.into(),
        ItemType::parse(&output_type),
        Bytes::from(json.to_string()),
        order,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::request::parse;

    fn answered(body: &str) -> Vec<(usize, String)> {
        let view = parse(body.as_bytes()).unwrap();
        answers(&view.input.unwrap().items, "interrupted")
            .into_iter()
            .map(|i| (i.gap, String::from_utf8(i.text.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn each_unanswered_call_gets_an_output_after_its_run_of_calls() {
        let body = r#"{"input":[
            {"role":"user","content":"hi"},
            {"type":"reasoning","id":"rs_1","summary":[]},
            {"type":"function_call","id":"fc_1","call_id":"call_1","name":"a","arguments":"{}"},
            {"type":"function_call","id":"fc_2","call_id":"call_2","name":"b","arguments":"{}"},
            {"type":"function_call_output","call_id":"call_2","output":"ok"},
            {"type":"custom_tool_call","id":"ctc_3","call_id":"call_3","name":"c","input":"x"},
            {"role":"user","content":"next"}]}"#;
        let got = answered(body);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, 4, "after fc_1 and fc_2");
        assert!(
            got[0].1.contains(r#""type":"function_call_output""#) && got[0].1.contains("call_1")
        );
        assert_eq!(got[1].0, 6);
        assert!(got[1].1.contains(r#""type":"custom_tool_call_output""#));
    }

    #[test]
    fn a_call_answered_anywhere_in_the_input_is_left_alone() {
        let body = r#"{"input":[
            {"type":"function_call_output","call_id":"call_1","output":"early"},
            {"type":"function_call","id":"fc_1","call_id":"call_1","name":"a","arguments":"{}"}]}"#;
        assert!(answered(body).is_empty());
        let computer =
            r#"{"input":[{"type":"computer_call","id":"cu_1","call_id":"call_9","action":{}}]}"#;
        assert!(
            answered(computer).is_empty(),
            "a screenshot cannot be made up"
        );
    }
}
