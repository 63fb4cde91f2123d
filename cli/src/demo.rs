//! `sotto demo`: two users, one with two devices, against a real relay. Every step is checked;
//! the process exits 0 only if all of them worked.

use std::time::Duration;

use base64::Engine as _;
use rand::Rng as _;
use sotto_client::{
    ClientEvent, ClientOptions, ConversationId, Event, IdentityPolicy, SottoClient, StoreLocation,
    StoreSecret,
};

use crate::CliError;

struct Profile {
    name: String,
    options: ClientOptions,
    client: SottoClient,
}

fn options(server: &str, dir: &std::path::Path, name: &str) -> ClientOptions {
    let mut key = [0u8; 32];
    rand::thread_rng().fill(&mut key);
    ClientOptions {
        server_url: server.to_owned(),
        store: StoreLocation::Sqlite(dir.join(format!("{name}.sqlite"))),
        store_secret: StoreSecret::Key(key),
        identity_policy: IdentityPolicy::RequireApproval,
    }
}

fn step(n: &mut u32, what: &str) {
    *n += 1;
    println!("\n[{n}] {what}");
}

/// Waits for an incoming (or, with `outgoing`, a synced own) message with this text.
async fn expect_text(p: &Profile, text: &str, outgoing: bool) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, p.client.next_event()).await {
            Ok(Some(ClientEvent::Event(Event::Message(m))))
                if m.text.as_deref() == Some(text) && m.outgoing == outgoing =>
            {
                println!(
                    "    {} read: {:?}{}",
                    p.name,
                    text,
                    if outgoing {
                        " (its own sent message, synced)"
                    } else {
                        ""
                    }
                );
                return Ok(());
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("{}: client stopped", p.name).into()),
            Err(_) => return Err(format!("{} did not receive {text:?} within 30 s", p.name).into()),
        }
    }
}

fn show_stored(queue: &[(u64, String, Vec<u8>)], plaintext: &str) -> Result<(), CliError> {
    if queue.is_empty() {
        return Err("the relay held nothing for the offline device".into());
    }
    for (seq, kind, content) in queue {
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        println!(
            "    relay stored: seq {seq} {kind} {} bytes: {}…",
            content.len(),
            b64.get(..48).unwrap_or(&b64)
        );
        if content
            .windows(plaintext.len().max(1))
            .any(|w| w == plaintext.as_bytes())
        {
            return Err("the relay holds the plaintext!".into());
        }
    }
    Ok(())
}

pub(crate) async fn run(server: &str) -> Result<(), CliError> {
    let dir = tempfile::Builder::new()
        .prefix("sotto-demo-")
        .tempdir()
        .map_err(|e| CliError(format!("temporary directory: {e}")))?;
    let tag: u32 = rand::thread_rng().gen_range(1000..9999);
    let mut n = 0;

    step(&mut n, "register alice and bob, log in their first devices");
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let username = format!("{name}_{tag}");
        let password = format!("demo-{tag}-{name}-password");
        SottoClient::register(
            server,
            &username,
            &format!("{username}@example.com"),
            &password,
        )
        .await?;
        let options = options(server, dir.path(), name);
        let client = SottoClient::login(options.clone(), &username, &password).await?;
        println!("    {username}: user id {}", client.user_id());
        users.push(Profile {
            name: name.to_owned(),
            options,
            client,
        });
    }
    let (Some(bob), Some(alice)) = (users.pop(), users.pop()) else {
        return Err("internal: two users".into());
    };

    step(
        &mut n,
        "link bob's laptop as his second device (identity sent end to end)",
    );
    let pending = SottoClient::begin_link(server).await?;
    let code = pending.code();
    let laptop_options = options(server, dir.path(), "bob-laptop");
    let finishing = tokio::spawn(SottoClient::finish_link(
        pending,
        laptop_options.clone(),
        60,
    ));
    bob.client.link_device(&code).await?;
    let laptop = finishing.await.map_err(|e| CliError(e.to_string()))??;
    let laptop = Profile {
        name: "bob's laptop".into(),
        options: laptop_options,
        client: laptop,
    };
    println!(
        "    bob now has devices {:?}",
        bob.client
            .devices()
            .await?
            .iter()
            .map(|d| d.device_id)
            .collect::<Vec<_>>()
    );

    step(&mut n, "alice → bob, 1:1 (one ciphertext per bob device)");
    let (a, b) = (alice.client.user_id(), bob.client.user_id());
    let first = format!("Hi Bob! Lunch at noon? ({tag})");
    // The laptop is offline: what the relay keeps for it is shown below.
    laptop.client.close().await;
    alice.client.send_text(&b, &first).await?;
    expect_text(&bob, &first, false).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queue = laptop.client.relay_queue().await?;
    show_stored(&queue, &first)?;
    let laptop_client = SottoClient::open(laptop.options.clone()).await?;
    let laptop = Profile {
        client: laptop_client,
        ..laptop
    };
    expect_text(&laptop, &first, false).await?;

    step(
        &mut n,
        "bob answers from his laptop; alice reads it, bob's phone sees it as sent",
    );
    let reply = format!("Noon works, see you there ({tag})");
    laptop.client.send_text(&a, &reply).await?;
    expect_text(&alice, &reply, false).await?;
    expect_text(&bob, &reply, true).await?;

    step(
        &mut n,
        "receipts: bob reads on his phone; alice gets the encrypted read receipt",
    );
    bob.client
        .mark_read(&ConversationId::Direct(a.clone()))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, alice.client.next_event()).await {
            Ok(Some(ClientEvent::Event(Event::Read { user_id, .. }))) if user_id == b => {
                println!("    alice sees: read by bob");
                break;
            }
            Ok(Some(_)) => {}
            _ => return Err("alice got no read receipt within 30 s".into()),
        }
    }

    step(&mut n, "history and safety numbers");
    let page = alice
        .client
        .history(&ConversationId::Direct(b.clone()), None, 10)
        .await?;
    for m in page.messages.iter().rev() {
        println!(
            "    alice's history: {}: {:?} [{:?}]",
            if m.outgoing { "alice" } else { "bob" },
            m.text.as_deref().unwrap_or(""),
            m.status
        );
    }
    let sa = alice
        .client
        .safety_number(&b)
        .map_err(|e| CliError(e.to_string()))?;
    let sb = bob
        .client
        .safety_number(&a)
        .map_err(|e| CliError(e.to_string()))?;
    println!("    alice's safety number with bob: {}", sa.display);
    if sa.display != sb.display {
        return Err("safety numbers differ".into());
    }
    println!("    bob computes the same number");

    step(
        &mut n,
        "a group: alice creates it with bob, the roster and name travel end to end",
    );
    let group = alice
        .client
        .create_group(std::slice::from_ref(&b), &format!("Lunch club {tag}"))
        .await?;
    println!("    the relay knows group {group} (its name never reaches the relay)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while bob.client.group(&group).is_none() || laptop.client.group(&group).is_none() {
        if tokio::time::Instant::now() > deadline {
            return Err("bob's devices never got the group's roster".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "    bob's phone and laptop hold the roster: {:?}",
        bob.client.group(&group).map(|g| g.name)
    );
    step(
        &mut n,
        "group messages: one Sender-Key ciphertext each, read on every device",
    );
    let g1 = format!("Sushi on Friday? ({tag})");
    alice.client.send_group_text(&group, &g1).await?;
    expect_text(&bob, &g1, false).await?;
    expect_text(&laptop, &g1, false).await?;
    let g2 = format!("Friday it is ({tag})");
    laptop.client.send_group_text(&group, &g2).await?;
    expect_text(&alice, &g2, false).await?;
    expect_text(&bob, &g2, true).await?;

    for p in [&alice, &bob, &laptop] {
        p.client.close().await;
    }
    println!("\ndemo: every step above worked");
    Ok(())
}
