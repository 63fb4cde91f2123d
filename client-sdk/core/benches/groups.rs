//! What a group send costs the sending device's core (no relay round trip, no store commit):
//! the first message to a new 100-member group (roster announcement, sender-key distribution over
//! 99 1:1 sessions, then the one Sender-Key ciphertext), with and without existing sessions, and
//! the steady state. Run: `cargo bench -p sotto-client-core --bench groups`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::expect_used
)]

#[path = "../tests/protocol/net.rs"]
mod net;
#[path = "../tests/protocol/relay.rs"]
mod relay;

use std::time::{Duration, Instant};

use net::Net;
use sotto_client_core::{RelayAnswer, RelayCall};

/// Performs node `i`'s requests against the in-memory relay until none are left; returns how many.
fn drain(net: &mut Net, i: usize) -> usize {
    let mut count = 0;
    loop {
        let mut any = false;
        while let Some(req) = net.nodes[i].client.poll_request() {
            any = true;
            count += 1;
            let from = (net.nodes[i].user.clone(), net.nodes[i].device);
            let answer = match &req.call {
                RelayCall::Ephemeral(_) => Ok(RelayAnswer::NoContent),
                call => net.relay.handle((&from.0, from.1), call),
            };
            let now = net.now;
            net.nodes[i].client.handle_response(now, req.id, answer);
        }
        let _ = net.nodes[i].client.take_writes();
        let _ = net.nodes[i].client.take_acks();
        while net.nodes[i].client.poll_event().is_some() {}
        if !any {
            return count;
        }
    }
}

fn first_message(
    net: &mut Net,
    alice: usize,
    group: &str,
    members: &[String],
) -> (Duration, usize) {
    net.relay.groups.insert(
        group.to_owned(),
        members
            .iter()
            .cloned()
            .chain(std::iter::once("alice".to_owned()))
            .collect(),
    );
    let now = net.now;
    let t = Instant::now();
    net.nodes[alice]
        .client
        .group_created(now, group, members, "Bench")
        .unwrap();
    net.nodes[alice]
        .client
        .send_group_text(now, group, "first")
        .unwrap();
    let requests = drain(net, alice);
    (t.elapsed(), requests)
}

fn main() {
    let size = 100;
    let mut net = Net::new(7);
    let alice = net.user("alice");
    let members: Vec<String> = (1..size).map(|i| format!("member{i:03}")).collect();
    for m in &members {
        net.user(m);
    }
    let (cold, cold_requests) = first_message(&mut net, alice, "bench-group-1", &members);
    let (warm, warm_requests) = first_message(&mut net, alice, "bench-group-2", &members);

    let n = 2_000u32;
    let text = "x".repeat(100);
    let mut sent = 0;
    let t = Instant::now();
    for _ in 0..n {
        let now = net.now;
        net.nodes[alice]
            .client
            .send_group_text(now, "bench-group-2", &text)
            .unwrap();
        while let Some(req) = net.nodes[alice].client.poll_request() {
            assert!(matches!(req.call, RelayCall::SendGroup { .. }));
            let answer = Ok(RelayAnswer::Sent(sotto_wire::SendMessageResponse {
                server_message_id: "s".into(),
                server_timestamp: now,
                duplicate: false,
            }));
            net.nodes[alice].client.handle_response(now, req.id, answer);
            sent += 1;
        }
        let _ = net.nodes[alice].client.take_writes();
        while net.nodes[alice].client.poll_event().is_some() {}
    }
    let steady = t.elapsed();
    assert_eq!(sent, n);
    println!(
        "group of {size} members, the sender's core only (no relay round trip, no store commit):"
    );
    println!(
        "  first message to a new group, no sessions yet:    {:>8.2} ms ({cold_requests} relay calls: bundles, 1:1 roster + key, 1 group send)",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "  first message to a new group, sessions existing: {:>8.2} ms ({warm_requests} relay calls)",
        warm.as_secs_f64() * 1e3
    );
    println!(
        "  steady state: {:.1} µs per message ({n} messages, 100-character text)",
        steady.as_secs_f64() * 1e6 / f64::from(n)
    );
}
