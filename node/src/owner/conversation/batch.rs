//! Batches: a send is checked and queued; queued sends are numbered from
//! the last committed seq and go to the group-commit writer together, at
//! most one batch at a time; the batch's outcome is the answer to each send
//! (ack and fan-out after the commit, guarantee 2), a fencing reload when
//! another node took a seq (guarantee 5), or a retry message by message when
//! the store refused the batch (one message's fault fails no other).

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use turbochat_protocol::frame::ServerFrame;
use turbochat_protocol::http::MessageView;
use turbochat_protocol::ids::{ConversationId, UserId};
use turbochat_protocol::link::DeliverKind;
use turbochat_store::{AppendError, Appended, ConversationBatch, NewMessage};
use uuid::Uuid;

use super::state::State;
use super::{BatchResult, Inflight, Owner, MAX_RELOADS};
use crate::owner::validate::{check_send, SendDraft};
use crate::owner::SendCommand;
use crate::refusal::Refusal;

impl Owner<'_> {
    /// Checks a send and queues it for the next batch.
    pub(super) async fn accept_send(&mut self, state: &mut State, mut send: SendCommand) {
        #[cfg(feature = "fault-injection")]
        if send.body == "__turbochat_owner_panic__" {
            // Queued first, so the supervisor has a held send to answer.
            state.queued.push(send);
            panic!("injected owner panic (fault-injection build)");
        }
        let draft = SendDraft {
            participant: send.trusted || state.participants.contains_key(&send.user_id),
            trusted: send.trusted,
            client_msg_id: &send.client_msg_id,
            kind: send.kind,
            body: &send.body,
            media_key: send.media_key.as_deref(),
        };
        let mut verdict = check_send(self.id, draft, self.owners.config().max_body_chars);
        if let (Ok(()), Some(key)) = (&verdict, send.media_key.as_deref()) {
            verdict = self.check_upload(key).await;
        }
        if verdict.is_ok() {
            verdict = self.owners.safety().screen_send(self.id, &mut send).await;
        }
        match verdict {
            Ok(()) => state.queued.push(send),
            Err(refusal) => {
                self.backlog.sends.fetch_sub(1, Ordering::AcqRel);
                metrics::counter!("turbochat_sends_refused_total", "code" => refusal.code.as_str())
                    .increment(1);
                send.link
                    .refuse(send.session_id, self.id, &refusal, Some(send.client_msg_id));
            }
        }
    }

    /// A `media_key` must name an upload that really was made to this
    /// conversation (`POST /media` records each one).
    pub(super) async fn check_upload(&self, key: &str) -> Result<(), Refusal> {
        match self.owners.store().media_upload(self.id, key).await? {
            Some(_) => Ok(()),
            None => Err(Refusal::invalid(
                "media_key is not an upload of this conversation; upload it here first",
            )),
        }
    }

    /// Numbers the queued sends from the last committed seq and hands them
    /// to the group-commit writer: all of them, or only the first while a
    /// refused batch is being retried message by message.
    pub(super) fn start_batch(&self, state: &mut State) -> Inflight {
        let sends = if state.isolating > 0 {
            state.isolating -= 1;
            state.queued.drain(..1).collect()
        } else {
            std::mem::take(&mut state.queued)
        };
        self.backlog.sends.fetch_sub(sends.len(), Ordering::AcqRel);
        state.writing = true;
        let created_at = now_ms();
        let push_enabled = self.owners.config().push_enabled;
        let messages = sends
            .iter()
            .map(|send| NewMessage {
                message_id: Uuid::now_v7(),
                sender_id: send.user_id.clone(),
                client_msg_id: send.client_msg_id.clone(),
                kind: send.kind,
                body: send.body.clone(),
                media_key: send.media_key.clone(),
                created_at,
                push_to: if push_enabled {
                    self.offline_recipients(state, &send.user_id)
                } else {
                    Vec::new()
                },
            })
            .collect();
        let batch = ConversationBatch {
            conversation_id: self.id,
            first_seq: state.committed + 1,
            messages,
        };
        state.inflight_sends = Some(sends);
        let writer = self.owners.writer().clone();
        Box::pin(async move { writer.append(batch).await })
    }

    /// Who gets a push for a message from `sender`: every participant but
    /// the sender, not muted, with no live session subscribed to this
    /// conversation. That is the cluster's own knowledge, not a guess:
    /// every router subscribes its sessions at the conversation's single
    /// owner (this task), so `state.links` holds every session in the
    /// cluster that the message will reach. A session behind a router link
    /// that is down counts as gone (its router may be dead): a push too
    /// many beats a missed one.
    pub(super) fn offline_recipients(&self, state: &State, sender: &str) -> Vec<UserId> {
        state
            .participants
            .values()
            .filter(|p| p.user_id != sender && !p.muted && !state.watching(&p.user_id))
            .map(|p| p.user_id.clone())
            .collect()
    }

    pub(super) async fn finish_batch(&mut self, state: &mut State, result: BatchResult) {
        state.writing = false;
        let sends = state.inflight_sends.take().unwrap_or_default();
        match result {
            Ok(Ok(appended)) => {
                state.reloads = 0;
                for (send, outcome) in sends.into_iter().zip(appended) {
                    match outcome {
                        Appended::Inserted(message) if message.seq <= state.committed => {
                            // Cannot happen while catch-ups wait for our
                            // batches; if it does, the message was already
                            // fanned out: ack only.
                            tracing::error!(
                                seq = message.seq,
                                committed = state.committed,
                                "own write already seen as committed"
                            );
                            self.ack(&send, &message);
                        }
                        Appended::Inserted(message) => {
                            state.committed = message.seq;
                            metrics::histogram!("turbochat_send_commit_seconds")
                                .record(send.received_at.elapsed().as_secs_f64());
                            metrics::counter!("turbochat_messages_committed_total").increment(1);
                            self.ack(&send, &message);
                            self.fan_out(state, &message);
                            if state.typing.remove(&message.sender_id).is_some() {
                                self.announce_typing(state, &message.sender_id, false);
                            }
                        }
                        Appended::Duplicate(message) => {
                            metrics::counter!("turbochat_sends_duplicate_total").increment(1);
                            self.ack(&send, &message);
                        }
                    }
                }
            }
            Ok(Err(AppendError::SeqTaken { seq, .. })) => {
                // Another node wrote this conversation: we were not its only
                // writer. Catch up from the store and renumber the batch.
                tracing::warn!(seq, "seq already taken; reloading from the store");
                metrics::counter!("turbochat_owner_fenced_total").increment(1);
                state.reloads += 1;
                if state.reloads > MAX_RELOADS {
                    self.fail_sends(
                        sends,
                        Refusal::unavailable("conversation is moving between nodes; retry"),
                    );
                    return;
                }
                if let Err(err) = self.catch_up(state).await {
                    tracing::error!(%err, "cannot catch up after fencing");
                    self.fail_sends(sends, Refusal::unavailable("store unavailable; retry"));
                    return;
                }
                self.requeue_front(state, sends);
            }
            Ok(Err(refused @ (AppendError::Failed(_) | AppendError::Invalid(_))))
                if sends.len() > 1 =>
            {
                // One message of the batch may be at fault: write them one
                // by one, so only that one fails.
                tracing::warn!(reason = %refused, sends = sends.len(),
                    "batch refused; retrying its messages one by one");
                metrics::counter!("turbochat_batches_isolated_total").increment(1);
                state.isolating = sends.len();
                self.requeue_front(state, sends);
            }
            Ok(Err(refused)) => {
                let refusal = Refusal::from(refused);
                if refusal.code.retryable() {
                    self.fail_sends(sends, refusal);
                } else {
                    metrics::counter!("turbochat_sends_refused_total", "code" => refusal.code.as_str())
                        .increment(sends.len() as u64);
                    self.refuse_sends(sends, &refusal);
                }
            }
            Err(err) => {
                self.fail_sends(sends, Refusal::from(err));
            }
        }
    }

    /// Puts sends back at the head of the queue, in their order.
    pub(super) fn requeue_front(&self, state: &mut State, sends: Vec<SendCommand>) {
        self.backlog.sends.fetch_add(sends.len(), Ordering::AcqRel);
        let mut requeued = sends;
        requeued.append(&mut state.queued);
        state.queued = requeued;
    }

    pub(super) fn refuse_sends(&self, sends: Vec<SendCommand>, refusal: &Refusal) {
        for send in sends {
            send.link
                .refuse(send.session_id, self.id, refusal, Some(send.client_msg_id));
        }
    }

    /// Answers sends that were not stored; the client may retry them.
    pub(super) fn fail_sends(&self, sends: Vec<SendCommand>, refusal: Refusal) {
        metrics::counter!("turbochat_sends_failed_total").increment(sends.len() as u64);
        self.refuse_sends(sends, &refusal);
    }

    pub(super) fn ack(&self, send: &SendCommand, message: &MessageView) {
        let ack = ServerFrame::Ack {
            conversation_id: self.id,
            client_msg_id: message.client_msg_id.clone(),
            seq: message.seq,
            message_id: message.message_id,
            created_at: message.created_at,
        };
        send.link.answer(
            send.session_id,
            self.id,
            message.seq,
            DeliverKind::Ack,
            &ack,
            message.client_msg_id.clone(),
        );
    }
}

/// Sends a queued send back to its router as a redirect.
pub(super) fn redirect_send(conversation: ConversationId, send: SendCommand) {
    use turbochat_protocol::link::{node_frame, router_frame, NodeFrame, Redirect};
    let frame = NodeFrame {
        frame: Some(node_frame::Frame::Redirect(Redirect {
            session_id: send.session_id,
            conversation_id: conversation.to_string(),
            frame: Some(turbochat_protocol::link::RouterFrame {
                redirects: 0,
                frame: Some(router_frame::Frame::Send(turbochat_protocol::link::Send {
                    session_id: send.session_id,
                    user_id: send.user_id,
                    conversation_id: conversation.to_string(),
                    client_msg_id: send.client_msg_id,
                    kind: send.kind.as_str().to_string(),
                    body: send.body,
                    media_key: send.media_key,
                    traceparent: send.traceparent,
                })),
            }),
        })),
    };
    send.link.push(frame);
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
