//! The node's `Safety` gRPC service (`proto/safety.proto`): blocks and
//! reports for the routers' HTTP API, and block-change notices between
//! nodes.

use bytes::Bytes;
use serde::Serialize;
use tonic::{Request, Response, Status};
use turbochat_protocol::ids::valid_user_id;
use turbochat_protocol::safety::safety_server;
use turbochat_protocol::safety::{
    BansChangedRequest, BansReply, BansRequest, BlockRequest, BlocksChangedRequest,
    DeleteMessageRequest, ListBlocksRequest, MembershipRequest, ParticipantsChangedRequest,
    ReportRequest, SafetyReply, SystemMessageRequest,
};
use turbochat_protocol::ErrorCode;
use uuid::Uuid;

use super::reports::ReportDraft;
use super::Safety;
use crate::refusal::Refusal;

/// One entry of `GET /blocks`.
#[derive(Debug, Serialize)]
struct BlockView {
    user_id: String,
    blocked_at: i64,
}

fn reply<T: Serialize>(value: &T) -> Result<Response<SafetyReply>, Status> {
    let json = serde_json::to_vec(value)
        .map_err(|e| Status::from(Refusal::new(ErrorCode::Internal, e.to_string())))?;
    Ok(Response::new(SafetyReply {
        json: Bytes::from(json),
    }))
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn check_target(req: &BlockRequest) -> Result<(), Refusal> {
    if !valid_user_id(&req.target_id) {
        return Err(Refusal::invalid("user_id is not a valid user id"));
    }
    if req.target_id == req.user_id {
        return Err(Refusal::invalid("you cannot block yourself"));
    }
    Ok(())
}

impl Safety {
    /// Stores a block and makes every node forget its copy of the list.
    async fn change_block(&self, req: &BlockRequest, block: bool) -> Result<bool, Refusal> {
        check_target(req)?;
        let changed = if block {
            self.store()
                .block(&req.user_id, &req.target_id, now_ms())
                .await?
        } else {
            self.store().unblock(&req.user_id, &req.target_id).await?
        };
        self.blocks_changed(&req.user_id);
        self.announce_blocks_changed(&req.user_id).await;
        tracing::info!(user_id = %req.user_id, target = %req.target_id, block, changed, "block list changed");
        Ok(changed)
    }
}

#[tonic::async_trait]
impl safety_server::Safety for Safety {
    async fn block(&self, request: Request<BlockRequest>) -> Result<Response<SafetyReply>, Status> {
        let req = request.into_inner();
        if self.is_banned(&req.user_id) {
            return Err(super::banned().into());
        }
        self.change_block(&req, true).await?;
        metrics::counter!("turbochat_blocks_total").increment(1);
        reply(&serde_json::json!({"user_id": req.target_id, "blocked": true}))
    }

    async fn unblock(
        &self,
        request: Request<BlockRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        let req = request.into_inner();
        let existed = self.change_block(&req, false).await?;
        reply(&serde_json::json!({"user_id": req.target_id, "blocked": false, "existed": existed}))
    }

    async fn list_blocks(
        &self,
        request: Request<ListBlocksRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        let req = request.into_inner();
        let blocks: Vec<BlockView> = self
            .store()
            .blocks_of(&req.user_id)
            .await
            .map_err(Refusal::from)?
            .into_iter()
            .map(|b| BlockView {
                user_id: b.blocked_id,
                blocked_at: b.created_at,
            })
            .collect();
        reply(&serde_json::json!({ "blocks": blocks }))
    }

    async fn blocks_changed(
        &self,
        request: Request<BlocksChangedRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        self.blocks_changed(&request.into_inner().user_id);
        reply(&serde_json::json!({}))
    }

    async fn bans_changed(
        &self,
        _request: Request<BansChangedRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        self.reload_bans().await.map_err(Refusal::from)?;
        reply(&serde_json::json!({}))
    }

    async fn bans(&self, request: Request<BansRequest>) -> Result<Response<BansReply>, Status> {
        let (version, users) = self.ban_snapshot();
        if version == 0 {
            return Err(Refusal::unavailable("the ban list is not loaded yet").into());
        }
        let changed = request.into_inner().version != version;
        Ok(Response::new(BansReply {
            version,
            changed,
            users: if changed {
                users.iter().cloned().collect()
            } else {
                Vec::new()
            },
        }))
    }

    async fn post_system_message(
        &self,
        request: Request<SystemMessageRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        let req = request.into_inner();
        let conversation = Uuid::parse_str(&req.conversation_id)
            .map_err(|_| Refusal::invalid("conversation_id is not a UUID"))?;
        let ack = self
            .post_system_here(conversation, req.client_msg_id, req.body)
            .await?;
        reply(&ack)
    }

    async fn delete_message(
        &self,
        request: Request<DeleteMessageRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        let req = request.into_inner();
        let conversation = Uuid::parse_str(&req.conversation_id)
            .map_err(|_| Refusal::invalid("conversation_id is not a UUID"))?;
        let deleter = super::Deleter::from_request(&req)?;
        let answer = self
            .delete_message_here(conversation, req.seq, deleter)
            .await?;
        reply(&answer)
    }

    async fn membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        let req = request.into_inner();
        let conversation = Uuid::parse_str(&req.conversation_id)
            .map_err(|_| Refusal::invalid("conversation_id is not a UUID"))?;
        let change = super::MembershipChange::from_request(&req)?;
        let answer = self
            .change_membership(conversation, &req.user_id, change)
            .await?;
        reply(&answer)
    }

    async fn participants_changed(
        &self,
        request: Request<ParticipantsChangedRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        let conversation = Uuid::parse_str(&request.into_inner().conversation_id)
            .map_err(|_| Refusal::invalid("conversation_id is not a UUID"))?;
        self.tell_owner(conversation, crate::owner::Command::Refresh);
        reply(&serde_json::json!({}))
    }

    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<SafetyReply>, Status> {
        let req = request.into_inner();
        if self.is_banned(&req.user_id) {
            return Err(super::banned().into());
        }
        let conversation = req
            .conversation_id
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| Refusal::invalid("conversation_id is not a UUID"))?;
        let filed = self
            .file_report(ReportDraft {
                reporter: req.user_id,
                conversation,
                seq: req.seq,
                target: req.target_id,
                reason: req.reason,
                note: req.note,
            })
            .await?;
        reply(&filed)
    }
}
