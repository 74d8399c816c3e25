//! Reading the one upstream error rethread acts on: a missing reasoning item (E1).

use serde::Deserialize;

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    message: String,
}

/// The item and reasoning ids named by
/// `Item '<id>' of type '<type>' was provided without its required 'reasoning' item: '<rs>'.`
pub fn missing_reasoning(body: &[u8]) -> Option<(String, String)> {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()?
        .error
        .message;
    let rest = message.strip_prefix("Item '")?;
    let (item, rest) = rest.split_once("' of type '")?;
    let (_, rest) = rest.split_once("' was provided without its required 'reasoning' item: '")?;
    let reasoning = rest
        .strip_suffix("'.")
        .or_else(|| rest.strip_suffix('\''))?;
    Some((item.to_owned(), reasoning.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_reasoning_error_is_read() {
        let body = br#"{"error":{"message":"Item 'ig_1' of type 'image_generation_call' was provided without its required 'reasoning' item: 'rs_1'.","type":"invalid_request_error","param":"input","code":null}}"#;
        assert_eq!(
            missing_reasoning(body),
            Some(("ig_1".into(), "rs_1".into()))
        );
    }

    #[test]
    fn other_errors_are_not() {
        for body in [
            &br#"{"error":{"message":"Item 'rs_1' of type 'reasoning' was provided without its required following item."}}"#[..],
            br#"{"error":{"message":"No tool output found for function call call_1."}}"#,
            b"not json",
        ] {
            assert_eq!(missing_reasoning(body), None);
        }
    }
}
