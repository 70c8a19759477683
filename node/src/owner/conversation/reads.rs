//! Read cursors: moved in memory at once and told to every session, written
//! to the store coalesced (one write per flush interval, forward-only in SQL).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;
use turbochat_protocol::frame::ServerFrame;
use turbochat_protocol::ids::{ConversationId, Seq, UserId};

use super::state::State;
use super::Owner;
use crate::fanout::RouterLink;
use crate::refusal::Refusal;

impl Owner<'_> {
    pub(super) async fn read(
        &mut self,
        state: &mut State,
        link: RouterLink,
        session_id: u64,
        user_id: UserId,
        seq: Seq,
    ) {
        let seq = seq.min(state.committed);
        let Some(participant) = state.participants.get_mut(&user_id) else {
            link.refuse(session_id, self.id, &Refusal::no_conversation(), None);
            return;
        };
        if seq <= participant.last_read_seq {
            return;
        }
        // Move the cursor now, write it with the next flush: a client
        // scrolling fast costs one write per flush interval, not per read.
        participant.last_read_seq = seq;
        state.unflushed_reads.insert(user_id.clone(), seq);
        if state.flush_at.is_none() {
            state.flush_at = Some(Instant::now() + self.owners.config().read_flush_interval);
        }
        let frame = ServerFrame::Read {
            conversation_id: self.id,
            user_id,
            seq,
        };
        self.broadcast(state, &frame, None);
    }

    /// Writes pending read cursors now (before the owner stops).
    pub(super) async fn flush_reads(&self, state: &mut State) {
        state.flush_at = None;
        let reads = std::mem::take(&mut state.unflushed_reads);
        write_reads(self.owners.store().clone(), self.id, reads).await;
    }
}

/// Writes read cursors (forward-only in SQL); failures are logged and
/// counted: the cursor is in memory and re-sent by clients on their next read.
pub(super) async fn write_reads(
    store: Arc<dyn turbochat_store::Store>,
    conversation: ConversationId,
    reads: HashMap<UserId, Seq>,
) {
    for (user, seq) in reads {
        metrics::counter!("turbochat_read_cursor_writes_total").increment(1);
        if let Err(err) = store.mark_read(conversation, &user, seq).await {
            metrics::counter!("turbochat_read_cursor_errors_total").increment(1);
            tracing::warn!(%err, %conversation, user = %user, "cannot store read cursor");
        }
    }
}
