//! A session's outgoing queue: bounded, ordered, one reader (the session's
//! write task), many writers (its read task and the node links).
//!
//! Not a tokio channel on purpose: a tokio `mpsc` channel allocates its
//! first 32-slot block and a cache-padded channel header when it is made,
//! ~1.8 KiB per session whether or not a frame ever waits (heaptrack, 10,000
//! idle sessions). Most sessions are idle, and an idle outbox here is a
//! mutex, an empty `VecDeque` (no allocation) and a `Notify`; a burst
//! grows the deque and the memory is given back once it drains.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Why [`Outbox::push`] did not take an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// `capacity` items wait already.
    Full(T),
    /// The reader is gone.
    Closed(T),
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbox<T> {
    queue: Mutex<Queue<T>>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug)]
struct Queue<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A deque that drained with more room than this gives its memory back.
const KEEP_CAPACITY: usize = 4;

impl<T> Outbox<T> {
    /// An empty outbox that holds at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity,
        }
    }

    /// Queues `item` behind what waits, unless the outbox is full or closed.
    pub fn push(&self, item: T) -> Result<(), Refused<T>> {
        let mut queue = self.queue.lock().expect("outbox lock");
        if queue.closed {
            return Err(Refused::Closed(item));
        }
        if queue.items.len() >= self.capacity {
            return Err(Refused::Full(item));
        }
        queue.items.push_back(item);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest item, if one waits.
    pub fn try_pop(&self) -> Option<T> {
        let mut queue = self.queue.lock().expect("outbox lock");
        let item = queue.items.pop_front();
        if queue.items.is_empty() && queue.items.capacity() > KEEP_CAPACITY {
            queue.items = VecDeque::new();
        }
        item
    }

    /// Waits for the oldest item; `None` once the outbox is closed and
    /// empty. For the one reader only.
    pub async fn pop(&self) -> Option<T> {
        loop {
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.queue.lock().expect("outbox lock").closed {
                return None;
            }
            // `notify_one` leaves a permit when the reader is not waiting
            // yet, so a push between the check and here is not missed.
            self.ready.notified().await;
        }
    }

    /// Refuses further pushes; what waits can still be popped.
    pub fn close(&self) {
        self.queue.lock().expect("outbox lock").closed = true;
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn keeps_order_and_refuses_past_capacity() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(1), Ok(()));
        assert_eq!(outbox.push(2), Ok(()));
        assert_eq!(outbox.push(3), Err(Refused::Full(3)));
        assert_eq!(outbox.try_pop(), Some(1));
        assert_eq!(outbox.push(4), Ok(()));
        assert_eq!(outbox.try_pop(), Some(2));
        assert_eq!(outbox.try_pop(), Some(4));
        assert_eq!(outbox.try_pop(), None);
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let outbox = Outbox::new(100);
        for i in 0..50 {
            outbox.push(i).unwrap();
        }
        while outbox.try_pop().is_some() {}
        assert_eq!(outbox.queue.lock().unwrap().items.capacity(), 0);
    }

    #[tokio::test]
    async fn the_reader_wakes_for_a_push_and_ends_after_close() {
        let outbox = Arc::new(Outbox::new(8));
        let reader = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let mut got = Vec::new();
                while let Some(item) = outbox.pop().await {
                    got.push(item);
                }
                got
            }
        });
        for i in 0..5 {
            outbox.push(i).unwrap();
            tokio::task::yield_now().await;
        }
        outbox.close();
        assert_eq!(outbox.push(9), Err(Refused::Closed(9)));
        let got = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the reader ends after close")
            .unwrap();
        assert_eq!(got, [0, 1, 2, 3, 4], "what was queued before close is read");
    }
}
