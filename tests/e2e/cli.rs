//! The `sotto` binary: `sotto demo` against the real relay exits 0; errors are clear.

use sotto_e2e::{Db, Relay};

fn sotto_bin() -> std::path::PathBuf {
    sotto_e2e::server_bin().with_file_name("sotto")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_every_step_against_the_relay() {
    let bin = sotto_bin();
    assert!(
        bin.exists(),
        "build it first: cargo build -p sotto-cli ({})",
        bin.display()
    );
    let relay = Relay::start(Db::Sqlite).await.unwrap();
    let out = tokio::process::Command::new(&bin)
        .args(["demo", "--server", &relay.url])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("relay stored: seq"));
    assert!(stdout.contains("every step above worked"));
    relay.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_never_a_panic() {
    let bin = sotto_bin();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(&bin)
            .args(args)
            .env("SOTTO_PROFILE", dir.path().join("p"))
            .env("SOTTO_PASSPHRASE", "x")
            .output()
            .unwrap()
    };
    let down = run(&[
        "login",
        "--server",
        "http://127.0.0.1:9",
        "--username",
        "someone",
        "--password",
        "pw",
    ]);
    assert!(!down.status.success());
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(err.contains("cannot be reached"), "{err}");
    assert!(!err.contains("panicked"));
    let none = run(&["whoami"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("no profile"));
    let help = run(&["demo", "--help"]);
    assert!(help.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_addressed_by_username() {
    let bin = sotto_bin();
    let relay = Relay::start(Db::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |profile: &str, args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(["--profile", &dir.path().join(profile).display().to_string()])
            .args(["--passphrase", "cli test passphrase"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for name in ["Ana_cli", "ben_cli"] {
        let (ok, out, err) = run(
            name,
            &[
                "register",
                "--server",
                &relay.url,
                "--username",
                name,
                "--email",
                &format!("{name}@example.com"),
                "--password",
                "a good password",
            ],
        );
        assert!(ok, "{out}{err}");
    }
    // Any case of the username finds the account.
    let (ok, out, err) = run("Ana_cli", &["send", "BEN_CLI", "hello by name"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run("ben_cli", &["history", "ana_cli"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("hello by name"), "{out}");
    // An unknown name: a clear error, nothing sent.
    let (ok, _, err) = run("Ana_cli", &["send", "nobody_cli", "lost"]);
    assert!(!ok);
    assert!(err.contains("no user is called"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    relay.finish().await;
}
