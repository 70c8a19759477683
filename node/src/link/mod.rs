//! The node's gRPC service: routers attach here.
//!
//! `Attach` turns each router's stream of frames into owner [`Command`]s and
//! sends owners' frames back. The task reading a router's stream remembers
//! which sessions subscribed to what, so that when the stream ends (router
//! gone, link cut) every subscription it made is dropped at the owners.
//! The unary calls serve the router's HTTP API.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codegen::BoxFuture;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use turbochat_protocol::http::{ConversationList, HistoryPage};
use turbochat_protocol::ids::ConversationId;
use turbochat_protocol::link::link_server::Link;
use turbochat_protocol::link::{
    router_frame, CreateConversationRequest, HistoryRequest, JsonReply, ListConversationsRequest,
    ParticipantRequest, RouterFrame, UserEventsReply, UserEventsRequest,
};
use turbochat_protocol::local::{LocalAttach, NodeFrames, RouterFrames};
use turbochat_protocol::ErrorCode;
use turbochat_service::Background;
use turbochat_store::{ConversationState, MediaUpload, Store, StoreError};
use uuid::Uuid;

use crate::fanout::{LinkItem, Outbound, Routers};
use crate::owner::{Command, Owners};
use crate::ownership::Ownership;
use crate::refusal::Refusal;
use crate::user_events::UserEvents;

mod attach;
mod bus_in;
mod create;

use self::attach::AttachReader;
use self::create::validate_create;
pub(crate) use self::create::{members_of, view_for};

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

impl LinkService {
    /// A reader of one router's frames arriving for `link` (stream `number`).
    fn reader(&self, link: crate::fanout::RouterLink, number: u64) -> AttachReader {
        AttachReader {
            events: self.events.clone(),
            home_sessions: HashMap::new(),
            link,
            number,
            routers: self.routers.clone(),
            grace: self.link_grace,
            owners: self.owners.clone(),
            ownership: self.ownership.clone(),
            sessions: HashMap::new(),
        }
    }
}

impl LinkService {
    /// A router attaches: its frames (the first is its hello) are read into
    /// owner commands, and the returned stream carries this node's frames
    /// to it. The same for the gRPC stream and the in-process link.
    async fn attach_frames<S>(&self, mut inbound: S) -> Result<AttachStream, Status>
    where
        S: Stream<Item = Result<RouterFrame, Status>> + Send + Unpin + 'static,
    {
        let (router_id, incarnation) = match inbound.next().await.transpose()? {
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
        let reader = self.reader(link, number);
        let span = tracing::info_span!("attach", router = %router_id);
        let outbound = Outbound::new(rx, &reader.link).take_until(cut.clone().cancelled_owned());
        let shutdown = self.shutdown.clone();
        self.tasks
            .spawn(reader.run(inbound, cut, shutdown).instrument(span));
        Ok(Box::pin(outbound))
    }
}

/// The node's frames to one attached router.
type AttachStream = Pin<Box<dyn Stream<Item = LinkItem> + Send>>;

/// A router in this process attaches without gRPC (the co-located mode).
impl LocalAttach for LinkService {
    fn attach(&self, frames: RouterFrames) -> BoxFuture<NodeFrames, Status> {
        let service = self.clone();
        Box::pin(async move {
            let outbound: NodeFrames = service.attach_frames(frames).await?;
            Ok(outbound)
        })
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
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<Streaming<RouterFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.attach_frames(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let span = rpc_span("history", &request);
        let req = request.into_inner();
        async move {
            let id = parse_conversation(&req.conversation_id)?;
            if self.owners.safety().is_banned(&req.user_id) {
                return Err(crate::safety::banned().into());
            }
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

    async fn get_notification_settings(
        &self,
        request: Request<turbochat_protocol::link::NotificationSettingsRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let req = request.into_inner();
        let settings = self
            .store
            .notification_settings(&req.user_id)
            .await
            .map_err(store_status)?;
        json_reply(&settings)
    }

    async fn set_notification_settings(
        &self,
        request: Request<turbochat_protocol::link::NotificationSettingsRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let req = request.into_inner();
        let settings = crate::push::settings::parse(&req.json)?;
        self.store
            .set_notification_settings(&req.user_id, &settings, crate::safety::service::now_ms())
            .await
            .map_err(store_status)?;
        tracing::info!(user_id = %req.user_id, "notification settings changed");
        json_reply(&settings)
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
            if self.owners.safety().is_banned(&req.user_id) {
                return Err(crate::safety::banned().into());
            }
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

    async fn online(
        &self,
        request: Request<turbochat_protocol::link::OnlineRequest>,
    ) -> Result<Response<turbochat_protocol::link::OnlineReply>, Status> {
        let users = request.into_inner().users;
        let online = users
            .into_iter()
            .filter(|u| self.events.homes().online(u))
            .collect();
        Ok(Response::new(turbochat_protocol::link::OnlineReply {
            online,
        }))
    }

    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<JsonReply>, Status> {
        let span = rpc_span("create_conversation", &request);
        let req = request.into_inner();
        async move {
            let new = validate_create(req)?;
            if self.owners.safety().is_banned(&new.participants[0]) {
                return Err(crate::safety::banned().into());
            }
            if let (turbochat_protocol::http::ConversationKind::Direct, [creator, peer]) =
                (new.kind, new.participants.as_slice())
            {
                // Also for a conversation that exists: answering with it
                // would tell the blocked user nothing new, but creating is
                // how a client (re)opens a chat, and it must say why it cannot.
                self.owners.safety().check_new_direct(creator, peer).await?;
            }
            let state = self
                .store
                .create_conversation(&new)
                .await
                .map_err(store_status)?;
            let creator = &new.participants[0];
            let profiles = members_of(self.store.as_ref(), &state).await;
            let view = view_for(&state, creator, &profiles).ok_or_else(Refusal::no_conversation)?;
            if state.created_at == new.created_at {
                // Newly created: tell every participant's live sessions.
                let events = state
                    .participants
                    .iter()
                    .filter_map(|p| {
                        let view = view_for(&state, &p.user_id, &profiles)?;
                        let frame =
                            turbochat_protocol::ServerFrame::Conversation { conversation: view };
                        Some((p.user_id.clone(), Bytes::from(frame.to_json())))
                    })
                    .collect();
                self.events.publish(events);
            }
            // Typing will follow: know by then whether it may be shown.
            self.owners.safety().learn(&state);
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
