//! Helpers shared by the integration test binaries: the committed known-answer vector files.

use serde_json::Value;

/// The committed vector file `vectors/<name>`, parsed.
pub fn load_vectors(name: &str) -> Value {
    let path = vectors_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is committed: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Asserts that `generated` equals the committed `vectors/<name>`. With `SOTTO_REGENERATE_VECTORS`
/// set, first rewrites the file (write then rename, so tests reading it in parallel never see half).
pub fn check_committed_vectors(name: &str, generated: &Value) {
    if std::env::var_os("SOTTO_REGENERATE_VECTORS").is_some() {
        let path = vectors_path(name);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_string_pretty(generated).unwrap() + "\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    assert_eq!(
        *generated,
        load_vectors(name),
        "regenerate with SOTTO_REGENERATE_VECTORS=1 if intended"
    );
}

fn vectors_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name)
}
