//! The JSON Schema of the config, as committed in `config.schema.json`: what the
//! filter crate derives from its serde types (`schema` feature), tidied for editors.

use serde_json::Value;

/// The schema text: pretty JSON and a final newline, exactly the committed file.
pub fn text() -> String {
    let mut schema = canary_router::config::json_schema().to_value();
    tidy(&mut schema);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Doc comments are wrapped at 90 columns: join their lines into one paragraph.
/// Rust's number types add formats such as `double` and `uint32` that JSON Schema
/// does not define and editors flag: drop them (the ranges say what matters).
fn tidy(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(description)) = map.get_mut("description") {
                *description = description
                    .split("\n\n")
                    .map(|paragraph| {
                        paragraph
                            .split('\n')
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n");
            }
            let numeric_format = matches!(
                map.get("format").and_then(Value::as_str),
                Some(
                    "double"
                        | "float"
                        | "int8"
                        | "int16"
                        | "int32"
                        | "int64"
                        | "uint8"
                        | "uint16"
                        | "uint32"
                        | "uint64"
                )
            );
            if numeric_format {
                map.remove("format");
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}
