//! The JSON Schema of the config file, made from the raw structs
//! ([`super::raw`]) so that it follows every key added there. Shipped as
//! `docs/authproxy.schema.json` (with the README's descriptions of the
//! keys added; `tests/schema.rs` makes it and keeps it up to date) for
//! editors: completion and type checks of keys as you type.
//!
//! Draft 7, the version TOML and YAML editors (Taplo, Even Better TOML,
//! the YAML language server) support best. It knows the keys and their
//! types, not which keys a provider's `type` and `grant` allow, nor the
//! syntax of durations and sizes: `authproxy check` says that.

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::raw::RawConfig;

/// The schema of the config file.
pub fn json_schema() -> Value {
    let mut schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawConfig>()
        .to_value();
    // Every raw key is an `Option`, which the schema allows to be `null`;
    // TOML has no null: a key is set or left out.
    drop_null(&mut schema);
    // The structs' doc comments are for the code's readers.
    remove_key(&mut schema, "description");
    if let Some(o) = schema.as_object_mut() {
        o.insert("title".into(), "authproxy config".into());
        o.insert(
            "description".into(),
            "The config file of authproxy, a credential-injecting local reverse proxy. Any string may use ${NAME} (an environment variable) and ${file:PATH} (a file's content). `authproxy check` checks what this schema cannot.".into(),
        );
    }
    schema
}

fn drop_null(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(types)) = o.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    o.insert("type".into(), only);
                }
            }
            o.values_mut().for_each(drop_null);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// Removes `key` from every schema object (not from `properties`, where
/// it would be a config key's name).
fn remove_key(v: &mut Value, key: &str) {
    match v {
        Value::Object(o) => {
            o.remove(key);
            for (k, child) in o.iter_mut() {
                if k == "properties" || k == "definitions" {
                    if let Value::Object(props) = child {
                        props.values_mut().for_each(|p| remove_key(p, key));
                    }
                } else {
                    remove_key(child, key);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| remove_key(x, key)),
        _ => {}
    }
}
