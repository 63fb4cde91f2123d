//! The generated OpenAPI document: well-formed OpenAPI 3.1, complete for every route, and the
//! one the relay serves.

use std::collections::{BTreeSet, HashSet};

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::both;
use crate::common::{openapi, Backend, TestApp};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or(""));
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn templated(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn document_is_well_formed_openapi_3_1() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(doc["info"]["version"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");

    let mut operation_ids = HashSet::new();
    let paths = doc["paths"].as_object().unwrap();
    // One operation per handler the router registers (`routes!(a, b)` in `openapi::routes`).
    let operations: usize = paths.values().map(|i| i.as_object().unwrap().len()).sum();
    assert_eq!(
        operations,
        routed_handlers().len(),
        "operations in the document"
    );
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        let item = item.as_object().unwrap();
        for (method, op) in item {
            assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
            let what = format!("{method} {path}");
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{what}: no operationId");
            assert!(
                operation_ids.insert(id.to_owned()),
                "{what}: operationId {id} twice"
            );
            // Path parameters: exactly the template's, each required.
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{what}: {p}");
                    p["name"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(in_path, templated(path), "{what}: path parameters");
            for p in &params {
                assert!(
                    ["path", "query", "header", "cookie"].contains(&p["in"].as_str().unwrap()),
                    "{what}: {p}"
                );
                assert!(p["schema"].is_object(), "{what}: parameter without schema");
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{what}: no responses");
            assert!(
                responses
                    .keys()
                    .any(|s| s.starts_with('1') || s.starts_with('2')),
                "{what}: no success answer"
            );
            for (status, resp) in responses {
                let code: u16 = status.parse().unwrap_or(0);
                assert!((100..600).contains(&code), "{what}: status {status}");
                assert!(
                    resp["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{what} {status}: no description"
                );
                if code >= 400 {
                    assert!(
                        resp["content"]["application/json"]["schema"].is_object(),
                        "{what} {status}: an error answer without its JSON body"
                    );
                }
                if code == 429 {
                    assert!(
                        resp["headers"]["Retry-After"]["schema"].is_object(),
                        "{what}: 429 without Retry-After"
                    );
                }
            }
            // What the extractors answer.
            let declares = |s: &str| responses.contains_key(s);
            if op["requestBody"]["content"]["application/json"].is_object() {
                assert_eq!(op["requestBody"]["required"], true, "{what}");
                for s in ["400", "408", "413", "415", "422"] {
                    assert!(declares(s), "{what}: a JSON body but no {s}");
                }
            }
            if !in_path.is_empty() {
                assert!(declares("400"), "{what}: path parameters but no 400");
            }
            if let Some(security) = op["security"].as_array() {
                for requirement in security {
                    for scheme in requirement.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(scheme), "{what}: scheme {scheme}");
                    }
                }
                assert!(declares("401"), "{what}: authenticated but no 401");
            }
        }
    }
    // Every reference resolves.
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("reference {r} outside components/schemas"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "unresolved reference {r}"
        );
    }
}

/// The handlers `openapi::routes` registers, read from its source.
fn routed_handlers() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/openapi.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for chunk in text.split("routes!(").skip(1) {
        let inner = chunk.split(')').next().unwrap();
        out.extend(
            inner
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned),
        );
    }
    assert!(out.len() > 40, "{out:?}");
    out
}

/// Every route the router serves goes through the generated document: no source file registers
/// a route except through `utoipa_axum::routes!`.
#[test]
fn no_route_bypasses_the_document() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for needle in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            ".merge(",
        ] {
            assert!(
                !text.contains(needle),
                "{} registers a route with `{needle}`, outside the OpenAPI document",
                f.display()
            );
        }
    }
}

/// The relay serves the generated document, and routes every operation in it.
async fn served_document_is_the_generated_one(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let (s, doc) = t.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&doc, openapi());
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{user_id}", &alice.user_id)
            .replace("{device_id}", "1")
            .replace("{seq}", "1")
            .replace(['{', '}'], "x");
        for method in ops.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (s, v) = t.call(m, &concrete, Some(&alice.token), None).await;
            assert!(
                !(s == StatusCode::NOT_FOUND && v["code"] == "not_found")
                    && s != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
        }
    }
    t.finish().await;
}
both!(served_document_is_the_generated_one);

#[test]
#[ignore = "prints the document"]
fn print_document() {
    println!("{}", serde_json::to_string_pretty(openapi()).unwrap());
}
