//! User-level events (a new conversation, presence): routed to each user's
//! home node on the ring, which delivers them to the user's live sessions
//! wherever they are connected ([`crate::homes::Homes`]).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use tonic::transport::Channel;
use turbochat_cluster::RingView;
use turbochat_protocol::ids::UserId;
use turbochat_protocol::link::link_client::LinkClient;
use turbochat_protocol::link::{UserEvent, UserEventsRequest};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use turbochat_protocol::http::{clean_avatar_url, clean_display_name};
use turbochat_protocol::ServerFrame;
use turbochat_store::Store;

use crate::fanout::RouterLink;
use crate::homes::Homes;
use crate::peers::Peers;

/// Most contacts told about one presence change.
const MAX_PRESENCE_FAN_OUT: u32 = 1_000;

/// Publishes user-level events to the users' home nodes, and keeps the
/// presence of users homed here.
#[derive(Clone)]
pub struct UserEvents {
    me: String,
    ring: Option<RingView>,
    homes: Homes,
    peers: Peers,
    store: Arc<dyn Store>,
    presence_grace: Duration,
    /// Users whose last session ended, waiting out the grace period.
    going_offline: Arc<DashMap<UserId, CancellationToken>>,
    /// The profile last stored for each online user homed here, so a
    /// reconnect with the same token claims writes nothing.
    profiles: Arc<DashMap<UserId, StoredProfile>>,
    /// Presence timers and deliveries to other nodes, joined on shutdown.
    tasks: TaskTracker,
}

/// A display name and avatar URL as kept.
type StoredProfile = (Option<String>, Option<String>);

impl UserEvents {
    /// With `ring` absent (static routing) every user is homed here.
    pub fn new(
        me: String,
        ring: Option<RingView>,
        store: Arc<dyn Store>,
        peers: Peers,
        presence_grace: Duration,
        tasks: TaskTracker,
    ) -> Self {
        UserEvents {
            tasks,
            me,
            ring,
            homes: Homes::default(),
            peers,
            store,
            presence_grace,
            going_offline: Arc::new(DashMap::new()),
            profiles: Arc::new(DashMap::new()),
        }
    }

    /// A session of `user` (homed here) opened with these `name` and
    /// `picture` claims (empty: absent). A token with neither leaves the
    /// stored profile alone; otherwise what it says is kept (cleaned: see
    /// [`clean_display_name`], [`clean_avatar_url`]) unless it is what was
    /// stored last.
    pub fn profile_seen(&self, user: &str, name: &str, picture: &str) {
        if name.is_empty() && picture.is_empty() {
            return;
        }
        let profile: StoredProfile = (clean_display_name(name), clean_avatar_url(picture));
        if !picture.is_empty() && profile.1.is_none() {
            metrics::counter!("turbochat_profile_pictures_refused_total").increment(1);
            tracing::debug!(user = %user, "picture claim is not an https URL; not kept");
        }
        if self
            .profiles
            .get(user)
            .is_some_and(|known| *known == profile)
        {
            return;
        }
        self.profiles.insert(user.to_string(), profile.clone());
        let store = self.store.clone();
        let known = self.profiles.clone();
        let user = user.to_string();
        self.tasks.spawn(async move {
            let now = crate::safety::service::now_ms();
            match store
                .set_profile(&user, profile.0.as_deref(), profile.1.as_deref(), now)
                .await
            {
                Ok(()) => metrics::counter!("turbochat_profile_updates_total").increment(1),
                Err(err) => {
                    tracing::warn!(%err, user = %user, "cannot store the profile; kept at the next session");
                    // Not known as stored: the next session tries again.
                    known.remove(&user);
                }
            }
        });
    }

    /// A session of a user homed here opened. The user's contacts see them
    /// come online, unless they were only briefly away (within the grace
    /// period: a reconnect does not flicker).
    pub fn session_opened(&self, user: &str, link: &RouterLink, session_id: u64) {
        let was_online = self.homes.online(user);
        self.homes.open(user, link, session_id);
        let returning = match self.going_offline.remove(user) {
            Some((_, pending)) => {
                pending.cancel();
                true
            }
            None => false,
        };
        // One load of the contacts serves both the snapshot and the
        // announcement: a session open is the hottest path here when many
        // clients connect at once.
        let announce = !was_online && !returning;
        let events = self.clone();
        let user = user.to_string();
        self.tasks.spawn(async move {
            let Some(contacts) = events.visible_contacts(&user).await else {
                return;
            };
            if announce {
                events.announce_to(&user, true, contacts.clone());
            }
            events.send_presence_snapshot(&user, contacts).await;
        });
    }

    /// Everyone sharing a conversation with `user`, less those in a block
    /// relation with them (one store statement): who sees the user's
    /// presence, and whose presence the user sees. `None` (logged) when the
    /// store cannot say: presence is a courtesy, a leak is not.
    async fn visible_contacts(&self, user: &str) -> Option<Vec<UserId>> {
        match self.store.contacts(user, MAX_PRESENCE_FAN_OUT).await {
            Ok(contacts) => Some(contacts),
            Err(err) => {
                tracing::warn!(%err, user = %user, "cannot load contacts for presence");
                None
            }
        }
    }

    /// Tells a user's sessions which of their `contacts` are online now (a
    /// `presence` frame each; offline is what a client assumes), so a chat
    /// opened shows the other's state, not only its next change.
    async fn send_presence_snapshot(&self, user: &str, contacts: Vec<UserId>) {
        let online = self.online_of(contacts).await;
        metrics::counter!("turbochat_presence_snapshots_total").increment(1);
        for contact in online {
            let frame = ServerFrame::Presence {
                user_id: contact,
                online: true,
            };
            self.homes.deliver(user, Bytes::from(frame.to_json()));
        }
    }

    /// Those of `users` with a live session: asked of each one's home node
    /// (this node for its own). A home that cannot be asked counts its
    /// users offline.
    async fn online_of(&self, users: Vec<UserId>) -> Vec<UserId> {
        let ring = self.ring.as_ref().map(|r| r.current());
        let mut online = Vec::new();
        let mut remote: HashMap<String, Vec<UserId>> = HashMap::new();
        for user in users {
            let home = ring
                .as_ref()
                .and_then(|r| r.home_of(&user))
                .filter(|node| node.id != self.me);
            match home {
                None if self.homes.online(&user) => online.push(user),
                None => {}
                Some(node) => remote.entry(node.grpc.clone()).or_default().push(user),
            }
        }
        for (grpc, users) in remote {
            let Some(mut client) = self.peer(&grpc) else {
                continue;
            };
            match client
                .online(turbochat_protocol::link::OnlineRequest { users })
                .await
            {
                Ok(reply) => online.extend(reply.into_inner().online),
                Err(status) => {
                    tracing::debug!(%grpc, %status, "cannot ask a home node who is online");
                }
            }
        }
        online
    }

    /// A session of a user homed here closed. When it was the last one, the
    /// user goes offline after the grace period unless a session reopens.
    pub fn session_closed(&self, user: &str, link_id: u64, session_id: u64) {
        self.homes.close(user, link_id, session_id);
        if self.homes.online(user) {
            return;
        }
        let pending = CancellationToken::new();
        if let Some(old) = self.going_offline.insert(user.to_string(), pending.clone()) {
            old.cancel();
        }
        let events = self.clone();
        let user = user.to_string();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(events.presence_grace) => {}
                _ = pending.cancelled() => return,
            }
            let still_pending = events
                .going_offline
                .remove_if(&user, |_, token| !token.is_cancelled())
                .is_some();
            if still_pending && !events.homes.online(&user) {
                events.profiles.remove(&user);
                events.announce_presence(user, false);
            }
        });
    }

    /// Tells the user's contacts (everyone sharing a conversation), except
    /// those the user blocks or who block the user.
    fn announce_presence(&self, user: UserId, online: bool) {
        let events = self.clone();
        self.tasks.spawn(async move {
            if let Some(contacts) = events.visible_contacts(&user).await {
                events.announce_to(&user, online, contacts);
            }
        });
    }

    /// Publishes the user's presence to `contacts`.
    fn announce_to(&self, user: &str, online: bool, contacts: Vec<UserId>) {
        metrics::counter!("turbochat_presence_changes_total", "online" => if online { "true" } else { "false" })
            .increment(1);
        let payload = Bytes::from(
            ServerFrame::Presence {
                user_id: user.to_string(),
                online,
            }
            .to_json(),
        );
        self.publish(contacts.into_iter().map(|c| (c, payload.clone())).collect());
    }

    /// The local registry of users homed here.
    pub fn homes(&self) -> &Homes {
        &self.homes
    }

    /// Delivers each `(user, payload)` to the user's live sessions, through
    /// the user's home node. Never waits: remote homes are called in the
    /// background, and a failure is logged (the client catches up with
    /// `GET /conversations` on its next start).
    pub fn publish(&self, events: Vec<(UserId, Bytes)>) {
        let mut remote: HashMap<String, Vec<UserEvent>> = HashMap::new();
        let ring = self.ring.as_ref().map(|r| r.current());
        for (user, payload) in events {
            let home = ring
                .as_ref()
                .and_then(|r| r.home_of(&user))
                .filter(|node| node.id != self.me);
            match home {
                None => {
                    self.homes.deliver(&user, payload);
                }
                Some(node) => remote
                    .entry(node.grpc.clone())
                    .or_default()
                    .push(UserEvent {
                        user_id: user,
                        payload,
                    }),
            }
        }
        for (grpc, events) in remote {
            let Some(mut client) = self.peer(&grpc) else {
                continue;
            };
            self.tasks.spawn(async move {
                let count = events.len();
                if let Err(status) = client.user_events(UserEventsRequest { events }).await {
                    metrics::counter!("turbochat_user_events_failed_total").increment(count as u64);
                    tracing::warn!(%grpc, %status, "cannot deliver user events to their home node");
                }
            });
        }
    }

    fn peer(&self, grpc: &str) -> Option<LinkClient<Channel>> {
        self.peers.channel(grpc).map(LinkClient::new)
    }
}
