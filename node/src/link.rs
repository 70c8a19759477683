//! The node's gRPC service: routers attach here.
//!
//! `Attach` turns each router's stream of frames into owner [`Command`]s and
//! sends owners' frames back. The task reading a router's stream remembers
//! which sessions subscribed to what, so that when the stream ends (router
//! gone, link cut) every subscription it made is dropped at the owners.
//! The unary calls serve the router's HTTP API.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use turbochat_protocol::http::{ConversationKind, ConversationList, ConversationView, HistoryPage};
use turbochat_protocol::ids::{
    direct_conversation_id, valid_user_id, ConversationId, MAX_GROUP_PARTICIPANTS,
    MAX_LISTING_ID_LEN, MAX_TITLE_CHARS,
};
use turbochat_protocol::link::link_server::Link;
use turbochat_protocol::link::{
    node_frame, router_frame, CreateConversationRequest, HistoryRequest, JsonReply,
    ListConversationsRequest, NodeFrame, ParticipantRequest, Redirect, RouterFrame,
    UserEventsReply, UserEventsRequest,
};
use turbochat_protocol::{ErrorCode, MessageKind};
use turbochat_service::Background;
use turbochat_store::{ConversationState, MediaUpload, NewConversation, Store, StoreError};
use uuid::Uuid;

use crate::owner::{Command, DispatchError, Owners, SendCommand};
use crate::ownership::Ownership;
use crate::refusal::Refusal;
use crate::router_link::{LinkItem, Outbound, RouterLink, Routers};
use crate::user_events::UserEvents;

/// Frames queued per router link before the link counts as lagging and is cut.
pub const LINK_QUEUE: usize = 16 * 1024;
/// Largest `GET /history` page.
pub const MAX_HISTORY_PAGE: u32 = 200;
/// Largest `GET /conversations` page.
pub const MAX_CONVERSATION_PAGE: u32 = 500;

/// The `Link` gRPC service.
#[derive(Clone)]
pub struct LinkService {
    owners: Owners,
    events: UserEvents,
    ownership: Ownership,
    routers: Routers,
    link_grace: Duration,
    store: Arc<dyn Store>,
    /// The routers' stream readers, joined on shutdown.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl LinkService {
    /// Serves routers from `owners` and `store` until `shutdown`.
    pub fn new(
        owners: Owners,
        events: UserEvents,
        ownership: Ownership,
        routers: Routers,
        link_grace: Duration,
        store: Arc<dyn Store>,
        background: Background,
    ) -> Self {
        let Background { tasks, shutdown } = background;
        LinkService {
            tasks,
            owners,
            events,
            ownership,
            routers,
            link_grace,
            store,
            shutdown,
        }
    }
}

fn store_status(err: StoreError) -> Status {
    Refusal::from(err).into()
}

/// A span for one unary call, child of the router's span named in the
/// call's metadata (disabled when tracing is off).
fn rpc_span<T>(method: &'static str, request: &Request<T>) -> tracing::Span {
    if !turbochat_service::telemetry::traces_on() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("rpc", method);
    turbochat_service::telemetry::extract_metadata(&span, request.metadata());
    span
}

fn parse_conversation(id: &str) -> Result<ConversationId, Refusal> {
    Uuid::parse_str(id).map_err(|_| Refusal::invalid("conversation_id is not a UUID"))
}

fn json_reply<T: serde::Serialize>(value: &T) -> Result<Response<JsonReply>, Status> {
    let json = serde_json::to_vec(value)
        .map_err(|e| Status::from(Refusal::new(ErrorCode::Internal, e.to_string())))?;
    Ok(Response::new(JsonReply {
        json: Bytes::from(json),
    }))
}

#[tonic::async_trait]
impl Link for LinkService {
    type AttachStream = Pin<Box<dyn Stream<Item = LinkItem> + Send>>;

    async fn attach(
        &self,
        request: Request<Streaming<RouterFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let (router_id, incarnation) = match inbound.message().await? {
            Some(RouterFrame {
                frame: Some(router_frame::Frame::Hello(hello)),
                ..
            }) if !hello.router_id.is_empty() => (hello.router_id, hello.incarnation),
            _ => return Err(Refusal::invalid("the first frame must be hello").into()),
        };
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let cut = self.shutdown.child_token();
        let (link, number) = self
            .routers
            .attach(&router_id, incarnation, tx, cut.clone());
        tracing::info!(router = %router_id, link = link.id(), "router attached");
        metrics::gauge!("turbochat_link_routers").increment(1.0);
        let reader = AttachReader {
            events: self.events.clone(),
            home_sessions: HashMap::new(),
            link,
            number,
            routers: self.routers.clone(),
            grace: self.link_grace,
            owners: self.owners.clone(),
            ownership: self.ownership.clone(),
            sessions: HashMap::new(),
        };
        let span = tracing::info_span!("attach", router = %router_id);
        let outbound = Outbound::new(rx, &reader.link).take_until(cut.clone().cancelled_owned());
        let shutdown = self.shutdown.clone();
        self.tasks
            .spawn(reader.run(inbound, cut, shutdown).instrument(span));
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let span = rpc_span("history", &request);
        let req = request.into_inner();
        async move {
            let id = parse_conversation(&req.conversation_id)?;
            let state = self.participant_view(id, &req.user_id).await?;
            let limit = match req.limit {
                0 => 50,
                n if n <= MAX_HISTORY_PAGE => n,
                _ => {
                    return Err(
                        Refusal::invalid(format!("limit must be 1 to {MAX_HISTORY_PAGE}")).into(),
                    )
                }
            };
            let messages = self
                .store
                .history(id, req.before_seq, limit)
                .await
                .map_err(store_status)?;
            let next_before_seq = match messages.last() {
                Some(oldest) if messages.len() == limit as usize && oldest.seq > 1 => {
                    Some(oldest.seq)
                }
                _ => None,
            };
            drop(state);
            json_reply(&HistoryPage {
                messages,
                next_before_seq,
            })
        }
        .instrument(span)
        .await
    }

    async fn check_participant(
        &self,
        request: Request<ParticipantRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let req = request.into_inner();
        let id = parse_conversation(&req.conversation_id)?;
        self.participant_view(id, &req.user_id).await?;
        json_reply(&serde_json::json!({"participant": true}))
    }

    async fn register_device(
        &self,
        request: Request<turbochat_protocol::link::RegisterDeviceRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let req = request.into_inner();
        let registered = crate::push::devices::register(
            self.store.as_ref(),
            &req.user_id,
            &req.token,
            &req.platform,
        )
        .await?;
        json_reply(&registered)
    }

    async fn unregister_device(
        &self,
        request: Request<turbochat_protocol::link::UnregisterDeviceRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let req = request.into_inner();
        let unregistered =
            crate::push::devices::unregister(self.store.as_ref(), &req.user_id, &req.token).await?;
        json_reply(&unregistered)
    }

    async fn list_devices(
        &self,
        request: Request<turbochat_protocol::link::ListDevicesRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let req = request.into_inner();
        let devices = crate::push::devices::list(self.store.as_ref(), &req.user_id).await?;
        json_reply(&devices)
    }

    async fn record_media(
        &self,
        request: Request<turbochat_protocol::link::RecordMediaRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let req = request.into_inner();
        let id = parse_conversation(&req.conversation_id)?;
        self.participant_view(id, &req.user_id).await?;
        if !crate::owner::media_key_of(id, &req.media_key) {
            return Err(Refusal::invalid("media_key is not a key of this conversation").into());
        }
        let upload = MediaUpload {
            media_key: req.media_key,
            conversation_id: id,
            uploader_id: req.user_id,
            content_type: req.content_type,
            size: req.size,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        self.store
            .record_media_upload(&upload)
            .await
            .map_err(store_status)?;
        json_reply(&serde_json::json!({"recorded": true}))
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let span = rpc_span("list_conversations", &request);
        let req = request.into_inner();
        async move {
            let limit = match req.limit {
                0 => 100,
                n if n <= MAX_CONVERSATION_PAGE => n,
                _ => {
                    return Err(Refusal::invalid(format!(
                        "limit must be 1 to {MAX_CONVERSATION_PAGE}"
                    ))
                    .into())
                }
            };
            let conversations = self
                .store
                .list_conversations(&req.user_id, limit)
                .await
                .map_err(store_status)?;
            json_reply(&ConversationList { conversations })
        }
        .instrument(span)
        .await
    }

    async fn user_events(
        &self,
        request: Request<UserEventsRequest>,
    ) -> Result<Response<UserEventsReply>, Status> {
        Ok(Response::new(
            self.deliver_user_events(request.into_inner()),
        ))
    }

    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let span = rpc_span("create_conversation", &request);
        let req = request.into_inner();
        async move {
            let new = validate_create(req)?;
            let state = self
                .store
                .create_conversation(&new)
                .await
                .map_err(store_status)?;
            let creator = &new.participants[0];
            let view = view_for(&state, creator).ok_or_else(Refusal::no_conversation)?;
            if state.created_at == new.created_at {
                // Newly created: tell every participant's live sessions.
                let events = state
                    .participants
                    .iter()
                    .filter_map(|p| {
                        let view = view_for(&state, &p.user_id)?;
                        let frame =
                            turbochat_protocol::ServerFrame::Conversation { conversation: view };
                        Some((p.user_id.clone(), Bytes::from(frame.to_json())))
                    })
                    .collect();
                self.events.publish(events);
            }
            // A running owner caches participants; make it re-read them.
            if let Err(err) = self
                .owners
                .dispatch(state.conversation_id, Command::Refresh)
            {
                tracing::debug!(%err, "owner refresh not delivered");
            }
            tracing::info!(conversation_id = %state.conversation_id, kind = state.kind.as_str(),
                participants = state.participants.len(), "conversation created or found");
            json_reply(&view)
        }
        .instrument(span)
        .await
    }
}

impl LinkService {
    /// Delivers events for users homed here (called by other nodes).
    pub fn deliver_user_events(&self, request: UserEventsRequest) -> UserEventsReply {
        let homes = self.events.homes();
        let sessions = request
            .events
            .into_iter()
            .map(|e| homes.deliver(&e.user_id, e.payload))
            .sum::<usize>();
        UserEventsReply {
            sessions: sessions as u32,
        }
    }

    /// Loads a conversation and checks `user` participates in it.
    async fn participant_view(
        &self,
        id: ConversationId,
        user: &str,
    ) -> Result<ConversationState, Status> {
        let state = self
            .store
            .load_conversation(id)
            .await
            .map_err(store_status)?
            .ok_or_else(Refusal::no_conversation)?;
        if !state.participants.iter().any(|p| p.user_id == user) {
            return Err(Refusal::no_conversation().into());
        }
        Ok(state)
    }
}

/// Checks a create request and builds the row to store. The router derives
/// direct ids; the node re-derives them so a bad router cannot split a pair's
/// conversation in two.
fn validate_create(req: CreateConversationRequest) -> Result<NewConversation, Refusal> {
    let id = parse_conversation(&req.conversation_id)?;
    let creator = req.user_id;
    if !valid_user_id(&creator) {
        return Err(Refusal::invalid("invalid user id"));
    }
    if let Some(listing) = &req.listing_id {
        if listing.is_empty() || listing.len() > MAX_LISTING_ID_LEN || has_control(listing) {
            return Err(Refusal::invalid(format!(
                "listing_id must be 1 to {MAX_LISTING_ID_LEN} bytes without control characters"
            )));
        }
    }
    if let Some(title) = &req.title {
        if title.chars().count() > MAX_TITLE_CHARS || has_control(title) {
            return Err(Refusal::invalid(format!(
                "title must be at most {MAX_TITLE_CHARS} characters without control characters"
            )));
        }
    }
    let mut participants = vec![creator.clone()];
    let mut seen: HashSet<String> = HashSet::from([creator.clone()]);
    for user in req.participants {
        if !valid_user_id(&user) {
            return Err(Refusal::invalid(format!("invalid participant {user:?}")));
        }
        if seen.insert(user.clone()) {
            participants.push(user);
        }
    }
    let kind = ConversationKind::parse(&req.kind)
        .ok_or_else(|| Refusal::invalid("kind must be direct or group"))?;
    match kind {
        ConversationKind::Direct => {
            if participants.len() != 2 {
                return Err(Refusal::invalid(
                    "a direct conversation is between you and one other user",
                ));
            }
            let expected = direct_conversation_id(
                &participants[0],
                &participants[1],
                req.listing_id.as_deref(),
            );
            if expected != id {
                return Err(Refusal::invalid(
                    "conversation_id does not match its participants",
                ));
            }
        }
        ConversationKind::Group => {
            if participants.len() < 2 || participants.len() > MAX_GROUP_PARTICIPANTS {
                return Err(Refusal::invalid(format!(
                    "a group has 2 to {MAX_GROUP_PARTICIPANTS} participants"
                )));
            }
        }
    }
    Ok(NewConversation {
        conversation_id: id,
        kind,
        listing_id: req.listing_id,
        title: req.title,
        participants,
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    })
}

/// Control characters (NUL among them, which PostgreSQL cannot store in
/// text) have no place in one-line names.
fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// The conversation as `user` sees it right after creation.
fn view_for(state: &ConversationState, user: &str) -> Option<ConversationView> {
    let me = state.participants.iter().find(|p| p.user_id == user)?;
    Some(ConversationView {
        conversation_id: state.conversation_id,
        kind: state.kind,
        listing_id: state.listing_id.clone(),
        title: state.title.clone(),
        participants: state
            .participants
            .iter()
            .map(|p| p.user_id.clone())
            .collect(),
        created_at: state.created_at,
        last_seq: state.last_seq,
        last_read_seq: me.last_read_seq,
        unread_count: 0,
        last_message: None,
    })
}

/// The session and conversation of a frame that only the owner may take.
fn routed_target(frame: &RouterFrame) -> Option<(u64, ConversationId)> {
    let (session_id, conversation) = match frame.frame.as_ref()? {
        router_frame::Frame::Subscribe(f) => (f.session_id, &f.conversation_id),
        router_frame::Frame::Send(f) => (f.session_id, &f.conversation_id),
        router_frame::Frame::Read(f) => (f.session_id, &f.conversation_id),
        router_frame::Frame::Typing(f) => (f.session_id, &f.conversation_id),
        _ => return None,
    };
    Some((session_id, Uuid::parse_str(conversation).ok()?))
}

/// Reads one router's frames and turns them into owner commands.
struct AttachReader {
    events: UserEvents,
    /// Sessions of this router registered here as their user's home.
    home_sessions: HashMap<u64, String>,
    link: RouterLink,
    number: u64,
    routers: Routers,
    grace: Duration,
    owners: Owners,
    ownership: Ownership,
    /// Which conversations each session of this router subscribed to here.
    sessions: HashMap<u64, HashSet<ConversationId>>,
}

impl AttachReader {
    async fn run(
        mut self,
        mut inbound: Streaming<RouterFrame>,
        cut: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let span =
            tracing::info_span!("attach", router = %self.link.router_id(), link = self.link.id());
        let _enter = span.enter();
        drop(_enter);
        loop {
            tokio::select! {
                frame = inbound.message() => match frame {
                    Ok(Some(frame)) => self.handle(frame),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(router = %self.link.router_id(), %status, "router stream failed");
                        break;
                    }
                },
                _ = cut.cancelled() => break,
            }
        }
        cut.cancel();
        self.routers.detach(&self.link, self.number);
        // Frames in flight on the dead stream are lost from that path:
        // owners re-send their recent tail (over the bus, if any).
        for conversation in self.sessions.values().flatten() {
            let _ = self.owners.dispatch(
                *conversation,
                Command::LinkLost {
                    link_id: self.link.id(),
                },
            );
        }
        metrics::gauge!("turbochat_link_routers").decrement(1.0);
        tracing::info!(router = %self.link.router_id(), link = self.link.id(), "router detached");
        // Keep the router's subscriptions for a grace period: owners keep
        // fanning out (over the bus, if any), and a router that comes back
        // re-subscribes from its cursors. One that stays away is purged.
        tokio::select! {
            _ = tokio::time::sleep(self.grace) => {}
            // Stopping: nothing left to purge for.
            _ = shutdown.cancelled() => return,
        }
        if self.link.is_connected() {
            return;
        }
        for (session_id, user) in self.home_sessions.drain() {
            self.events
                .session_closed(&user, self.link.id(), session_id);
        }
        let mut purged = 0usize;
        for (session_id, conversations) in self.sessions.drain() {
            for conversation in conversations {
                purged += 1;
                let _ = self.owners.dispatch(
                    conversation,
                    Command::Unsubscribe {
                        link_id: self.link.id(),
                        session_id,
                    },
                );
            }
        }
        tracing::info!(router = %self.link.router_id(), purged, "router stayed away; subscriptions purged");
    }

    fn handle(&mut self, frame: RouterFrame) {
        if let Some((session_id, conversation)) = routed_target(&frame) {
            if !self.ownership.owns(&conversation) {
                metrics::counter!("turbochat_node_redirects_total").increment(1);
                self.link.push(NodeFrame {
                    frame: Some(node_frame::Frame::Redirect(Redirect {
                        session_id,
                        conversation_id: conversation.to_string(),
                        frame: Some(frame),
                    })),
                });
                return;
            }
        }
        let Some(frame) = frame.frame else { return };
        match frame {
            router_frame::Frame::Hello(_) => {}
            router_frame::Frame::SessionOpened(opened) => {
                self.events
                    .session_opened(&opened.user_id, &self.link, opened.session_id);
                self.home_sessions.insert(opened.session_id, opened.user_id);
            }
            router_frame::Frame::Subscribe(sub) => {
                let Some(id) = self.conversation(&sub.conversation_id, sub.session_id) else {
                    return;
                };
                self.sessions.entry(sub.session_id).or_default().insert(id);
                self.dispatch(
                    id,
                    sub.session_id,
                    None,
                    Command::Subscribe {
                        link: self.link.clone(),
                        session_id: sub.session_id,
                        user_id: sub.user_id,
                        since: sub.since,
                    },
                );
            }
            router_frame::Frame::Unsubscribe(unsub) => {
                let Some(id) = self.conversation(&unsub.conversation_id, unsub.session_id) else {
                    return;
                };
                if let Some(set) = self.sessions.get_mut(&unsub.session_id) {
                    set.remove(&id);
                }
                self.dispatch(
                    id,
                    unsub.session_id,
                    None,
                    Command::Unsubscribe {
                        link_id: self.link.id(),
                        session_id: unsub.session_id,
                    },
                );
            }
            router_frame::Frame::Send(send) => {
                let Some(id) = self.conversation(&send.conversation_id, send.session_id) else {
                    return;
                };
                let Some(kind) = MessageKind::parse(&send.kind) else {
                    self.link.refuse(
                        send.session_id,
                        id,
                        &Refusal::invalid("kind must be text or media"),
                        Some(send.client_msg_id),
                    );
                    return;
                };
                let client_msg_id = send.client_msg_id.clone();
                let span = if turbochat_service::telemetry::traces_on() {
                    let span = tracing::info_span!("send", conversation_id = %id,
                        client_msg_id = %send.client_msg_id, router = %self.link.router_id());
                    turbochat_service::telemetry::extract(&span, &send.traceparent);
                    span
                } else {
                    tracing::Span::none()
                };
                self.dispatch(
                    id,
                    send.session_id,
                    Some(client_msg_id),
                    Command::Send(SendCommand {
                        link: self.link.clone(),
                        session_id: send.session_id,
                        user_id: send.user_id,
                        client_msg_id: send.client_msg_id,
                        kind,
                        body: send.body,
                        media_key: send.media_key,
                        received_at: Instant::now(),
                        traceparent: send.traceparent,
                        span,
                    }),
                );
            }
            router_frame::Frame::SessionClosed(closed) => {
                if let Some(one) = closed.conversation_id.as_deref() {
                    // The router no longer has this session (it closed while
                    // the link was down): drop just this subscription.
                    if let Some(id) = self.conversation(one, closed.session_id) {
                        if let Some(set) = self.sessions.get_mut(&closed.session_id) {
                            set.remove(&id);
                        }
                        let _ = self.owners.dispatch(
                            id,
                            Command::Unsubscribe {
                                link_id: self.link.id(),
                                session_id: closed.session_id,
                            },
                        );
                    }
                    return;
                }
                if let Some(user) = self.home_sessions.remove(&closed.session_id) {
                    self.events
                        .session_closed(&user, self.link.id(), closed.session_id);
                }
                for id in self.sessions.remove(&closed.session_id).unwrap_or_default() {
                    let _ = self.owners.dispatch(
                        id,
                        Command::Unsubscribe {
                            link_id: self.link.id(),
                            session_id: closed.session_id,
                        },
                    );
                }
            }
            router_frame::Frame::Read(read) => {
                let Some(id) = self.conversation(&read.conversation_id, read.session_id) else {
                    return;
                };
                self.dispatch(
                    id,
                    read.session_id,
                    None,
                    Command::Read {
                        link: self.link.clone(),
                        session_id: read.session_id,
                        user_id: read.user_id,
                        seq: read.seq,
                    },
                );
            }
            router_frame::Frame::Typing(typing) => {
                let Some(id) = self.conversation(&typing.conversation_id, typing.session_id) else {
                    return;
                };
                self.dispatch(
                    id,
                    typing.session_id,
                    None,
                    Command::Typing {
                        link: self.link.clone(),
                        session_id: typing.session_id,
                        user_id: typing.user_id,
                        active: typing.active,
                    },
                );
            }
        }
    }

    fn conversation(&self, id: &str, session_id: u64) -> Option<ConversationId> {
        match Uuid::parse_str(id) {
            Ok(id) => Some(id),
            Err(_) => {
                tracing::warn!(session_id, "router sent a frame with a bad conversation id");
                None
            }
        }
    }

    fn dispatch(
        &self,
        id: ConversationId,
        session_id: u64,
        client_msg_id: Option<String>,
        command: Command,
    ) {
        if let Err(err) = self.owners.dispatch(id, command) {
            let message = match err {
                DispatchError::Overloaded => "conversation is overloaded; retry",
                DispatchError::ShuttingDown => "node is shutting down; retry",
            };
            self.link.refuse(
                session_id,
                id,
                &Refusal::unavailable(message),
                client_msg_id,
            );
        }
    }
}
