//! The reference of every experiment key, made from the spec types themselves (their doc
//! comments, types and defaults, read through `schemars`) and the official flag names
//! ([`crate::spec::ALIASES`]): `mope keys` prints it, and `docs/experiment-keys.md` is it (a test
//! holds the two equal), so it cannot drift from the code.

use serde_json::{Map, Value};

use crate::spec::{ALIASES, ExperimentSpec};

/// The reference as Markdown: one table per section, a row per key.
pub fn reference() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(ExperimentSpec)).expect("a schema is JSON");
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let mut out = String::from(
        "# Experiment keys\n\n\
         Every key of an experiment file (`experiments/<dataset>/<method>/experiment.toml`), by section,\n\
         as `mope keys` prints it from the code. Each can also be given on the command line,\n\
         `--set section.key=value` (TOML values: `--set train.lr=1e-3`,\n\
         `--set prompts.prompted_layers=[0,1,2]`); the official MoPE flag names work in the file and\n\
         in `--set`, in their section or bare (`--set moe_n_experts=2`). Unknown keys and bad values\n\
         are errors naming the file, or the `--set`, and the key. `mope train --dry-run` prints the\n\
         resolved experiment with where each value came from.\n",
    );
    let root = schema["properties"].as_object().cloned().unwrap_or_default();
    let top: Vec<(&String, &Value)> = root.iter().filter(|(_, v)| section_def(v, &defs).is_none()).collect();
    out.push_str("\n## Top level\n\n");
    table(&mut out, "", &top, &Value::Null, &required(&schema), &defs);
    for (section, value) in &root {
        let Some(def) = section_def(value, &defs) else { continue };
        out.push_str(&format!("\n## `[{section}]`\n\n{}\n\n", one_line(value["description"].as_str().or(def["description"].as_str()).unwrap_or(""))));
        let fields: Vec<(&String, &Value)> = def["properties"].as_object().map(|p| p.iter().collect()).unwrap_or_default();
        table(&mut out, section, &fields, &value["default"], &required(def), &defs);
    }
    out
}

/// The definition of a section (a table of keys), if `value` refers to one.
fn section_def<'a>(value: &Value, defs: &'a Map<String, Value>) -> Option<&'a Value> {
    let reference = value["$ref"].as_str().or_else(|| value["anyOf"][0]["$ref"].as_str())?;
    let def = defs.get(reference.trim_start_matches("#/$defs/"))?;
    def["properties"].is_object().then_some(def)
}

/// The keys a table must give.
fn required(def: &Value) -> Vec<String> {
    def["required"].as_array().map(|keys| keys.iter().filter_map(|k| k.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// One table of keys: name, type, default (`required` for those in `required`, `none` for a key
/// that may be left out without a value), official name, meaning.
fn table(out: &mut String, section: &str, fields: &[(&String, &Value)], section_default: &Value, required: &[String], defs: &Map<String, Value>) {
    out.push_str("| key | type | default | official name | meaning |\n|---|---|---|---|---|\n");
    for (name, field) in fields {
        let dotted = if section.is_empty() { name.to_string() } else { format!("{section}.{name}") };
        let default = match (&field["default"], &section_default[name.as_str()]) {
            (Value::Null, Value::Null) if required.contains(name) => "required".to_string(),
            (Value::Null, Value::Null) => "none".to_string(),
            (Value::Null, value) | (value, _) => format!("`{}`", toml_value(value)),
        };
        let aliases: Vec<String> =
            ALIASES.iter().filter(|(_, targets)| targets.contains(&dotted.as_str())).map(|(alias, _)| format!("`{}`", alias.rsplit('.').next().unwrap_or(alias))).collect();
        out.push_str(&format!(
            "| `{name}` | {} | {default} | {} | {} |\n",
            type_of(field, defs),
            aliases.join(", "),
            one_line(field["description"].as_str().unwrap_or("")).replace('|', "\\|")
        ));
    }
}

/// A key's type in words: `integer`, `string`, `one of \`a\`, \`b\``, `array of integer`, ….
fn type_of(field: &Value, defs: &Map<String, Value>) -> String {
    if let Some(reference) = field["$ref"].as_str() {
        return defs.get(reference.trim_start_matches("#/$defs/")).map_or_else(|| "table".into(), |def| type_of(def, defs));
    }
    if let Some(options) = field["anyOf"].as_array() {
        let kinds: Vec<String> = options.iter().filter(|o| o["type"] != "null").map(|o| type_of(o, defs)).collect();
        return kinds.join(" or ");
    }
    let variants = field["oneOf"].as_array().or_else(|| field["enum"].as_array().map(|_| field["enum"].as_array().unwrap()));
    if let Some(variants) = variants {
        let names: Vec<String> = variants
            .iter()
            .map(|v| match v {
                Value::String(s) => format!("`{s}`"),
                v if v["const"].is_string() => format!("`{}`", v["const"].as_str().unwrap_or("")),
                v if v["enum"].is_array() => v["enum"].as_array().unwrap().iter().map(|e| format!("`{}`", e.as_str().unwrap_or(""))).collect::<Vec<_>>().join(", "),
                v => {
                    // A tagged table: its `kind` and the other keys it takes.
                    let properties = v["properties"].as_object().cloned().unwrap_or_default();
                    let kind = properties.get("kind").and_then(|k| k["const"].as_str().or_else(|| k["enum"][0].as_str())).unwrap_or("?").to_string();
                    let rest: Vec<String> = properties.keys().filter(|k| *k != "kind").map(|k| format!(", {k}")).collect();
                    format!("`{{ kind = \"{kind}\"{} }}`", rest.concat())
                }
            })
            .collect();
        return format!("one of {}", names.join(", "));
    }
    match field["type"].as_str() {
        Some("array") => format!("array of {}", type_of(&field["items"], defs)),
        Some("number") => "number".into(),
        Some(kind) => kind.into(),
        None if field["type"].is_array() => field["type"].as_array().unwrap().iter().filter_map(|t| t.as_str()).filter(|t| *t != "null").collect::<Vec<_>>().join(" or "),
        None => "table".into(),
    }
}

/// A JSON value as TOML writes it (strings quoted, tables inline).
fn toml_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("[{}]", items.iter().map(toml_value).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!("{{ {} }}", map.iter().map(|(k, v)| format!("{k} = {}", toml_value(v))).collect::<Vec<_>>().join(", ")),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A doc comment's lines as one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/experiment-keys.md` is the reference the code gives (`mope keys > docs/experiment-keys.md`).
    #[test]
    fn the_documented_reference_is_the_code_s() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/experiment-keys.md")).unwrap_or_default();
        assert!(doc == reference(), "docs/experiment-keys.md is not what `mope keys` prints; write it with `cargo run -p train --bin mope -- keys > docs/experiment-keys.md`");
    }

    /// Every key of every section has a row, with its type, default and official name.
    #[test]
    fn every_key_has_a_row() {
        let reference = reference();
        for row in [
            "| `lr` | number | `0.0004` | `lr_vis` |",
            "| `num_experts` | integer | `4` | `moe_n_experts` |",
            "| `root` | string | required |  |",
            "| `dataset` | one of `jsonl`, `food101`, `mmimdb`, `snli-ve`, `mustard`, `nyudv2`, `sunrgbd`, `image-folder` | required |",
            "| `max_text_tokens` | integer | `0` |",
            "| `schedule` | one of `{ kind = \"constant\" }`",
            "| `head` | string | none |",
        ] {
            assert!(reference.contains(row), "no `{row}` in:\n{reference}");
        }
        let value = toml::Value::try_from(crate::spec::ExperimentSpec::parse(
            "[data]\ndataset = \"jsonl\"\nroot = \"d\"\n[model]\nmethod = \"mope\"\nmain = \"a\"\ncomplementary = \"b\"\n",
            std::path::Path::new("x.toml"),
            &[],
        )
        .unwrap())
        .unwrap();
        for (section, keys) in value.as_table().unwrap() {
            for key in keys.as_table().map(|t| t.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                assert!(reference.contains(&format!("| `{key}` |")), "{section}.{key} has no row");
            }
        }
    }
}
