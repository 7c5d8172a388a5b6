//! The JSON Schema of the config, `docs/authproxy.schema.json`: the
//! schema the raw config structs make ([`authproxy::config::json_schema`])
//! with each key's description taken from the README's "Config reference"
//! table. This test makes it again and fails if the committed file
//! differs, so a key added to `src/config/raw.rs` (or a changed row of the
//! table) cannot be missing from it; and it fails if a key has no row in
//! the table. After changing either:
//!
//!     UPDATE_SCHEMA=1 cargo test --test schema
//!
//! and commit the file. (CI also validates the shipped configs against
//! it: `.ci/validate-deploy.sh`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Splits a Markdown table row into its cells; `|` inside backticks is
/// text.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut code = false;
    for c in row.trim().trim_matches('|').chars() {
        match c {
            '`' => {
                code = !code;
                out.last_mut().unwrap().push(c);
            }
            '|' if !code => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// Markdown to plain text: no backticks, emphasis or link targets.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    // `[text](target)` → text
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace('`', "").replace("*", "")
}

/// Key path (`server.listen`, `providers.<name>.header`, `routes[].prefix`)
/// → description, from the README's "Config reference" table.
fn readme_descriptions() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = readme
        .split("\n## Config reference")
        .nth(1)
        .expect("README has a \"## Config reference\" section");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let c = cells(row);
        assert_eq!(
            c.len(),
            3,
            "README config row with other than 3 cells: {row}"
        );
        let default = plain(&c[1]);
        let mut description = plain(&c[2]);
        if default != "–" && default != "-" {
            description.push_str(&format!(" (default: {default})"));
        }
        // "`a.b.c` / `d`": d is a sibling of c.
        let mut keys = c[0].split(" / ").map(plain);
        let first = keys.next().unwrap();
        let parent = first.rsplit_once('.').map(|(p, _)| p.to_string());
        out.insert(first.clone(), description.clone());
        for sibling in keys {
            let parent = parent
                .as_deref()
                .expect("a sibling key needs a dotted first key");
            out.insert(format!("{parent}.{sibling}"), description.clone());
        }
    }
    out
}

/// Follows `$ref` within the schema.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => root
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => schema,
    }
}

/// Every key path of the schema, in the README's notation, with the JSON
/// pointer of its schema.
fn key_paths(
    root: &Value,
    schema: &Value,
    prefix: &str,
    pointer: &str,
    out: &mut Vec<(String, String)>,
) {
    let schema_here = resolve(root, schema);
    let pointer_here = match schema["$ref"].as_str() {
        Some(r) => r.trim_start_matches('#').to_string(),
        None => pointer.to_string(),
    };
    let Some(props) = schema_here["properties"].as_object() else {
        return;
    };
    for (name, sub) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let sub_pointer = format!("{pointer_here}/properties/{name}");
        let sub_schema = resolve(root, sub);
        if sub_schema["properties"].is_object() {
            key_paths(root, sub, &path, &sub_pointer, out);
        } else if let Some(items) = sub_schema
            .get("items")
            .filter(|i| resolve(root, i)["properties"].is_object())
        {
            key_paths(
                root,
                items,
                &format!("{path}[]"),
                &format!("{sub_pointer}/items"),
                out,
            );
        } else if let Some(values) = sub_schema
            .get("additionalProperties")
            .filter(|v| resolve(root, v)["properties"].is_object())
        {
            key_paths(
                root,
                values,
                &format!("{path}.<name>"),
                &format!("{sub_pointer}/additionalProperties"),
                out,
            );
        } else {
            out.push((path, sub_pointer));
        }
    }
}

/// What users should see beside each table of the file.
const SECTIONS: &[(&str, &str)] = &[
    ("/properties/server", "The proxy's own listener and limits. Changes take effect at the next start, not on reload."),
    ("/properties/store", "Where tokens are kept between restarts: a file (default), memory, or Redis shared by replicas."),
    ("/properties/providers", "Credentials by provider name: type = \"static\" (fixed headers) or \"oauth2\" (tokens obtained and kept fresh)."),
    ("/properties/routes", "Which upstream a path prefix goes to, and with which provider's credential (longest prefix wins)."),
    ("/properties/forward_proxy", "Forward-proxy mode: CONNECT and absolute-form requests for apps that can only be given HTTPS_PROXY, served by host routes (routes[].host) with a local CA."),
];

fn documented_schema() -> (String, Vec<String>) {
    let mut schema = authproxy::config::json_schema();
    let descriptions = readme_descriptions();
    let mut paths = Vec::new();
    key_paths(&schema.clone(), &schema.clone(), "", "", &mut paths);
    let mut undocumented = Vec::new();
    for (path, pointer) in paths {
        match descriptions.get(&path) {
            Some(d) => {
                schema.pointer_mut(&pointer).unwrap()["description"] = json!(d);
            }
            None => undocumented.push(path),
        }
    }
    for (pointer, d) in SECTIONS {
        let at = schema.pointer_mut(pointer).unwrap();
        // Draft 7 ignores the siblings of a `$ref`: wrap it.
        if let Some(r) = at.as_object_mut().unwrap().remove("$ref") {
            at["allOf"] = json!([{ "$ref": r }]);
        }
        at["description"] = json!(d);
    }
    let mut text = serde_json::to_string_pretty(&schema).unwrap();
    text.push('\n');
    (text, undocumented)
}

#[test]
fn committed_schema_is_the_generated_one() {
    let (want, undocumented) = documented_schema();
    assert!(
        undocumented.is_empty(),
        "config keys without a row in README.md's \"Config reference\" table: {undocumented:?}; \
         add one (key, default, meaning), then UPDATE_SCHEMA=1 cargo test --test schema"
    );
    let path = repo("docs/authproxy.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is not what the config structs and the README make (a key added, removed or changed \
         in src/config/raw.rs, or a row of the README's config table?). Regenerate it with\n\n    \
         UPDATE_SCHEMA=1 cargo test --test schema\n\nand commit it.",
        path.display()
    );
}

/// The schema's own sanity: every table rejects unknown keys (as the
/// loader does), and the README rows all name real keys.
#[test]
fn schema_rejects_unknown_keys_and_readme_names_real_keys() {
    let schema = authproxy::config::json_schema();
    let mut paths = Vec::new();
    key_paths(&schema, &schema, "", "", &mut paths);
    let known: Vec<&str> = paths.iter().map(|(p, _)| p.as_str()).collect();
    for key in readme_descriptions().keys() {
        assert!(
            known.contains(&key.as_str()),
            "README documents `{key}`, which is no config key"
        );
    }
    for def in schema["definitions"].as_object().unwrap().values() {
        assert_eq!(def["additionalProperties"], json!(false), "{def}");
    }
    assert_eq!(schema["additionalProperties"], json!(false));
    assert!(known.contains(&"server.watch_config"), "{known:?}");
    assert!(known.contains(&"routes[].prefix"), "{known:?}");
    assert!(known.contains(&"providers.<name>.token_url"), "{known:?}");
}
