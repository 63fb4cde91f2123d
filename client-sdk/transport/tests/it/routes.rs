//! The remaining routes, each called once against the relay: groups, presence, typing, linking,
//! devices.

use std::time::{SystemTime, UNIX_EPOCH};

use sotto_transport::{Connection, ConnectionConfig};
use sotto_wire as wire;
use sotto_wire::ServerFrame;

use crate::common::{device, Relay};
use crate::messaging::next_frame;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn groups() {
    // Adds take effect at once (no invitation step): this test is about the calls, not consent.
    let relay = Relay::start_with(&["--open-group-adds"]).await;
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;
    let carol = device(&relay, "carol").await;

    let created = alice
        .client
        .create_group(&wire::CreateGroupRequest {
            members: vec![bob.user_id.clone()],
            metadata: wire::Base64(b"sealed name".to_vec()),
        })
        .await
        .unwrap();
    let list = alice.client.groups().await.unwrap();
    assert_eq!(list.groups.len(), 1);
    assert_eq!(list.groups[0].group_id, created.group_id);
    let members = alice.client.group_members(&created.group_id).await.unwrap();
    assert_eq!(members.members.len(), 2);

    let invite = alice
        .client
        .create_group_invite(&created.group_id)
        .await
        .unwrap();
    let joined = carol
        .client
        .join_group(
            &created.group_id,
            &wire::JoinGroupRequest {
                user_ids: None,
                invite_token: Some(invite.token.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(joined.members.len(), 3);
    alice
        .client
        .revoke_group_invite(&created.group_id, &invite.invite_id)
        .await
        .unwrap();

    alice
        .client
        .set_group_role(
            &created.group_id,
            &bob.user_id,
            &wire::SetRoleRequest {
                role: wire::GroupRole::Admin,
            },
        )
        .await
        .unwrap();
    let sent = bob
        .client
        .send_group(
            &created.group_id,
            &wire::GroupSendRequest {
                client_message_id: "g-1".into(),
                content: wire::Base64(b"sender key ciphertext".to_vec()),
                messages: vec![],
            },
        )
        .await
        .unwrap();
    assert!(!sent.duplicate);
    bob.client
        .remove_group_member(&created.group_id, &carol.user_id)
        .await
        .unwrap();
    bob.client.leave_group(&created.group_id).await.unwrap();
    let err = bob
        .client
        .group_members(&created.group_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unknown_group"));
    // Alice's mailbox holds the group events and Bob's message.
    let page = alice.client.fetch_envelopes(None, Some(100)).await.unwrap();
    assert!(page
        .envelopes
        .iter()
        .any(|e| e.kind == wire::EnvelopeKind::GroupMessage));
}

/// Reads frames until the relay says the queued backlog is delivered.
async fn drain_backlog(conn: &mut Connection) {
    for _ in 0..16 {
        if next_frame(conn).await == ServerFrame::QueueEmpty {
            return;
        }
    }
    panic!("no QueueEmpty after 16 frames");
}

#[tokio::test]
async fn presence_and_typing() {
    // Presence is shown to contacts and co-members only: alice and bob share a group.
    let relay = Relay::start_with(&["--open-group-adds"]).await;
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;
    alice
        .client
        .create_group(&wire::CreateGroupRequest {
            members: vec![bob.user_id.clone()],
            metadata: wire::Base64(b"sealed name".to_vec()),
        })
        .await
        .unwrap();
    let status = alice.client.status(&bob.user_id).await.unwrap();
    assert_eq!(status.status, wire::PresenceStatus::Offline);
    let err = bob
        .client
        .set_presence(&wire::SetPresenceRequest {
            status: wire::PresenceStatus::Away,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_connected"));

    // The group's creation queued a membership event: read past the backlog.
    let mut bob_ws = Connection::open(&bob.client, ConnectionConfig::default());
    drain_backlog(&mut bob_ws).await;
    let mut alice_ws = Connection::open(&alice.client, ConnectionConfig::default());
    drain_backlog(&mut alice_ws).await;
    let snapshot = alice
        .client
        .subscribe_presence(&wire::PresenceSubscriptions {
            user_ids: vec![bob.user_id.clone()],
        })
        .await
        .unwrap();
    assert_eq!(snapshot.statuses[0].status, wire::PresenceStatus::Online);
    bob.client
        .set_presence(&wire::SetPresenceRequest {
            status: wire::PresenceStatus::Away,
        })
        .await
        .unwrap();
    // Pushes of bob's earlier "online" may still be on their way (co-member and subscriber).
    let mut away = false;
    for _ in 0..4 {
        match next_frame(&mut alice_ws).await {
            ServerFrame::Presence(s) if s.status == wire::PresenceStatus::Away => {
                away = true;
                break;
            }
            ServerFrame::Presence(s) => assert_eq!(s.status, wire::PresenceStatus::Online),
            other => panic!("expected presence, got {other:?}"),
        }
    }
    assert!(away, "alice never saw bob go away");

    alice
        .client
        .ephemeral(&wire::EphemeralRequest {
            recipient_id: Some(bob.user_id.clone()),
            group_id: None,
            timestamp: now_ms(),
            messages: vec![wire::EphemeralMessage {
                device_id: bob.device_id,
                content: wire::Base64(b"typing".to_vec()),
            }],
            content: None,
        })
        .await
        .unwrap();
    // Bob may first hear of alice coming online (they share a group).
    let mut frame = next_frame(&mut bob_ws).await;
    for _ in 0..4 {
        if !matches!(frame, ServerFrame::Presence(_)) {
            break;
        }
        frame = next_frame(&mut bob_ws).await;
    }
    match frame {
        ServerFrame::Ephemeral(e) => assert_eq!(e.content.as_bytes(), b"typing"),
        other => panic!("expected ephemeral, got {other:?}"),
    }
}

#[tokio::test]
async fn linking_a_device() {
    let relay = Relay::start().await;
    let alice = device(&relay, "alice").await;
    let new_device = relay.client();
    let channel = new_device.create_provisioning().await.unwrap();
    assert_eq!(
        new_device
            .get_provisioning(&channel.address, 0)
            .await
            .unwrap(),
        None
    );
    let code = alice.client.create_linking_code().await.unwrap();
    alice
        .client
        .put_provisioning(
            &channel.address,
            &wire::ProvisioningMessage {
                message: wire::Base64(b"sealed for the new device".to_vec()),
            },
        )
        .await
        .unwrap();
    let message = new_device
        .get_provisioning(&channel.address, 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.message.as_bytes(), b"sealed for the new device");
    let linked = new_device
        .link_device(&wire::LinkDeviceRequest {
            code: code.code,
            registration_id: 4242,
        })
        .await
        .unwrap();
    assert_eq!(linked.user_id, alice.user_id);
    assert_eq!(linked.device_id, 2);
    let devices = alice.client.devices(&alice.user_id).await.unwrap();
    assert_eq!(devices.devices.len(), 2);
    alice.client.remove_device(2).await.unwrap();
    assert_eq!(
        alice
            .client
            .devices(&alice.user_id)
            .await
            .unwrap()
            .devices
            .len(),
        1
    );
    let gone = new_device.with_token(&linked.token);
    assert_eq!(gone.unread().await.unwrap_err().status(), Some(401));
}

#[tokio::test]
async fn usernames() {
    let relay = Relay::start().await;
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;
    let found = alice
        .client
        .lookup_username(&bob.username.to_uppercase())
        .await
        .unwrap();
    assert_eq!(found.user_id, bob.user_id);
    assert_eq!(found.username, bob.username);
    let profile = bob.client.profile(&alice.user_id).await.unwrap();
    assert_eq!(profile.username, alice.username);
    let err = alice
        .client
        .lookup_username("nobody_at_all")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    let err = alice.client.lookup_username("no").await.unwrap_err();
    assert_eq!(err.status(), Some(400));
}
