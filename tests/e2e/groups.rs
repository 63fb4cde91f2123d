//! Groups against the real relay: invitations, admin-announced rosters, Sender Keys, removal
//! with rotation, a linked device, and nothing readable in the relay's database.

use sotto_client::{ClientEvent, ConversationId, Event, GroupOpError, SendTextError};
use sotto_e2e::{contains_plaintext, Db};

use crate::both;
use crate::common::{link, relay, user, Device};

fn group_texts(d: &Device, group: &str) -> Vec<String> {
    d.events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Event(Event::Message(m))
                if m.conversation == ConversationId::Group(group.to_owned()) =>
            {
                m.text.clone()
            }
            _ => None,
        })
        .collect()
}

async fn wait_group_text(d: &mut Device, group: &str, text: &str) {
    let (g, t) = (group.to_owned(), text.to_owned());
    d.wait(30, &format!("group text {text:?}"), move |ev| {
        ev.iter().any(|e| matches!(e, ClientEvent::Event(Event::Message(m))
            if m.conversation == ConversationId::Group(g.clone()) && m.text.as_deref() == Some(t.as_str())))
    })
    .await;
}

async fn wait_roster(d: &mut Device, group: &str, members: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while d
        .client
        .group(group)
        .is_none_or(|g| g.members.len() != members)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "roster never arrived"
        );
        if let Ok(Some(e)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), d.client.next_event()).await
        {
            d.events.push(e);
        }
    }
}

async fn groups_create_invite_chat_remove_rotate(db: Db) {
    let relay = relay(db).await;
    let mut alice = user(&relay, "alice").await;
    let mut laptop = link(&relay, &alice).await;
    let mut bob = user(&relay, "bob").await;
    let mut carol = user(&relay, "carol").await;
    let (a, b, c) = (alice.id(), bob.id(), carol.id());

    // Bob wrote to Alice before, so her add makes him a member at once; Carol never did, so
    // she gets an invitation first.
    bob.client.send_text(&a, "hi").await.unwrap();
    alice.wait_texts(1).await;

    // Bad input is refused before anything reaches the relay.
    assert!(matches!(
        alice
            .client
            .create_group(std::slice::from_ref(&b), "")
            .await,
        Err(GroupOpError::InvalidName)
    ));
    assert!(matches!(
        alice
            .client
            .create_group(std::slice::from_ref(&a), "x")
            .await,
        Err(GroupOpError::InvalidMembers)
    ));
    assert!(matches!(
        alice
            .client
            .create_group(&["no-such-user".into()], "x")
            .await,
        Err(GroupOpError::UnknownUser)
    ));

    let g = alice
        .client
        .create_group(&[b.clone(), c.clone()], "Book club")
        .await
        .unwrap();
    carol
        .wait(30, "the invitation", |ev| {
            ev.iter()
                .any(|e| matches!(e, ClientEvent::Event(Event::GroupInvitation { .. })))
        })
        .await;
    carol.client.accept_group_invitation(&g).await.unwrap();
    for d in [&mut bob, &mut carol, &mut laptop] {
        wait_roster(d, &g, 3).await;
        let info = d.client.group(&g).unwrap();
        assert_eq!(info.name, "Book club");
        assert!(info.members.iter().any(|m| m.user_id == a && m.admin));
    }

    // A group of three chats, both ways; the linked laptop sees all of it.
    alice
        .client
        .send_group_text(&g, "first book: Dune")
        .await
        .unwrap();
    wait_group_text(&mut bob, &g, "first book: Dune").await;
    wait_group_text(&mut carol, &g, "first book: Dune").await;
    wait_group_text(&mut laptop, &g, "first book: Dune").await;
    bob.client.send_group_text(&g, "great pick").await.unwrap();
    wait_group_text(&mut alice, &g, "great pick").await;
    wait_group_text(&mut carol, &g, "great pick").await;
    wait_group_text(&mut laptop, &g, "great pick").await;

    // An attachment to the group: uploaded encrypted once, its key in one Sender-Key message.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("minutes.txt");
    let minutes = b"minutes of the first meeting: we read Dune".repeat(3000);
    std::fs::write(&src, &minutes).unwrap();
    alice
        .client
        .send_group_attachment(&g, &src, "text/plain")
        .await
        .unwrap();
    let gid = g.clone();
    carol
        .wait(30, "the group attachment", move |ev| {
            ev.iter().any(|e| {
                matches!(e, ClientEvent::Event(Event::Message(m))
                if m.conversation == ConversationId::Group(gid.clone()) && m.attachment.is_some())
            })
        })
        .await;
    let pointer = carol
        .events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Event(Event::Message(m)) => m.attachment.clone(),
            _ => None,
        })
        .unwrap();
    let dest = dir.path().join("received.txt");
    carol
        .client
        .download_attachment(&pointer, &dest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), minutes);

    // Only admins remove; the admin removes Carol; what follows is closed to her.
    assert!(matches!(
        bob.client.remove_group_member(&g, &c).await,
        Err(GroupOpError::NotAdmin)
    ));
    alice.client.remove_group_member(&g, &c).await.unwrap();
    wait_roster(&mut bob, &g, 2).await;
    bob.client.send_group_text(&g, "after carol").await.unwrap();
    wait_group_text(&mut alice, &g, "after carol").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    while let Some(e) = carol.client.try_next_event().await {
        carol.events.push(e);
    }
    assert!(!group_texts(&carol, &g).contains(&"after carol".to_string()));
    assert!(!carol.client.group(&g).unwrap().active);
    assert!(matches!(
        carol.client.send_group_text(&g, "let me in").await,
        Err(SendTextError::InvalidRecipient)
    ));

    // The relay's database holds none of the texts, nor the group's name.
    let dump = relay.dump().await.unwrap();
    for secret in ["first book: Dune", "great pick", "after carol", "Book club"] {
        assert!(
            !contains_plaintext(&dump, secret),
            "{secret} in the relay's database"
        );
    }
    relay.finish().await;
}
both!(groups_create_invite_chat_remove_rotate);

async fn a_device_linked_later_reads_the_group_after_one_message(db: Db) {
    let relay = relay(db).await;
    let mut alice = user(&relay, "alice").await;
    let mut bob = user(&relay, "bob").await;
    let b = bob.id();
    alice.client.send_text(&b, "hi").await.unwrap();
    bob.wait_texts(1).await;
    bob.client.send_text(&alice.id(), "hi back").await.unwrap();
    alice.wait_texts(1).await;
    let g = alice
        .client
        .create_group(std::slice::from_ref(&b), "Late device")
        .await
        .unwrap();
    wait_roster(&mut bob, &g, 2).await;
    alice
        .client
        .send_group_text(&g, "before the tablet")
        .await
        .unwrap();
    wait_group_text(&mut bob, &g, "before the tablet").await;

    // Bob links a tablet; nobody writes to Bob's account after that.
    let mut tablet = link(&relay, &bob).await;
    // Alice's next group message: the tablet cannot open it and asks for what it lacks.
    alice
        .client
        .send_group_text(&g, "the tablet misses this one")
        .await
        .unwrap();
    wait_group_text(&mut bob, &g, "the tablet misses this one").await;
    wait_roster(&mut tablet, &g, 2).await;
    tablet
        .wait(30, "the undecryptable message", |ev| {
            ev.iter()
                .any(|e| matches!(e, ClientEvent::Event(Event::DecryptionFailed { .. })))
        })
        .await;
    // The request is accepted by the relay, reaches Alice, and her answer goes out before her
    // next group message (group sends wait for the keys queued before them).
    tablet.client.idle().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    alice.client.idle().await;
    alice
        .client
        .send_group_text(&g, "welcome, tablet")
        .await
        .unwrap();
    wait_group_text(&mut tablet, &g, "welcome, tablet").await;
    assert!(!group_texts(&tablet, &g).contains(&"before the tablet".to_string()));
    alice.close().await;
    bob.close().await;
    tablet.close().await;
    relay.finish().await;
}
both!(a_device_linked_later_reads_the_group_after_one_message);

async fn description_and_avatar_reach_members_and_not_the_relay(db: Db) {
    let relay = relay(db).await;
    let alice = user(&relay, "alice").await;
    let mut bob = user(&relay, "bob").await;
    let b = bob.id();
    alice.client.send_text(&b, "hi").await.unwrap();
    bob.wait_texts(1).await;
    bob.client.send_text(&alice.id(), "hi back").await.unwrap();
    let g = alice
        .client
        .create_group(std::slice::from_ref(&b), "Choir")
        .await
        .unwrap();
    wait_roster(&mut bob, &g, 2).await;
    let description = "rehearsals on thursdays, bring the sheet music";
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("choir.png");
    let marker = b"SOTTO-AVATAR-PLAINTEXT-MARKER";
    let mut bytes = Vec::new();
    while bytes.len() < 200_000 {
        bytes.extend_from_slice(marker);
    }
    std::fs::write(&image, &bytes).unwrap();
    assert!(matches!(
        bob.client.set_group_description(&g, "mine").await,
        Err(GroupOpError::NotAdmin)
    ));
    assert!(matches!(
        alice
            .client
            .set_group_avatar(&g, Some((image.as_path(), "text/plain")))
            .await,
        Err(GroupOpError::InvalidAvatar)
    ));
    alice
        .client
        .set_group_description(&g, description)
        .await
        .unwrap();
    alice
        .client
        .set_group_avatar(&g, Some((image.as_path(), "image/png")))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while bob.client.group(&g).is_none_or(|i| i.avatar.is_none()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "avatar never arrived"
        );
        if let Ok(Some(e)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            bob.client.next_event(),
        )
        .await
        {
            bob.events.push(e);
        }
    }
    assert_eq!(bob.client.group(&g).unwrap().description, description);
    let dest = dir.path().join("got.png");
    let n = bob.client.download_group_avatar(&g, &dest).await.unwrap();
    assert_eq!(n, Some(bytes.len() as u64));
    assert!(std::fs::read(&dest).unwrap() == bytes);
    let dump = relay.dump().await.unwrap();
    for secret in [description, "SOTTO-AVATAR-PLAINTEXT-MARKER", "Choir"] {
        assert!(
            !contains_plaintext(&dump, secret),
            "{secret:?} in the relay"
        );
    }
    alice.close().await;
    bob.close().await;
    relay.finish().await;
}
both!(description_and_avatar_reach_members_and_not_the_relay);
