//! Every command answers `--help`; bad usage is an error message, not a panic. (Also makes
//! `cargo test --workspace` build the `sotto` binary the end-to-end tests run.)

#[test]
fn every_command_has_help() {
    let bin = env!("CARGO_BIN_EXE_sotto");
    for cmd in [
        vec!["--help"],
        vec!["register", "--help"],
        vec!["login", "--help"],
        vec!["link", "--help"],
        vec!["link-device", "--help"],
        vec!["devices", "--help"],
        vec!["send", "--help"],
        vec!["chat", "--help"],
        vec!["history", "--help"],
        vec!["conversations", "--help"],
        vec!["safety-number", "--help"],
        vec!["approve", "--help"],
        vec!["demo", "--help"],
    ] {
        let out = std::process::Command::new(bin).args(&cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd:?}"
        );
    }
    let bad = std::process::Command::new(bin)
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("panicked"));
}
